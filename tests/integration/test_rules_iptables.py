"""Expected vs actual on real kernel state: kube-proxy's own rule sets restored into a node's netns
(iptables-legacy and iptables-nft), compared with the API objects that produced them."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import FIXTURES, Node, by_id, problems

IPT = FIXTURES / "iptables"
FULL = sorted(p.name[: -len(".rules")] for p in IPT.glob("*.rules")
              if not p.name.endswith(("-save.rules", "_partial.rules")) and p.name != "node-base.rules")
PARTIAL = sorted(p.name[: -len(".rules")] for p in IPT.glob("v1.3x_TestSyncProxyRulesRepeated_0*.rules")
                 if not p.name.endswith("-save.rules"))
OVERALL = "v1.3x_TestOverallIPTablesRules"


def node_name(fixture: str) -> str:
    items = json.loads((IPT / f"{fixture}.cluster.json").read_text())["items"]
    return str(next(i["metadata"]["name"] for i in items if i["kind"] == "Node"))


def load(node: Node, fixture: str, backend: str, rules: str | None = None) -> None:
    node.healthy_kube_proxy()
    node.nfacct_for_kube_proxy()
    node.iptables_restore(rules if rules is not None else (IPT / f"{fixture}.rules").read_text(), backend,
                          noflush=True)
    node.iptables_restore((IPT / "node-base.rules").read_text(), backend, noflush=True)


def check_with(node: Node, fixture: str, tmp: Path, items: list[dict[str, Any]] | None = None,
               grace: str | None = None) -> dict[str, Any]:
    state = IPT / f"{fixture}.cluster.json"
    if items is not None:
        state = tmp / "cluster.json"
        state.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    extra = ("--grace", grace) if grace is not None else ()
    _, doc = node.check("--cluster-state", str(state), "--node-name", node_name(fixture), *extra)
    return doc


def items_of(fixture: str) -> list[dict[str, Any]]:
    return copy.deepcopy(json.loads((IPT / f"{fixture}.cluster.json").read_text())["items"])


@pytest.mark.parametrize("backend", ["legacy", "nft"])
@pytest.mark.parametrize("fixture", FULL)
def test_full_sync_fixture_matches_its_cluster_state(node: Node, tmp_path: Path, fixture: str, backend: str) -> None:
    load(node, fixture, backend)
    doc = check_with(node, fixture, tmp_path)
    assert problems(doc) == set()
    assert not by_id(doc, "rules.service_missing")


def test_partial_sync_sequence_matches_each_steps_cluster_state(node: Node, tmp_path: Path) -> None:
    node.healthy_kube_proxy()
    node.nfacct_for_kube_proxy()
    for i, step in enumerate(PARTIAL):
        node.iptables_restore((IPT / f"{step}.rules").read_text(), "legacy", noflush=True)
        if i == 0:
            node.iptables_restore((IPT / "node-base.rules").read_text(), "legacy", noflush=True)
        doc = check_with(node, step, tmp_path)
        assert problems(doc) == set(), step


def _without(rules: str, needle: str) -> str:
    return "".join(line for line in rules.splitlines(keepends=True) if needle not in line)


def test_dropped_endpoint_chain_is_endpoint_missing(node: Node, tmp_path: Path) -> None:
    # KUBE-SEP-UKSFD7AGPMPPLUHC is ns4/svc4:p80's endpoint 10.180.0.4:80 (first on the probability ladder).
    load(node, OVERALL, "legacy", _without((IPT / f"{OVERALL}.rules").read_text(), "KUBE-SEP-UKSFD7AGPMPPLUHC"))
    doc = check_with(node, OVERALL, tmp_path)
    assert problems(doc) == {("rules.endpoint_missing", "ns4/svc4:p80")}
    (f,) = by_id(doc, "rules.endpoint_missing")
    assert f["evidence"]["endpoint"] == "10.180.0.4:80" and f["evidence"]["mode"] == "iptables"


def test_deleted_dispatch_rule_is_service_missing(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "legacy")
    line = next(ln for ln in node.iptables_save("legacy").splitlines() if "ns1/svc1:p80 cluster IP" in ln
                and ln.startswith("-A KUBE-SERVICES"))
    node.sh("iptables-legacy", "-t", "nat", "-D", *shlex.split(line)[1:])
    doc = check_with(node, OVERALL, tmp_path)
    assert ("rules.service_missing", "ns1/svc1:p80") in problems(doc)
    assert {p for p in problems(doc) if p[0].startswith("rules.")} == {("rules.service_missing", "ns1/svc1:p80")}


def test_endpoint_only_in_the_api_is_endpoint_missing(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "legacy")
    items = items_of(OVERALL)
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc1"))
    sl["endpoints"].append({"addresses": ["10.180.0.9"]})
    assert problems(check_with(node, OVERALL, tmp_path, items)) == {("rules.endpoint_missing", "ns1/svc1:p80")}


def test_service_deleted_in_the_api_is_service_stale(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "nft")
    items = [i for i in items_of(OVERALL) if not (i["kind"] in ("Service", "EndpointSlice")
                                                 and i["metadata"]["namespace"] == "ns3")]
    assert problems(check_with(node, OVERALL, tmp_path, items)) == {("rules.service_stale", "ns3/svc3:p80")}


def test_changed_endpoint_port_is_port_mismatch(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "legacy")
    items = items_of(OVERALL)
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc1"))
    sl["ports"][0]["port"] = 8080
    doc = check_with(node, OVERALL, tmp_path, items)
    assert problems(doc) == {("rules.endpoint_port_mismatch", "ns1/svc1:p80")}
    (f,) = by_id(doc, "rules.endpoint_port_mismatch")
    assert (f["evidence"]["endpoint"], f["evidence"]["programmed"]) == ("10.180.0.1:8080", "10.180.0.1:80")


def test_reject_left_while_endpoints_exist_is_reject_stale(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "legacy")
    items = items_of(OVERALL)
    items.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"namespace": "ns6", "name": "svc6-00000",
                               "labels": {"kubernetes.io/service-name": "svc6"}},
                  "addressType": "IPv4", "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
                  "endpoints": [{"addresses": ["10.180.0.6"]}]})
    assert problems(check_with(node, OVERALL, tmp_path, items)) == {("rules.reject_stale", "ns6/svc6:p80")}


def test_endpoint_gone_not_ready_is_endpoint_stale(node: Node, tmp_path: Path) -> None:
    load(node, OVERALL, "nft")
    items = items_of(OVERALL)
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc4"))
    sl["endpoints"][1]["conditions"] = {"ready": False}
    doc = check_with(node, OVERALL, tmp_path, items)
    assert problems(doc) == {("rules.endpoint_stale", "ns4/svc4:p80")}


def test_recent_change_is_within_grace_unless_grace_is_off(node: Node, tmp_path: Path) -> None:
    import datetime

    load(node, OVERALL, "legacy")
    items = items_of(OVERALL)
    sl = next(i for i in items if i["kind"] == "EndpointSlice" and i["metadata"]["name"].startswith("svc1"))
    sl["endpoints"].append({"addresses": ["10.180.0.9"]})
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    sl["metadata"]["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": now}
    assert problems(check_with(node, OVERALL, tmp_path, items)) == set()  # kube-proxy may still be syncing
    state = tmp_path / "cluster.json"
    _, doc = node.check("--cluster-state", str(state), "--grace", "0")
    assert problems(doc) == {("rules.endpoint_missing", "ns1/svc1:p80")}
