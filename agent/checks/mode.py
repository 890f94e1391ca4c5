"""The one place that decides kube-proxy's proxy mode, and the findings about it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.settings import REMOVED_MODES, kube_proxy_settings


@dataclass(frozen=True)
class ModeDecision:
    mode: str | None  # None: kube-proxy not seen, nothing to decide from
    source: str
    version: str | None


def decide_mode(snap: Snapshot) -> ModeDecision:
    http = snap.kube_proxy_http.data
    version = http.version if http else None
    proc = snap.kube_proxy.data
    if proc is None:
        if http is not None and http.proxy_mode:
            return ModeDecision(http.proxy_mode, "kube-proxy /proxyMode", version)
        return ModeDecision(None, "kube-proxy not found", version)
    mode = kube_proxy_settings(proc).mode
    return ModeDecision(str(mode.value), mode.source, version)


def check(snap: Snapshot) -> Iterator[Finding]:
    decision = decide_mode(snap)
    if decision.mode is None:
        return
    evidence = {"mode": decision.mode, "source": decision.source, "version": decision.version or "unknown"}
    if decision.mode in REMOVED_MODES:
        yield finding("kube_proxy.mode_unsupported", snap.node, evidence=evidence)
    else:
        yield finding("kube_proxy.mode", snap.node, evidence=evidence)
