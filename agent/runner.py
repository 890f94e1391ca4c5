"""collect -> snapshot -> derive -> check: runs the collectors under deadlines, derives the shared views
once, runs the checks over both, and hands back one immutable Report.

A collector runs in its own daemon thread and is given `timeout_s`; if it has not returned by then
the run goes on without it (its source records the timeout). Python cannot kill a thread, so a hung
collector is remembered and not started again until it returns: a stuck read costs one thread, not
one thread per interval. Subprocesses inside collectors have their own timeouts and are killed.
The Runner owns its collectors' readers: whatever a reader remembers between reads is the runner's.

Rule differences must persist: a rules.* finding (or one whose catalogue entry says `persist`, such as
IPVS mode's iptables rules against the ipsets) is reported only when the same difference (id,
subject, evidence less the catalogue's `persist_context` keys) was also found by the previous run, so
one snapshot taken mid-sync never pages anyone. `check(snap, previous)` takes the previous run's
differences (`Report.rule_differences`); `previous=None` is a single run (`svcdoctor check`, `check
--from`): every difference is reported.
`run_once` (what `serve` calls) passes its own last run's; its first run has none, so reports none.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.catalogue import finding
from agent.catalogue import load as load_catalogue
from agent.checks import CHECKS, CheckFunc
from agent.checks.derive import derive
from agent.collect import COLLECTORS, Collector
from agent.collect.base import Absent, CollectContext, FailedRead
from agent.collect.cluster import ClusterProvider
from agent.config import Config
from agent.model import CheckSettings, Finding, Snapshot, Source
from agent.model.report import DiffKey, Report
from agent.model.views import Views

__all__ = ["Report", "Runner"]

log = logging.getLogger("svcdoctor.runner")
SOURCE_FIELDS = frozenset(name for name, f in Snapshot.__dataclass_fields__.items() if str(f.type).startswith("Source"))


def _outcome(src: Source[Any]) -> str:
    """What `-v` says of a source: read, absent (and why: the checks that need it are skipped), or failed."""
    if not src.ok:
        return f"failed ({src.error}); checks that need it are skipped"
    if src.absent:
        return f"absent ({src.note or 'not there'}); checks that need it are skipped"
    return "read"


@dataclass
class _Call:
    thread: threading.Thread
    started: float
    result: list[Any] = field(default_factory=list)  # [("ok", data)] | [("absent", msg)] | [("error", msg)]


class Runner:
    def __init__(self, cfg: Config, collectors: tuple[Collector, ...] = COLLECTORS,
                 checks: tuple[CheckFunc, ...] = CHECKS, cluster: ClusterProvider | None = None,
                 kube_proxy_configmap: Any = None) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.kube_proxy_configmap = kube_proxy_configmap  # kube-proxy's config through the API, or None
        self.collectors = collectors
        self.checks = checks
        self._hung: dict[str, _Call] = {}
        self._readers: dict[str, Callable[[CollectContext], Any]] = {c.name: c.make() for c in collectors}
        # Between runs the runner keeps no Report (its snapshot holds a whole read of the rules): only the
        # last run's rules.* differences (run_once's `previous`) and its views (what derive() may take over)
        self._differences: frozenset[DiffKey] | None = None
        self._views: Views | None = None

    # collection --------------------------------------------------------------------------------------
    def _start(self, col: Collector, ctx: CollectContext) -> _Call:
        call = _Call(thread=threading.Thread(target=lambda: None), started=time.monotonic())

        def target() -> None:
            try:
                call.result.append(("ok", self._readers[col.name](ctx)))
            except Absent as exc:
                call.result.append(("absent", str(exc)))
            except FailedRead as exc:
                call.result.append(("failed", (str(exc), exc.detail)))
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
        elif kind == "failed":
            src.error, src.detail = value
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
                                 kubelet=ctx_base.kubelet, cluster=self.cluster,
                                 kube_proxy_configmap=self.kube_proxy_configmap)
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
        for name, src in sorted(sources.items()):
            log.debug("source %s: %s (%.2fs)", name, _outcome(src), src.duration_s)
        fields: dict[str, Any] = dict(sources)  # one keyword per Source field of the Snapshot
        return Snapshot(node=self.cfg.node_name, taken_at=taken_at, agent_version=__version__,
                        settings=CheckSettings(grace_s=self.cfg.grace_s), **fields)

    # checking ----------------------------------------------------------------------------------------
    def check(self, snap: Snapshot, previous: frozenset[DiffKey] | None = None) -> Report:
        """Derive the views, run every check, keep the persisting differences (rules.* and `persist` ids)
        also in `previous` (all of them when it is None: a single run)."""
        t0 = time.monotonic()
        found: list[Finding] = []
        views = self._views = derive(snap, self._views)
        for fn in self.checks:
            try:
                found.extend(fn(snap, views))
            except Exception as exc:  # a buggy check must not hide the others' findings
                found.append(finding("agent.check_failed", f"{fn.__module__}.{fn.__name__}",
                                     evidence={"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc(limit=3)}))
        catalogue = load_catalogue()
        differences = frozenset(_key(f, catalogue[f.id].persist_context) for f in found if catalogue[f.id].persist)
        if previous is not None:
            found = [f for f in found
                     if not catalogue[f.id].persist or _key(f, catalogue[f.id].persist_context) in previous]
        overrides = self.cfg.severity_overrides
        if overrides:
            found = [Finding(**{**vars(f), "severity": overrides.get(f.id, f.severity)}) for f in found]
        found.sort(key=Finding.sort_key)
        return Report(snapshot=snap, findings=tuple(found), proxy_mode=views.mode.mode, generated_at=time.time(),
                      check_duration_s=time.monotonic() - t0, views=views, rule_differences=differences)

    def run_once(self) -> Report:
        """One run of a series (`serve`): rule differences must also be in this runner's previous run."""
        report = self.check(self.collect(), self._differences or frozenset())
        self._differences = report.rule_differences
        return report


def _key(f: Finding, context: tuple[str, ...] = ()) -> DiffKey:
    """The difference a finding states: its id, subject and evidence, less the evidence that only describes
    the moment (the catalogue's `persist_context`)."""
    evidence = {k: v for k, v in f.evidence.items() if k not in context} if context else f.evidence
    return (f.id, f.subject, json.dumps(evidence, sort_keys=True, default=str))
