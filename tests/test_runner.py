"""The runner turns every collector failure into a recorded source error, never a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.collect import COLLECTORS, Collector
from agent.collect.base import Absent, CollectContext
from agent.config import Config
from agent.model import Finding, Snapshot, Sysctls
from agent.runner import Runner
from tests.snapshots import healthy


def _sysctl_off(ctx: CollectContext) -> Sysctls:
    return Sysctls(values={"net/ipv4/ip_forward": "0"})


def _raises(ctx: CollectContext) -> Any:
    raise RuntimeError("parser exploded")


def _denied(ctx: CollectContext) -> Any:
    raise PermissionError(13, "Permission denied", "/proc/1/ns/net")


def _absent(ctx: CollectContext) -> Any:
    raise Absent("no such thing here")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()  # let the "hung" collector threads finish after the test


def _runner(*extra: Collector, timeout: float = 5.0) -> Runner:
    return Runner(Config(node_name="n1", source_timeout_s=timeout),
                  collectors=(Collector("sysctl", _sysctl_off), *extra))


def test_raising_collector_is_source_failed_and_others_still_report() -> None:
    report = _runner(Collector("conntrack", _raises)).run_once()
    failed = {(f.id, f.subject, f.evidence["error"]) for f in report.findings if f.id == "agent.source_failed"}
    assert ("agent.source_failed", "conntrack", "RuntimeError: parser exploded") in failed
    assert "node.ip_forward_disabled" in {f.id for f in report.findings}


def test_permission_denied_is_source_failed_naming_the_file() -> None:
    report = _runner(Collector("kube_proxy", _denied, phase=1)).run_once()
    (f,) = [f for f in report.findings if f.id == "agent.source_failed" and f.subject == "kube_proxy"]
    assert "permission denied" in f.evidence["error"] and "/proc/1/ns/net" in f.evidence["error"]
    assert "kube_proxy.not_running" not in {f.id for f in report.findings}  # a failed read is not "not running"
    assert "node.ip_forward_disabled" in {f.id for f in report.findings}


def test_hung_collector_times_out_and_is_not_restarted_while_hung(release: threading.Event) -> None:
    starts: list[int] = []

    def hangs(ctx: CollectContext) -> Any:
        starts.append(1)
        release.wait(30)
        raise RuntimeError("released")

    runner = _runner(Collector("links", hangs, timeout_s=0.2))
    first = runner.run_once()
    (f,) = [f for f in first.findings if f.id == "agent.source_failed" and f.subject == "links"]
    assert f.evidence["error"] == "timed out after 0.2s"
    assert "node.ip_forward_disabled" in {f.id for f in first.findings}
    second = runner.run_once()
    (g,) = [f for f in second.findings if f.id == "agent.source_failed" and f.subject == "links"]
    assert g.evidence["error"].startswith("previous read still hung")
    assert len(starts) == 1


def test_absent_source_is_ok_and_not_a_failure() -> None:
    snap = _runner(Collector("kube_proxy", _absent, phase=1)).collect()
    assert (snap.kube_proxy.ok, snap.kube_proxy.absent, snap.kube_proxy.note) == (True, True, "no such thing here")


def test_crashing_check_is_reported_and_other_checks_still_run() -> None:
    def bad_check(snap: Snapshot, views: object) -> Iterator[Finding]:
        raise ValueError("bug")
        yield  # pragma: no cover

    from agent.checks import CHECKS

    report = Runner(Config(node_name="n1"), collectors=(), checks=(bad_check, *CHECKS)).check(
        healthy(kubelet=healthy().kubelet))
    (f,) = [f for f in report.findings if f.id == "agent.check_failed"]
    assert f.evidence["error"] == "ValueError: bug" and f.subject.endswith("bad_check")
    assert "kube_proxy.mode" in {f.id for f in report.findings}


def test_severity_override_regrades_by_id() -> None:
    runner = Runner(Config(node_name="n1", severity_overrides={"node.ip_forward_disabled": "info"}),
                    collectors=(Collector("sysctl", _sysctl_off),))
    (f,) = [f for f in runner.run_once().findings if f.id == "node.ip_forward_disabled"]
    assert f.severity == "info"


def test_every_snapshot_source_has_a_collector() -> None:
    names = {c.name for c in COLLECTORS}
    fields = {s.name for s in healthy().sources()}
    assert fields - names == set(), "a Snapshot source nobody collects"
    assert names - fields == set(), "a collector whose name is not a Snapshot field"
