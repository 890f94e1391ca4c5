"""programmed_ports on kube-proxy's real rules: the per-Service view the expected-vs-actual comparison uses."""

from __future__ import annotations

import json
import re

import pytest

from agent.checks.programmed_iptables import programmed_ports
from agent.collect.iptables_parse import parse_text
from agent.kube_hash import endpoint_chain
from agent.model.iptables import IptablesState
from agent.model.programmed import ProgrammedPort
from tests.testbed import FIXTURES

IPT = FIXTURES / "iptables"
SAVED = sorted(p.name for p in IPT.glob("*-save.rules"))


def ports_of(text: str) -> dict[str, ProgrammedPort]:
    st = IptablesState(backend="nft", backend_reason="test", rulesets=[parse_text(text)])
    return {p.service: p for p in programmed_ports(st)}


def view(p: ProgrammedPort) -> set[tuple[str, str, str]]:
    return {(d.kind, d.address, d.action) for d in p.dispatch}


def test_overall_fixture_per_service() -> None:
    ports = ports_of((IPT / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text())
    assert sorted(ports) == [f"ns{i}/svc{i}:p80" for i in range(1, 7)]
    assert view(ports["ns1/svc1:p80"]) == {("cluster_ip", "172.30.0.41:80", "service")}
    assert view(ports["ns2/svc2:p80"]) == {
        ("cluster_ip", "172.30.0.42:80", "service"), ("external_ip", "192.168.99.22:80", "service"),
        ("load_balancer_ip", "1.2.3.4:80", "service"), ("node_port", ":3001", "service"),
        # externalTrafficPolicy Local with no local endpoint: outside traffic is dropped
        ("external_ip", "192.168.99.22:80", "drop"), ("load_balancer_ip", "1.2.3.4:80", "drop"),
        ("node_port", ":3001", "drop"), ("health_check_node_port", ":30000", "accept")}
    assert view(ports["ns5/svc5:p80"]) == {("cluster_ip", "172.30.0.45:80", "service"),
                                           ("load_balancer_ip", "5.6.7.8:80", "service"),
                                           # loadBalancerSourceRanges: the others are dropped
                                           ("load_balancer_ip", "5.6.7.8:80", "firewall"),
                                           ("node_port", ":3002", "service")}
    assert ports["ns5/svc5:p80"].allowed_sources == ["203.0.113.0/25"]
    assert ports["ns2/svc2:p80"].localhost_node_ports == [":3001"]
    assert view(ports["ns6/svc6:p80"]) == {("cluster_ip", "172.30.0.46:80", "reject")}
    assert sorted(ports["ns4/svc4:p80"].endpoints) == ["10.180.0.4:80", "10.180.0.5:80"]
    assert ports["ns5/svc5:p80"].affinity_seconds == 10800
    assert ports["ns1/svc1:p80"].affinity_seconds is None
    assert ports["ns6/svc6:p80"].endpoints == []
    assert all(p.protocol == "tcp" and p.family == 4 for p in ports.values())


def test_local_policy_endpoints_come_from_the_svl_chain() -> None:
    name = "v1.28_TestTerminatingEndpointsTrafficPolicyLocal_ready_endpoints_exist.nft-save.rules"
    p = ports_of((IPT / name).read_text())["ns1/svc1"]  # an unnamed port: "ns/name"
    assert sorted(p.endpoints) == ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"]
    assert sorted(p.local_endpoints or []) == ["10.0.1.1:80", "10.0.1.2:80"]
    assert p.evidence["svl_chain"] == "KUBE-SVL-AQI2S6QIMU7PVVRP"


@pytest.mark.parametrize("name", SAVED)
def test_endpoints_agree_with_the_fixture_and_with_chain_hashes(name: str) -> None:
    text = (IPT / name).read_text()
    ports = ports_of(text)
    fixture = json.loads((IPT / (name.split(".")[0] + "." + name.split(".")[1] + ".json")).read_text()) \
        if "after_09" not in name else None
    for p in ports.values():
        for ep in p.endpoints:  # the KUBE-SEP chain name is the hash of (service port, protocol, endpoint)
            assert endpoint_chain(p.service, p.protocol, ep) in text
    if fixture is not None:
        served = {(e["service"] + (":" + e["portName"] if e["portName"] else ""), f"{e['ip']}:{e['port']}")
                  for e in fixture["endpoints"]}
        programmed = {(p.service, ep) for p in ports.values() for ep in p.endpoints}
        assert programmed <= served


def test_without_per_endpoint_comments_the_view_is_the_same() -> None:
    """kube-proxy drops the per-endpoint comments above 1,000 endpoints: the view must not depend on them."""
    text = (IPT / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text()
    bare = re.sub(r'-m comment --comment "ns\d/svc\d:p80(?: -> [0-9.:]+)?" (?!-m tcp --dport)', "", text)
    assert bare.count("--comment") < text.count("--comment")
    assert ports_of(bare) == ports_of(text)


def test_the_benchmarks_partial_sync_moved_back_gives_the_rules_it_began_with() -> None:
    """bench/bench_iptables.py alternates a partial sync and its way back: each must be a real change that
    the checks find sound, and the way back must restore every chain's rules."""
    from agent.checks import iptables_services
    from agent.checks.iptables_names import learn_names
    from bench.gen_iptables import changed_endpoints, generate
    from tests.rulesets import apply_partial

    base = apply_partial("".join(generate(300, 3)), "")
    there = apply_partial(base, "".join(changed_endpoints(300, 3, every=100)))
    back = apply_partial(there, "".join(changed_endpoints(300, 3, every=100, back=True)))
    nat = [parse_text(text).table("nat") for text in (base, there, back)]
    assert nat[1].endpoint_dnat != nat[0].endpoint_dnat and nat[1].ladders != nat[0].ladders
    assert (nat[2].endpoint_dnat, nat[2].ladders, sorted(nat[2].chains)) == \
        (nat[0].endpoint_dnat, nat[0].ladders, sorted(nat[0].chains))
    rs = parse_text(there)
    assert {f.id for f in iptables_services.findings_of(rs, learn_names(rs))} == {"iptables.service_has_no_endpoints"}
