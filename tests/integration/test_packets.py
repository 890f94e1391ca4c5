"""Finding and traffic agree (issue 17): for each kind of fault that changes what a packet does, a TCP connection
from the node to the Service's address is made before and after the fault, on kube-proxy's own rules
(TestOverallIPTablesRules, iptables-legacy) with real listeners at the endpoints' addresses: a fault that breaks
the connection is reported as critical for that Service, and with the rules whole the same connection works and
nothing is reported. The fault that changes no packet (the localhost NodePort twin) is reported as info only,
and the connection still works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_mutation_matrix import apply
from tests.integration.test_rules_iptables import OVERALL, check_with, load
from tests.testbed import PY, Node, problems

pytestmark = pytest.mark.netns

BRIDGE_IP = "10.180.0.254"  # the node's address on the pods' bridge
# a source that has not connected before: a client session affinity (`-m recent`) has not seen
NEW_CLIENT = "203.0.113.6"
CONNECT = ("import socket,sys\ns=socket.socket();s.settimeout(1.5)\n"
           "src=sys.argv[3] if len(sys.argv)>3 else ''\n"
           "src and s.bind((src,0))\n"
           "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print(s.recv(2).decode() or 'closed')\n"
           "except OSError as e:\n print(type(e).__name__)\n")


def serving_node(node: Node) -> None:
    """OVERALL's rules with listeners at the endpoints 10.180.0.2 (ns2/svc2) and 10.180.0.3 (ns3/svc3, ns5/svc5)
    on a bridge, routes to the Service addresses that are not the node's, and a source in svc5's ranges."""
    load(node, OVERALL, "legacy")
    node.bridge("cni0")
    node.sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", "cni0")
    for ip in ("10.180.0.2", "10.180.0.3"):
        _, pod = node.pod_on_bridge("cni0", ip, hairpin=True)
        node.tcp_listener(pod, ip)
    for net in ("172.30.0.0/16", "192.168.99.0/24", "5.6.7.0/24", "1.2.3.0/24"):
        node.sh("ip", "route", "add", net, "dev", "cni0")
    for ip in ("203.0.113.5", NEW_CLIENT):  # inside ns5/svc5's loadBalancerSourceRanges
        node.sh("ip", "addr", "add", f"{ip}/32", "dev", "lo")


def connect(node: Node, ip: str, port: int, source: str = "") -> str:
    return node.sh(PY, "-c", CONNECT, ip, str(port), *([source] if source else [])).stdout.strip()


# (kind, fault as iptables arguments, address connected to, source, the finding the fault must give)
CASES = [
    ("affinity_rung_deleted",
     ("-t", "nat", "-D", "KUBE-SVC-NUKIZ6OKUXPJNT4C", "-m", "comment", "--comment", "ns5/svc5:p80 -> 10.180.0.3:80",
      "-j", "KUBE-SEP-I77PXRDZVX7PMWMN"), ("172.30.0.45", 80), "203.0.113.5",
     ("rules.endpoint_missing", "ns5/svc5:p80")),
    ("lb_allow_deleted",
     ("-t", "nat", "-D", "KUBE-FW-NUKIZ6OKUXPJNT4C", "-m", "comment", "--comment", "ns5/svc5:p80 loadbalancer IP",
      "-s", "203.0.113.0/25", "-j", "KUBE-EXT-NUKIZ6OKUXPJNT4C"), ("5.6.7.8", 80), "203.0.113.5",
     ("rules.lb_source_range_missing", "ns5/svc5:p80")),
    ("local_external_dispatch_deleted",
     ("-t", "nat", "-D", "KUBE-SERVICES", "-m", "comment", "--comment", "ns2/svc2:p80 external IP", "-m", "tcp",
      "-p", "tcp", "-d", "192.168.99.22", "--dport", "80", "-j", "KUBE-EXT-GNZBNJ2PO5MGZ6GT"),
     ("192.168.99.22", 80), "", ("rules.service_missing", "ns2/svc2:p80")),
    ("nodeports_jump_deleted",
     ("-t", "nat", "-D", "KUBE-SERVICES", "-m", "comment", "--comment",
      "kubernetes service nodeports; NOTE: this must be the last rule in this chain", "-m", "addrtype",
      "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS"), (BRIDGE_IP, 3003), "",
     ("iptables.nodeports_jump_missing", "nat/KUBE-SERVICES")),
]


@pytest.mark.parametrize(("kind", "fault", "target", "source", "expect"), CASES, ids=[c[0] for c in CASES])
def test_a_fault_that_breaks_the_connection_is_critical_for_its_service(
        node: Node, tmp_path: Path, kind: str, fault: tuple[str, ...], target: tuple[str, int], source: str,
        expect: tuple[str, str]) -> None:
    serving_node(node)
    assert connect(node, *target, source) == "ok", kind
    assert not {p for p in problems(check_with(node, OVERALL, tmp_path, grace="0")) if p[1] == expect[1]}
    apply(node, "legacy", (fault,))
    # a new client: with ClientIP affinity the one that connected before is still sent on by its `--rcheck` rule
    assert connect(node, *target, NEW_CLIENT if kind.startswith("affinity") else source) != "ok", kind
    doc = check_with(node, OVERALL, tmp_path, grace="0")
    hit = [f for f in doc["findings"] if (f["id"], f["service"] or f["subject"]) == expect]
    assert hit and hit[0]["severity"] == "critical", (kind, problems(doc))


def test_the_localhost_twin_deleted_changes_no_packet_and_is_info_only(node: Node, tmp_path: Path) -> None:
    serving_node(node)
    assert connect(node, "127.0.0.1", 3003) == "ok"
    apply(node, "legacy", (("-t", "nat", "-D", "KUBE-NODEPORTS", "-m", "comment", "--comment", "ns3/svc3:p80",
                            "-m", "tcp", "-p", "tcp", "-d", "127.0.0.0/8", "--dport", "3003", "-m", "nfacct",
                            "--nfacct-name", "localhost_nps_accepted_pkts", "-j", "KUBE-EXT-X27LE4BHSL4DOUIK"),))
    assert connect(node, "127.0.0.1", 3003) == "ok"  # the general NodePort rule still matches
    doc = check_with(node, OVERALL, tmp_path, grace="0")
    assert [f["severity"] for f in doc["findings"] if f["id"] == "rules.localhost_node_port_missing"] == ["info"]
    assert not {p for p in problems(doc) if p[1] == "ns3/svc3:p80"}
