"""When the iptables checks apply, and what the detected kube-proxy writes (shared by iptables_*.py)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.mode import decide_mode
from agent.model import Snapshot
from agent.model.iptables import IptablesState
from agent.settings import parse_version

CURRENT = (1, 99)  # an unknown kube-proxy version is judged as a current one


@dataclass(frozen=True)
class Scope:
    state: IptablesState
    kube_proxy_iptables: bool  # kube-proxy runs in iptables mode: its chains must be there
    version: tuple[int, int]
    version_text: str


def scope(snap: Snapshot) -> Scope | None:
    """None when there is nothing to judge: the read failed (agent.source_failed says so) or iptables
    is absent on this node."""
    src = snap.iptables
    if not src.ok or src.data is None:
        return None
    decision = decide_mode(snap)
    running = snap.kube_proxy.ok and snap.kube_proxy.data is not None
    version = parse_version(decision.version)
    return Scope(state=src.data, kube_proxy_iptables=running and decision.mode == "iptables",
                 version=version or CURRENT, version_text=decision.version or "(version unknown)")
