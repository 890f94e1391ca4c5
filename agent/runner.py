"""collect -> snapshot -> check: runs the collectors under deadlines and the checks over the result.

A collector runs in its own daemon thread and is given `timeout_s`; if it has not returned by then
the run goes on without it (its source records the timeout). Python cannot kill a thread, so a hung
collector is remembered and not started again until it returns: a stuck read costs one thread, not
one thread per interval. Subprocesses inside collectors have their own timeouts and are killed.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.catalogue import finding
from agent.checks import CHECKS, CheckFunc
from agent.checks.mode import decide_mode
from agent.collect import COLLECTORS, Collector
from agent.collect.base import Absent, CollectContext
from agent.collect.cluster import ClusterProvider
from agent.config import Config
from agent.model import CheckSettings, Finding, Snapshot, Source

SOURCE_FIELDS = frozenset(name for name, f in Snapshot.__dataclass_fields__.items() if str(f.type).startswith("Source"))


@dataclass(frozen=True)
class Report:
    """One immutable result: what the reporters render. Replaced whole, never mutated."""

    snapshot: Snapshot
    findings: tuple[Finding, ...]
    proxy_mode: str | None
    generated_at: float
    check_duration_s: float = 0.0


@dataclass
class _Call:
    thread: threading.Thread
    started: float
    result: list[Any] = field(default_factory=list)  # [("ok", data)] | [("absent", msg)] | [("error", msg)]


class Runner:
    def __init__(self, cfg: Config, collectors: tuple[Collector, ...] = COLLECTORS,
                 checks: tuple[CheckFunc, ...] = CHECKS, cluster: ClusterProvider | None = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.collectors = tuple(c.for_runner() for c in collectors)  # this runner's own readers
        self.checks = checks
        self._hung: dict[str, _Call] = {}

    # collection --------------------------------------------------------------------------------------
    def _start(self, col: Collector, ctx: CollectContext) -> _Call:
        call = _Call(thread=threading.Thread(target=lambda: None), started=time.monotonic())

        def target() -> None:
            try:
                call.result.append(("ok", col.func(ctx)))
            except Absent as exc:
                call.result.append(("absent", str(exc)))
            except PermissionError as exc:
                call.result.append(("error", f"permission denied: {exc.filename or exc}"))
            except Exception as exc:  # a collector must never take the agent down
                call.result.append(("error", f"{type(exc).__name__}: {exc}"))

        call.thread = threading.Thread(target=target, name=f"collect-{col.name}", daemon=True)
        call.thread.start()
        return call

    def _finish(self, col: Collector, call: _Call, timeout_s: float) -> Source[Any]:
        call.thread.join(max(0.0, call.started + timeout_s - time.monotonic()))
        src: Source[Any] = Source(name=col.name, duration_s=round(time.monotonic() - call.started, 6))
        if call.thread.is_alive():
            self._hung[col.name] = call
            src.error = f"timed out after {timeout_s:g}s"
            return src
        self._hung.pop(col.name, None)
        kind, value = call.result[0]
        if kind == "ok":
            src.ok, src.data = True, value
        elif kind == "absent":
            src.ok, src.absent, src.note = True, True, value
        else:
            src.error = value
        return src

    def _run_phase(self, phase: int, ctx_base: CollectContext) -> dict[str, Source[Any]]:
        started: list[tuple[Collector, _Call | None, float]] = []
        for col in (c for c in self.collectors if c.phase == phase):
            timeout = col.timeout_s or self.cfg.source_timeout_s
            hung = self._hung.get(col.name)
            if hung is not None and hung.thread.is_alive():
                started.append((col, None, time.monotonic() - hung.started))
                continue
            ctx = CollectContext(cfg=self.cfg, deadline_s=timeout, kube_proxy=ctx_base.kube_proxy,
                                 kubelet=ctx_base.kubelet, cluster=self.cluster)
            started.append((col, self._start(col, ctx), timeout))
        out: dict[str, Source[Any]] = {}
        for col, call, value in started:
            if call is None:
                out[col.name] = Source(name=col.name, error=f"previous read still hung after {value:.0f}s")
            else:
                out[col.name] = self._finish(col, call, value)
        return out

    def collect(self) -> Snapshot:
        taken_at = time.time()
        sources = self._run_phase(1, CollectContext(cfg=self.cfg, deadline_s=0))
        kp, kl = sources.get("kube_proxy"), sources.get("kubelet")
        ctx = CollectContext(cfg=self.cfg, deadline_s=0, kube_proxy=kp.data if kp else None,
                             kubelet=kl.data if kl else None)
        sources.update(self._run_phase(2, ctx))
        for name in SOURCE_FIELDS - sources.keys():  # a runner with a subset of collectors (tests, replays)
            sources[name] = Source(name=name, ok=True, absent=True, note="not collected by this runner")
        return Snapshot(node=self.cfg.node_name, taken_at=taken_at, agent_version=__version__,
                        settings=CheckSettings(grace_s=self.cfg.grace_s), **sources)

    # checking ----------------------------------------------------------------------------------------
    def check(self, snap: Snapshot) -> Report:
        t0 = time.monotonic()
        found: list[Finding] = []
        for fn in self.checks:
            try:
                found.extend(fn(snap))
            except Exception as exc:  # a buggy check must not hide the others' findings
                found.append(finding("agent.check_failed", f"{fn.__module__}.{fn.__name__}",
                                     evidence={"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc(limit=3)}))
        overrides = self.cfg.severity_overrides
        if overrides:
            found = [Finding(**{**vars(f), "severity": overrides.get(f.id, f.severity)}) for f in found]
        found.sort(key=Finding.sort_key)
        return Report(snapshot=snap, findings=tuple(found), proxy_mode=decide_mode(snap).mode,
                      generated_at=time.time(), check_duration_s=time.monotonic() - t0)

    def run_once(self) -> Report:
        return self.check(self.collect())
