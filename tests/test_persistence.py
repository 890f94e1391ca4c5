"""Rule differences must persist over two runs (part of the run: agent/runner.py), and serve's
programming lag is observed once per change."""

from __future__ import annotations

import dataclasses

from agent.catalogue import finding
from agent.checks.derive import derive
from agent.config import Config
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState, EndpointSpec, NodeSpec, ServicePortSpec, ServiceSpec, SlicePort, SliceSpec
from agent.model.views import Views
from agent.persistence import LagTracker
from agent.runner import Report, Runner
from tests.snapshots import NOW, healthy


def _report(*findings: Finding, cluster: ClusterState | None = None, at: float = NOW) -> Report:
    snap = healthy(cluster=cluster) if cluster else healthy()
    snap.taken_at = at
    return Report(snapshot=snap, findings=tuple(findings), proxy_mode="iptables", generated_at=at, views=derive(snap))


MISSING = finding("rules.endpoint_missing", "ns1/svc1:p80", service="ns1/svc1:p80",
                  evidence={"mode": "iptables", "chain": "KUBE-SVC-X", "endpoint": "10.0.0.1:80", "actual": []})
FORWARD = finding("node.ip_forward_disabled", "n", evidence={"file": "f", "value": "0"})


def _runner(*found: Finding) -> Runner:
    """A runner whose only check finds `found`."""
    def check(snap: Snapshot, views: Views) -> tuple[Finding, ...]:
        return found

    return Runner(Config(node_name="n"), collectors=(), checks=(check,))


def test_rules_finding_needs_two_consecutive_checks() -> None:
    first = _runner(MISSING, FORWARD).check(healthy(), previous=frozenset())
    assert first.findings == (FORWARD,)  # node findings are never held back
    assert _runner(MISSING, FORWARD).check(healthy(), first.rule_differences).findings == (FORWARD, MISSING)


def test_a_single_run_reports_every_difference() -> None:
    assert _runner(MISSING, FORWARD).check(healthy()).findings == (FORWARD, MISSING)


def test_a_difference_that_disappears_is_never_reported() -> None:
    first = _runner(MISSING).check(healthy(), frozenset())
    second = _runner().check(healthy(), first.rule_differences)
    assert second.findings == ()
    assert _runner(MISSING).check(healthy(), second.rule_differences).findings == ()


def test_a_changed_difference_starts_over() -> None:
    first = _runner(MISSING).check(healthy(), frozenset())
    other = dataclasses.replace(MISSING, evidence={**MISSING.evidence, "endpoint": "10.0.0.2:80"})
    assert _runner(other).check(healthy(), first.rule_differences).findings == ()


IPVS_RULE = finding("ipvs.iptables_rule_missing", "nat/KUBE-SERVICES/KUBE-CLUSTER-IP", evidence={
    "table": "nat", "chain": "KUBE-SERVICES", "family": 4,
    "rule": "-m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
    "set": "KUBE-CLUSTER-IP", "set_members": 1, "effect": "none"})


def test_ipvs_rules_against_ipsets_must_persist_too() -> None:
    """The ipsets and iptables are read at different instants: a sync between them shows a set's rule
    missing for one read, so IPVS mode's rule findings wait for a second run like rules.* ones."""
    assert _runner(IPVS_RULE).check(healthy(), frozenset()).findings == ()
    first = _runner(IPVS_RULE).check(healthy(), frozenset())
    assert _runner(IPVS_RULE).check(healthy(), first.rule_differences).findings == (IPVS_RULE,)


def test_ipvs_rule_still_missing_is_reported_when_its_set_and_chain_changed_meanwhile() -> None:
    """A set's member count and the chain's current rules describe the moment, not the missing rule: on a busy
    cluster they change every run, and must not hold the finding back for ever."""
    first = _runner(IPVS_RULE).check(healthy(), frozenset())
    later = dataclasses.replace(IPVS_RULE, evidence={**IPVS_RULE.evidence, "set_members": 7, "rules": ["-A X"]})
    assert _runner(later).check(healthy(), first.rule_differences).findings == (later,)
    other_rule = dataclasses.replace(IPVS_RULE, evidence={**IPVS_RULE.evidence, "rule": "-m set -j RETURN"})
    assert _runner(other_rule).check(healthy(), first.rule_differences).findings == ()


def _cluster(change: float) -> ClusterState:
    return ClusterState(origin="t", fetched_at=change, node=NodeSpec("test-node"), services=[ServiceSpec(
        "ns1", "svc1", "ClusterIP", cluster_ips=["172.30.0.41"], ports=[ServicePortSpec("p80", "TCP", 80)])],
        slices=[SliceSpec("ns1", "svc1-a", "svc1", "IPv4", ports=[SlicePort("p80", 80, "TCP")],
                          endpoints=[EndpointSpec("10.0.0.1")], last_change=change)])


def test_lag_observed_when_rules_first_match_after_a_change() -> None:
    lag = LagTracker()
    lag.observe(_report(MISSING, cluster=_cluster(NOW - 40), at=NOW))  # out of sync: not yet
    assert lag.count == 0
    lag.observe(_report(cluster=_cluster(NOW - 40), at=NOW + 30))  # in sync 70 s after the change
    lag.observe(_report(cluster=_cluster(NOW - 40), at=NOW + 60))  # same change: not counted again
    buckets, total = lag.snapshot()
    assert (lag.count, total) == (1, 70.0)
    assert dict(buckets)["60.0"] == 0 and dict(buckets)["120.0"] == 1 and dict(buckets)["+Inf"] == 1
