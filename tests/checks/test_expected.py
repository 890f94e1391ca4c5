"""The expected side of the comparison follows kube-proxy's own endpoint rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.checks.expected import ExpectedPort, expected_ports
from agent.kubeobjects import parse_ip_sloppy, state_from_items
from tests.testbed import FIXTURES

NODE = "test-node"


def svc(name: str = "svc1", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "ClusterIP", "clusterIP": "172.30.0.41", "clusterIPs": ["172.30.0.41"],
                            "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 80}]}
    base.update(spec)
    return {"kind": "Service", "metadata": {"namespace": "ns1", "name": name}, "spec": base, "status": {}}


def eps(*endpoints: dict[str, Any], service: str = "svc1", port: int = 80, family: str = "IPv4") -> dict[str, Any]:
    return {"kind": "EndpointSlice", "metadata": {"namespace": "ns1", "name": f"{service}-{family}",
                                                  "labels": {"kubernetes.io/service-name": service}},
            "addressType": family, "ports": [{"name": "p80", "port": port, "protocol": "TCP"}],
            "endpoints": list(endpoints)}


def ep(ip: str, *, ready: bool | None = None, serving: bool | None = None, terminating: bool | None = None,
       node: str | None = None) -> dict[str, Any]:
    cond = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating)) if v is not None}
    out: dict[str, Any] = {"addresses": [ip], "conditions": cond}
    if node:
        out["nodeName"] = node
    return out


def one(*items: dict[str, Any]) -> ExpectedPort:
    (port,) = expected_ports(state_from_items(list(items), NODE, "test", 0), NODE)
    return port


def test_ready_endpoints_are_used() -> None:
    e = one(svc(), eps(ep("10.0.0.1"), ep("10.0.0.2", ready=False)))
    assert e.cluster_endpoints == {"10.0.0.1:80"}
    assert e.dispatch == {("cluster_ip", "172.30.0.41:80"): "service"}
    assert e.service == "ns1/svc1:p80" and e.protocol == "tcp"


def test_serving_terminating_endpoints_only_when_none_is_ready() -> None:
    e = one(svc(), eps(ep("10.0.0.1", ready=False, serving=True, terminating=True),
                       ep("10.0.0.2", ready=False, serving=False, terminating=True)))
    assert e.cluster_endpoints == {"10.0.0.1:80"}
    e = one(svc(), eps(ep("10.0.0.1", ready=False, serving=True, terminating=True), ep("10.0.0.3")))
    assert e.cluster_endpoints == {"10.0.0.3:80"}


def test_no_endpoints_rejects() -> None:
    e = one(svc(), eps(ep("10.0.0.1", ready=False)))
    assert e.dispatch == {("cluster_ip", "172.30.0.41:80"): "reject"}
    assert e.cluster_endpoints == set()


def test_external_policy_local_without_local_endpoints_drops_external_traffic() -> None:
    e = one(svc(type="NodePort", externalTrafficPolicy="Local",
                ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}]),
            eps(ep("10.0.0.1", node="other-node")))
    assert e.dispatch == {("cluster_ip", "172.30.0.41:80"): "service", ("node_port", ":30001"): "drop"}
    assert e.local_endpoints == set() and e.cluster_endpoints == {"10.0.0.1:80"}


def test_internal_policy_local_uses_only_this_nodes_endpoints() -> None:
    e = one(svc(internalTrafficPolicy="Local"), eps(ep("10.0.0.1", node=NODE), ep("10.0.0.2", node="other")))
    assert e.local_endpoints == {"10.0.0.1:80"} and e.cluster_endpoints is None
    e = one(svc(internalTrafficPolicy="Local"), eps(ep("10.0.0.2", node="other")))
    assert e.dispatch == {("cluster_ip", "172.30.0.41:80"): "drop"}


def test_headless_and_externalname_are_skipped() -> None:
    st = state_from_items([svc("h", clusterIP="None", clusterIPs=["None"]),
                           svc("x", type="ExternalName", clusterIP="", clusterIPs=[])], NODE, "t", 0)
    assert expected_ports(st, NODE) == []


def test_leading_zero_ipv4_read_as_kube_proxy_does() -> None:
    assert parse_ip_sloppy("010.001.000.009") == "10.1.0.9"
    assert parse_ip_sloppy("172.30.0.41") == "172.30.0.41"
    assert parse_ip_sloppy("fd00::0001") == "fd00::1"
    assert parse_ip_sloppy("300.1.1.1") is None
    e = one(svc(externalIPs=["192.168.099.022"]), eps(ep("010.180.000.001")))
    assert ("external_ip", "192.168.99.22:80") in e.dispatch and e.cluster_endpoints == {"10.180.0.1:80"}


def test_dual_stack_gives_one_port_per_family() -> None:
    st = state_from_items([svc(clusterIPs=["172.30.0.41", "fd00:30::41"], ipFamilies=["IPv4", "IPv6"]),
                           eps(ep("10.0.0.1")), eps(ep("fd00:10::1"), family="IPv6")], NODE, "t", 0)
    by_family = {p.family: p for p in expected_ports(st, NODE)}
    assert by_family[4].cluster_endpoints == {"10.0.0.1:80"}
    assert by_family[6].cluster_endpoints == {"[fd00:10::1]:80"}
    assert by_family[6].dispatch == {("cluster_ip", "[fd00:30::41]:80"): "service"}


def test_load_balancer_ip_mode_proxy_is_not_programmed() -> None:
    s = svc(type="LoadBalancer", ports=[{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30001}])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8", "ipMode": "Proxy"}]}}
    e = one(s, eps(ep("10.0.0.1")))
    assert ("load_balancer_ip", "1.2.3.4:80") in e.dispatch
    assert ("load_balancer_ip", "5.6.7.8:80") not in e.dispatch


def test_topology_hints_mark_the_port_filterable() -> None:
    s = svc()
    s["spec"]["trafficDistribution"] = "PreferClose"
    e1 = ep("10.0.0.1")
    e1["hints"] = {"forZones": [{"name": "zone-a"}]}
    assert one(s, eps(e1)).topology_filtered


def _fixture_cases() -> list[tuple[str, str]]:
    out = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.name.endswith(".cluster.json") or not (path.parent / (path.stem + ".cluster.json")).exists():
            continue
        out.append((path.parent.name, path.stem))
    return out


@pytest.mark.parametrize(("mode", "name"), _fixture_cases())
def test_expected_endpoints_match_each_fixtures_description(mode: str, name: str) -> None:
    """The fixture's NAME.json lists the endpoints the upstream test fed kube-proxy; every one that is ready
    (or, failing that, serving and terminating) must appear among our expected endpoints."""
    desc = json.loads((FIXTURES / mode / f"{name}.json").read_text())
    items = json.loads((FIXTURES / mode / f"{name}.cluster.json").read_text())["items"]
    node = next(i["metadata"]["name"] for i in items if i["kind"] == "Node")
    ports = {p.service: p for p in expected_ports(state_from_items(items, node, "t", 0), node)}
    for e in desc.get("endpoints", []):
        key = f"{e['service']}:{e['portName']}" if e.get("portName") else e["service"]
        assert key in ports, key
        addr = f"{e['ip']}:{e['port']}"
        assert addr in ports[key].usable_endpoints or e.get("ready") is False, (key, addr)
