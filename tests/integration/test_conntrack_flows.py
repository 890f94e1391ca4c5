"""Stale conntrack flows on a real kernel: entries made with `conntrack -I ... --dst-nat` in the node's netns,
judged by kube-proxy's cleanup rule against a cluster state file, attributed to the Service, read-only.

Cluster: kube-system/kube-dns (UDP and TCP 53, ClusterIP 10.96.0.10, endpoints 10.244.1.5 and 10.244.2.6);
ns1/syslog (UDP 514, ClusterIP 10.96.0.20, NodePort 30514, endpoint 10.244.1.7) on node 192.168.0.2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.testbed import Node, by_id, require_tool


def _slice(ns: str, svc: str, ports: list[dict[str, Any]], ips: list[str]) -> dict[str, Any]:
    return {"kind": "EndpointSlice", "addressType": "IPv4", "metadata": {
        "namespace": ns, "name": f"{svc}-abcde", "labels": {"kubernetes.io/service-name": svc}},
        "ports": ports, "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}


def cluster_json(path: Path, dns_endpoints: list[str], syslog_endpoints: list[str]) -> Path:
    items = [
        {"kind": "Service", "metadata": {"namespace": "kube-system", "name": "kube-dns"}, "spec": {
            "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"name": "dns", "protocol": "UDP", "port": 53},
                      {"name": "dns-tcp", "protocol": "TCP", "port": 53}]}},
        _slice("kube-system", "kube-dns", [{"name": "dns", "protocol": "UDP", "port": 53},
                                           {"name": "dns-tcp", "protocol": "TCP", "port": 53}], dns_endpoints),
        {"kind": "Service", "metadata": {"namespace": "ns1", "name": "syslog"}, "spec": {
            "type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ports": [{"name": "p514", "protocol": "UDP", "port": 514, "nodePort": 30514}]}},
        _slice("ns1", "syslog", [{"name": "p514", "protocol": "UDP", "port": 514}], syslog_endpoints),
        {"kind": "Node", "metadata": {"name": "test-node"},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}},
    ]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def insert(node: Node, proto: str, src: str, sport: int, dst: str, dport: int, dnat: str | None = None) -> None:
    node.sh("conntrack", "-I", "-p", proto, "-s", src, "-d", dst, "--sport", str(sport), "--dport", str(dport),
            *(["--dst-nat", dnat] if dnat else []), "-t", "300",
            *(["--state", "ESTABLISHED"] if proto == "tcp" else []))


def healthy_flows(node: Node) -> None:
    insert(node, "udp", "10.244.1.9", 40001, "10.96.0.10", 53, "10.244.1.5")
    insert(node, "udp", "10.244.1.9", 40002, "10.96.0.10", 53, "10.244.2.6")
    insert(node, "udp", "10.244.1.9", 40003, "10.96.0.20", 514, "10.244.1.7")
    insert(node, "udp", "203.0.113.9", 5000, "192.168.0.2", 30514, "10.244.1.7")
    insert(node, "udp", "10.244.1.9", 40004, "8.8.8.8", 53)  # to the internet: no Service, no judgement
    insert(node, "udp", "10.244.1.9", 40005, "198.51.100.1", 30514)  # a client's flow to a remote 30514


def table(node: Node) -> list[str]:
    """The entries without their countdown (third column): what a read must leave as it was."""
    return sorted(" ".join(f for i, f in enumerate(line.split()) if i != 2)
                  for line in node.sh("conntrack", "-L").stdout.splitlines())


def _conntrack_findings(doc: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(f["id"], f["service"]) for f in doc["findings"] if f["id"].startswith("conntrack.")
            and f["id"] != "conntrack.binary_missing"}


def test_healthy_flows_give_no_finding_and_the_table_is_unchanged(node: Node, tmp_path: Path) -> None:
    require_tool("conntrack")
    healthy_flows(node)
    insert(node, "tcp", "10.244.1.9", 40006, "10.96.0.10", 53, "10.244.9.9")  # TCP: kube-proxy leaves it to TCP
    before = table(node)
    assert len(before) == 7
    _, doc = node.check("--cluster-state", str(cluster_json(tmp_path / "c.json", ["10.244.1.5", "10.244.2.6"],
                                                           ["10.244.1.7"])), "--grace", "0")
    assert _conntrack_findings(doc) == set()
    assert table(node) == before


def test_stale_and_blackholed_flows_are_attributed_with_the_delete_command(node: Node, tmp_path: Path) -> None:
    require_tool("conntrack")
    healthy_flows(node)
    insert(node, "udp", "10.244.1.9", 41000, "10.96.0.10", 53, "10.244.9.9")  # the old DNS pod, gone
    insert(node, "udp", "10.244.1.9", 41001, "10.96.0.10", 53, "10.244.9.9")
    insert(node, "udp", "10.244.1.9", 41002, "10.96.0.20", 514)  # made while syslog had no endpoint
    insert(node, "udp", "203.0.113.9", 5001, "192.168.0.2", 30514, "10.244.8.8")  # NodePort to a gone pod
    _, doc = node.check("--cluster-state", str(cluster_json(tmp_path / "c.json", ["10.244.1.5", "10.244.2.6"],
                                                           ["10.244.1.7"])), "--grace", "0")
    assert _conntrack_findings(doc) == {("conntrack.stale_flows", "kube-system/kube-dns:dns"),
                                        ("conntrack.blackholed_flows", "ns1/syslog:p514"),
                                        ("conntrack.stale_flows", "ns1/syslog:p514")}
    dns = next(f for f in by_id(doc, "conntrack.stale_flows") if f["service"] == "kube-system/kube-dns:dns")
    assert dns["evidence"]["entries"] == 2 and dns["evidence"]["reply_sources"] == ["10.244.9.9:53"]
    assert dns["evidence"]["command"] == "conntrack -D -p udp --orig-dst 10.96.0.10 --reply-src 10.244.9.9"
    assert "10.244.1.9:41000 -> 10.96.0.10:53 => 10.244.9.9:53" in dns["evidence"]["examples"]
    (hole,) = by_id(doc, "conntrack.blackholed_flows")
    assert hole["evidence"]["command"] == "conntrack -D -p udp --orig-dst 10.96.0.20 --reply-src 10.96.0.20"
    node_port = next(f for f in by_id(doc, "conntrack.stale_flows") if f["service"] == "ns1/syslog:p514")
    assert node_port["evidence"]["command"] == ("conntrack -D -p udp --orig-dst 192.168.0.2 --orig-port-dst 30514 "
                                                "--reply-src 10.244.8.8")
    # the remedy works: after the commands, the same check is quiet
    for f in doc["findings"]:
        if f["id"] in ("conntrack.stale_flows", "conntrack.blackholed_flows"):
            node.sh(*f["evidence"]["command"].split())
    _, after = node.check("--cluster-state", str(tmp_path / "c.json"), "--grace", "0")
    assert _conntrack_findings(after) == set()


def test_a_service_with_no_endpoints_left_has_all_its_flows_stale(node: Node, tmp_path: Path) -> None:
    """kube-proxy 1.32's regression skipped exactly these: the Service lost every endpoint."""
    require_tool("conntrack")
    insert(node, "udp", "10.244.1.9", 40001, "10.96.0.10", 53, "10.244.1.5")
    _, doc = node.check("--cluster-state", str(cluster_json(tmp_path / "c.json", [], ["10.244.1.7"])), "--grace", "0")
    assert _conntrack_findings(doc) == {("conntrack.stale_flows", "kube-system/kube-dns:dns")}


def test_without_cluster_state_flows_are_not_read(node: Node) -> None:
    require_tool("conntrack")
    insert(node, "udp", "10.244.1.9", 41000, "10.96.0.10", 53, "10.244.9.9")
    _, doc = node.check("--no-api")
    assert _conntrack_findings(doc) == set()
    assert not [f for f in doc["findings"] if f["id"] == "agent.source_failed" and f["subject"] == "conntrack_flows"]
