"""iptables metrics from a Report: rule counts per backend and table, programmed Service ports and endpoints,
and the backend label of svcdoctor_kube_proxy_info."""

from __future__ import annotations

from agent.checks.derive import derive
from agent.collect.iptables_parse import parse_text
from agent.model.iptables import IptablesState
from agent.report import metrics, metrics_iptables
from agent.runner import Report
from tests.snapshots import failed, healthy
from tests.testbed import FIXTURES

OVERALL = (FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.nft-save.rules").read_text()


def samples(report: Report, fams: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert callable(fams)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in fams(report) for s in fam.samples}


def report_of(snap: object) -> Report:
    return Report(snapshot=snap, findings=(), proxy_mode="iptables", generated_at=0.0,  # type: ignore[arg-type]
                  views=derive(snap))  # type: ignore[arg-type]


def test_rules_ports_and_endpoints() -> None:
    rs = parse_text(OVERALL)
    report = report_of(healthy(iptables=IptablesState(backend="nft", backend_reason="test", rulesets=[rs])))
    got = samples(report, metrics_iptables.families)
    assert got[("svcdoctor_iptables_rules", (("backend", "nft"), ("table", "nat")))] == rs.table("nat").rule_count
    assert got[("svcdoctor_iptables_rules", (("backend", "nft"), ("table", "filter")))] == 10
    assert got[("svcdoctor_iptables_service_ports", ())] == 6  # ns1..ns6, ns6 rejected for no endpoints
    assert got[("svcdoctor_iptables_endpoints", ())] == 6  # svc4 has two, svc6 none
    info = samples(report, metrics.node_families)
    assert next(k for k in info if k[0] == "svcdoctor_kube_proxy_info")[1][0] == ("backend", "nft")


def test_no_iptables_series_when_the_read_failed() -> None:
    assert samples(report_of(healthy(iptables=failed("iptables"))), metrics_iptables.families) == {}
