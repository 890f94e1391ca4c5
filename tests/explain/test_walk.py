"""The walk offline (in-memory snapshots): what it needs to run, how it resolves a named targetPort, which
step is the first problem, the documents against docs/explain.schema.json, and where probes may go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.explain.model import ServiceQuery
from agent.explain.plan import DnsConfig, allowed_addresses, node_targets, service_targets
from agent.explain.run import explain_response
from agent.explain.walk import CannotExplain, resolve_target_port, walk
from agent.kubeobjects import state_from_items
from agent.model import Source
from agent.model.cluster import ContainerPort, PodSpec, ServicePortSpec
from agent.model.probes import CLUSTER_IP, DNS, ENDPOINT, KUBERNETES
from agent.report.explain_json import explain_document, nodes_document
from agent.runner import Report
from tests.explain_bed import NODE, Bed, objects
from tests.snapshots import NOW, healthy

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "explain.schema.json").read_text())


def _report(bed: Bed | None = None, usable: bool = True) -> Report:
    items = objects(bed or Bed())
    state = state_from_items(items, NODE, "file test", NOW)
    state.usable = usable
    snap = healthy(cluster=Source("cluster", ok=True, data=state))
    return Report(snapshot=snap, findings=(), proxy_mode="iptables", generated_at=NOW)


def _pods(bed: Bed | None = None) -> list[PodSpec]:
    from agent.kubeobjects import pods_from_items

    return pods_from_items(objects(bed or Bed()), "default")


def test_no_usable_cluster_state_cannot_explain() -> None:
    with pytest.raises(CannotExplain):
        walk(ServiceQuery("default", "web"), _report(usable=False).snapshot, (), None, None, now=NOW)
    status, body = explain_response(_report(usable=False), "service=default/web", prober=None)
    assert status == 503 and "no usable cluster state" in json.loads(body)["error"]


def test_explain_response_validates_its_query() -> None:
    report = _report()
    for query, status in [("", 400), ("service=web", 400), ("service=default/web&colour=red", 400),
                          ("service=default/web&probes=2", 400), ("service=default/web&probes=0", 200)]:
        assert explain_response(report, query, prober=None)[0] == status, query
    assert explain_response(None, "service=default/web", prober=None)[0] == 503


def test_named_target_port_resolves_per_pod_by_name_and_protocol() -> None:
    sp = ServicePortSpec(name="http", protocol="TCP", port=80, target_port="web")
    pods = [PodSpec("ns", "a", container_ports=[ContainerPort("web", 8080, "TCP")]),
            PodSpec("ns", "b", container_ports=[ContainerPort("web", 9090, "UDP")]),
            PodSpec("ns", "c", container_ports=[ContainerPort("http", 80, "TCP")])]
    assert resolve_target_port(sp, pods) == {"a": 8080, "b": None, "c": None}
    numeric = ServicePortSpec(name="", protocol="TCP", port=80, target_port="8443")
    assert resolve_target_port(numeric, pods) == {"a": 8443, "b": 8443, "c": 8443}


def test_without_probes_the_api_side_still_finds_the_named_target_port() -> None:
    expl = walk(ServiceQuery("default", "web"), _report(Bed(target_port="web")).snapshot, (),
                _pods(Bed(target_port="web")), None, now=NOW)
    assert expl.first_problem is not None and expl.first_problem.id == "definition"
    assert {s.id: s.status for s in expl.steps}["by_ip"] == "skipped"


def test_selectorless_service_with_its_own_slices_is_legitimate() -> None:
    bed = Bed(web_selectorless=True)
    expl = walk(ServiceQuery("default", "web"), _report(bed).snapshot, (), _pods(bed), None, now=NOW)
    steps = {s.id: s for s in expl.steps}
    assert steps["endpoints"].status == "ok" and "selectorless" in steps["endpoints"].summary


def test_only_this_nodes_pods_known_says_so() -> None:
    bed = Bed(selector={"app": "other"}, endpoints=False)
    expl = walk(ServiceQuery("default", "web"), _report(bed).snapshot, (), None, None, now=NOW)
    assert {s.id: s.status for s in expl.steps}["endpoints"] == "skipped"


def test_documents_follow_the_schema() -> None:
    for bed in (Bed(), Bed(listening=False), Bed(selector={"app": "x"}, endpoints=False)):
        expl = walk(ServiceQuery("default", "web", "http"), _report(bed).snapshot, (), _pods(bed), None, now=NOW)
        doc = explain_document(expl)
        jsonschema.validate(doc, SCHEMA)
    missing = explain_document(walk(ServiceQuery("default", "nope"), _report().snapshot, (), None, None, now=NOW))
    jsonschema.validate(missing, SCHEMA)
    assert missing["first_problem"] == "service"
    nodes = nodes_document("default/web", [
        {"node": "a", "pod": "p1", "explanation": missing, "error": None},
        {"node": "b", "pod": "p2", "explanation": None, "error": "HTTP 503: starting"}])
    jsonschema.validate(nodes, SCHEMA)


def _probe_addresses_allowed(targets: list[Any], allowed: frozenset[str]) -> None:
    assert targets and {t.address for t in targets} <= allowed


def test_probes_go_only_to_clusterips_endpoints_and_the_cluster_dns() -> None:
    state = _report().snapshot.cluster.data
    assert state is not None
    dns = DnsConfig(servers=["10.96.0.10"])
    allowed = allowed_addresses(state, dns)
    assert allowed == {"10.96.0.1", "10.96.0.10", "10.96.0.20", "10.244.0.1", "10.244.0.53", "10.244.0.10"}
    web = next(s for s in state.services if s.name == "web")
    slices = [s for s in state.slices if s.service == "web"]
    targets = service_targets(web, web.ports, slices, dns)
    _probe_addresses_allowed(targets, allowed)
    assert {(t.kind, t.address, t.port) for t in targets} == {
        (DNS, "10.96.0.10", 53), (CLUSTER_IP, "10.96.0.20", 80), (ENDPOINT, "10.244.0.10", 8080)}
    continuous = node_targets(state, NODE, dns)
    _probe_addresses_allowed(continuous, allowed)
    assert [t.kind for t in continuous[:2]] == [DNS, KUBERNETES]  # never crowded out by the cap
    assert {(t.address, t.port) for t in continuous if t.kind == ENDPOINT} == {
        ("10.244.0.1", 6443), ("10.244.0.53", 53), ("10.244.0.10", 8080)}
    udp = next(t for t in continuous if t.port == 53 and t.kind == ENDPOINT)
    assert udp.name  # UDP is probed only where the protocol answers: a DNS question


def test_the_services_stale_conntrack_flows_are_a_proxying_problem() -> None:
    from agent.catalogue import finding
    from agent.model.conntrack_table import ConntrackFlows

    report = _report()
    snap = report.snapshot
    snap.conntrack_flows = Source("conntrack_flows", ok=True, data=ConntrackFlows(read_at=NOW, entries_read=3,
                                                                                  destinations_watched=1))
    stale = finding("conntrack.stale_flows", "default/web:http", service="default/web:http", evidence={
        "entries": 3, "ip_family": 4, "reply_sources": ["10.0.0.9:53"], "examples": [],
        "command": "conntrack -D -p udp --orig-dst 172.30.0.10", "commands": []})
    other = finding("conntrack.stale_flows", "default/webber:http", service="default/webber:http",
                    evidence={**stale.evidence})
    steps = {s.id: s for s in walk(ServiceQuery("default", "web"), snap, (stale, other), _pods(), None, now=NOW).steps}
    assert steps["proxying"].status == "problem" and "conntrack -D" in steps["proxying"].summary
    assert steps["proxying"].evidence["service_entries"] == [stale.evidence]  # only this Service's
    clean = {s.id: s for s in walk(ServiceQuery("default", "web"), snap, (other,), _pods(), None, now=NOW).steps}
    assert clean["proxying"].status != "problem"
