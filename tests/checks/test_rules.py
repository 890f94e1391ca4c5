"""The expected-vs-actual comparison, mode-independent: each fault gives exactly its finding.

The programmed side here is built from the expected side (a node whose rules match the API) and then
broken one way per test; the same faults on real rule sets loaded into a netns are in
tests/integration/test_rules_iptables.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agent.checks.expected import ExpectedPort, expected_ports
from agent.checks.rules import compare
from agent.kubeobjects import state_from_items
from agent.model.programmed import (
    DROP,
    FIREWALL,
    LOAD_BALANCER_IP,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ProgrammedPort,
    ProgrammedServices,
)
from tests.testbed import FIXTURES

OVERALL = FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.cluster.json"
NODE = "test-node"


def cluster_items() -> list[dict[str, Any]]:
    return list(json.loads(OVERALL.read_text())["items"])


def expected(items: list[dict[str, Any]] | None = None) -> list[ExpectedPort]:
    return expected_ports(state_from_items(items or cluster_items(), NODE, "t", 0), NODE)


def matching_view(exp: list[ExpectedPort]) -> ProgrammedServices:
    """What a node whose rules match the API looks like in the mode-independent view."""
    return ProgrammedServices("iptables", [ProgrammedPort(
        e.service, e.protocol, e.family,
        dispatch=[Dispatch(k, a, act, f"rule for {a}") for (k, a), act in e.dispatch.items()]
        # traffic policy Local without a local endpoint: the dispatch node-local clients take beside the DROP
        + [Dispatch(k, a, TO_SERVICE, f"nat rule for {a}") for k, a in e.short_circuit]
        # loadBalancerSourceRanges: the drop of the other sources
        + [Dispatch(k, a, FIREWALL, f"firewall for {a}") for (k, a), act in e.dispatch.items()
           if k == LOAD_BALANCER_IP and act == TO_SERVICE and e.source_ranges],
        endpoints=sorted(e.cluster_endpoints or ()),
        local_endpoints=sorted(e.local_endpoints) if e.local_endpoints else None,
        allowed_sources=list(e.source_ranges) if e.source_ranges else None,
        evidence={"cluster": f"KUBE-SVC-{e.name}"}) for e in exp])


def found(exp: list[ExpectedPort], view: ProgrammedServices) -> set[tuple[str, str]]:
    return {(f.id, f.service or f.subject) for f in compare(exp, view)}


def port(view: ProgrammedServices, service: str) -> ProgrammedPort:
    return next(p for p in view.ports if p.service == service)


def test_matching_rules_give_no_findings() -> None:
    exp = expected()
    assert found(exp, matching_view(exp)) == set()


def test_missing_cluster_ip_dispatch_is_service_missing() -> None:
    exp = expected()
    view = matching_view(exp)
    p = port(view, "ns1/svc1:p80")
    p.dispatch = [d for d in p.dispatch if d.kind != "cluster_ip"]
    assert found(exp, view) == {("rules.service_missing", "ns1/svc1:p80")}


def test_dropped_endpoint_is_endpoint_missing() -> None:
    exp = expected()
    view = matching_view(exp)
    port(view, "ns4/svc4:p80").endpoints.remove("10.180.0.5:80")
    (f,) = compare(exp, view)
    assert (f.id, f.service, f.evidence["endpoint"]) == ("rules.endpoint_missing", "ns4/svc4:p80", "10.180.0.5:80")
    assert f.evidence["chain"] == "KUBE-SVC-svc4"


def test_endpoint_only_in_the_api_is_endpoint_missing() -> None:
    items = cluster_items()
    view = matching_view(expected(items))
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc1"))
    sl["endpoints"].append({"addresses": ["10.180.0.9"]})
    assert found(expected(items), view) == {("rules.endpoint_missing", "ns1/svc1:p80")}


def test_deleted_service_leaves_service_stale() -> None:
    items = cluster_items()
    view = matching_view(expected(items))
    items = [i for i in items if not (i["kind"] == "Service" and i["metadata"]["name"] == "svc3")]
    assert found(expected(items), view) == {("rules.service_stale", "ns3/svc3:p80")}


def test_changed_endpoint_port_is_port_mismatch_not_missing_plus_stale() -> None:
    items = cluster_items()
    view = matching_view(expected(items))
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc1"))
    sl["ports"][0]["port"] = 8080
    (f,) = compare(expected(items), view)
    assert (f.id, f.evidence["endpoint"], f.evidence["programmed"]) == (
        "rules.endpoint_port_mismatch", "10.180.0.1:8080", "10.180.0.1:80")


def test_reject_while_endpoints_exist_is_reject_stale() -> None:
    exp = expected()
    view = matching_view(exp)
    p = port(view, "ns1/svc1:p80")
    p.dispatch = [Dispatch(d.kind, d.address, REJECT, "has no endpoints") for d in p.dispatch]
    p.endpoints = []
    assert found(exp, view) == {("rules.reject_stale", "ns1/svc1:p80")}


def test_missing_reject_is_reject_missing() -> None:
    exp = expected()
    view = matching_view(exp)
    port(view, "ns6/svc6:p80").dispatch = []
    assert found(exp, view) == {("rules.reject_missing", "ns6/svc6:p80")}


def test_not_ready_endpoint_still_programmed_is_endpoint_stale() -> None:
    items = cluster_items()
    view = matching_view(expected(items))
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc4"))
    sl["endpoints"][1]["conditions"] = {"ready": False}
    (f,) = compare(expected(items), view)
    assert (f.id, f.service, f.evidence["endpoint"]) == ("rules.endpoint_stale", "ns4/svc4:p80", "10.180.0.5:80")


def test_topology_filtered_subset_is_accepted_but_foreign_endpoint_is_not() -> None:
    items = copy.deepcopy(cluster_items())
    svc4 = next(i for i in items if i["kind"] == "Service" and i["metadata"]["name"] == "svc4")
    svc4["spec"]["trafficDistribution"] = "PreferClose"
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc4"))
    for e, zone in zip(sl["endpoints"], ("zone-a", "zone-b"), strict=True):
        e["hints"] = {"forZones": [{"name": zone}]}
    exp = expected(items)
    view = matching_view(exp)
    port(view, "ns4/svc4:p80").endpoints = ["10.180.0.4:80"]  # only this node's zone
    assert found(exp, view) == set()
    port(view, "ns4/svc4:p80").endpoints = ["10.180.0.4:80", "10.99.0.1:80"]
    assert found(exp, view) == {("rules.endpoint_stale", "ns4/svc4:p80")}


def test_families_not_read_are_not_judged() -> None:
    exp = expected()
    view = matching_view(exp)
    view.families = [6]
    assert found(exp, view) == set()


@pytest.mark.parametrize("settle", [True, False])
def test_grace_suppresses_settling_ports(settle: bool) -> None:
    exp = expected()
    view = matching_view(exp)
    port(view, "ns1/svc1:p80").endpoints = []
    got = {(f.id, f.service) for f in compare(exp, view, lambda e: settle and e.service == "ns1/svc1:p80")}
    assert got == (set() if settle else {("rules.endpoint_missing", "ns1/svc1:p80")})


@pytest.mark.parametrize("drop_first", [True, False])
def test_a_drop_shadowing_a_working_dispatch_is_reject_stale_in_any_listing_order(drop_first: bool) -> None:
    exp = expected()
    view = matching_view(exp)
    p = port(view, "ns4/svc4:p80")  # eTP=Cluster with endpoints: its external IP must go to the Service
    drop = Dispatch("external_ip", "192.168.99.33:80", DROP, "has no local endpoints")
    p.dispatch = [drop, *p.dispatch] if drop_first else [*p.dispatch, drop]
    assert found(exp, view) == {("rules.reject_stale", "ns4/svc4:p80")}


def test_dispatch_action_constants_are_the_contract() -> None:
    assert (TO_SERVICE, REJECT) == ("service", "reject")


# dual-stack: one Service, two families, each judged on its own -----------------------------------------------
DUAL = FIXTURES.parent / "kube-proxy-dualstack" / "dualstack-iptables.cluster.json"


def dual_expected() -> list[ExpectedPort]:
    items = json.loads(DUAL.read_text())["items"]
    return expected_ports(state_from_items(items, "test-hostname", "t", 0), "test-hostname")


def dual_view(exp: list[ExpectedPort]) -> ProgrammedServices:
    view = matching_view(exp)
    view.families = [4, 6]
    return view


def test_a_dual_stack_service_is_expected_once_per_family_with_that_familys_endpoints() -> None:
    exp = dual_expected()
    assert {(e.service, e.family) for e in exp} == {("ns1/svc1:p80", 4), ("ns1/svc1:p80", 6)}
    by_family = {e.family: e for e in exp}
    assert by_family[4].cluster_endpoints == {"10.244.0.1:80", "10.244.2.1:80"}
    assert by_family[6].cluster_endpoints == {"[ff06::c1]:80", "[ff06::c2]:80"}
    assert list(compare(exp, dual_view(exp))) == []


@pytest.mark.parametrize("family", [4, 6])
def test_a_fault_in_one_family_is_reported_for_that_family_only(family: int) -> None:
    exp = dual_expected()
    view = dual_view(exp)
    broken = next(p for p in view.ports if p.family == family)
    broken.dispatch = [d for d in broken.dispatch if d.kind != "cluster_ip"]
    (f,) = compare(exp, view)
    assert (f.id, f.service, f.evidence["family"]) == ("rules.service_missing", "ns1/svc1:p80", family)
    assert f.evidence["address"] == ("10.69.0.10:80" if family == 4 else "[fd00:ab34::20]:80")


def test_a_family_the_node_does_not_serve_is_judged_neither_way() -> None:
    exp = dual_expected()
    view = dual_view(exp)
    view.ports = [p for p in view.ports if p.family == 4] + [ProgrammedPort("ns9/gone:p80", "TCP", 6)]
    assert list(compare(exp, view, served=frozenset({4}))) == []
    # the same rules on a node that has an IPv6 address: the IPv6 half is missing, the leftover stale
    assert {(f.id, f.service, f.evidence["family"]) for f in compare(exp, view, served=frozenset({4, 6}))} == {
        ("rules.service_missing", "ns1/svc1:p80", 6), ("rules.service_stale", "ns9/gone:p80", 6)}
