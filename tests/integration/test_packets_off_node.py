"""Finding and traffic agree for faults only an off-node client sees (issue 17): masquerading and, in nftables mode,
loadBalancerSourceRanges.

Masquerading matters when the reply does not come back through the node that DNATed the request. On one node it
always does, and conntrack un-NATs it, so a node-local probe sees nothing wrong. So here is a small cluster made of
network namespaces, shaped as a flat LAN with host-gw routing (flannel host-gw, Calico without overlay):

    client (off-cluster, 192.168.0.10 and 203.0.113.5 on the LAN bridge)
      |-- node1 192.168.0.2: kube-proxy's rules (TestOverall*Rules), svcdoctor runs here; routes 10.180.0.0/24
      |                       to node2; the LAN's load balancer sends 5.6.7.8 (ns5/svc5's LB IP) to it
      `-- node2 192.168.0.3 -- pod 10.180.0.3 (the endpoint of ns3/svc3 and ns5/svc5), listening on :80

The client connects to ns3/svc3's NodePort on node1 (192.168.0.2:3003, externalTrafficPolicy Cluster). node1
DNATs to 10.180.0.3:80 and forwards to node2. With kube-proxy's masquerade the pod answers node1, which un-NATs;
without it the pod answers the client straight from 10.180.0.3 (node2 is on the client's LAN), and the client's
socket, which talks to 192.168.0.2:3003, refuses it: the connection fails.

loadBalancerSourceRanges: the client sends to ns5/svc5's LB IP from outside the ranges (192.168.0.10) and from
inside (203.0.113.5). In nftables mode the `firewall-ips` element is the only gate (0/8 answers from outside before
its deletion, 8/8 after); in iptables mode KUBE-PROXY-FIREWALL's DROP is not what keeps them out (0/8 both before
and after), so that finding is info.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import mutations, nft_mutations
from tests.integration.test_mutation_matrix import apply, apply_nft
from tests.integration.test_nftables import NFT, nftables_node
from tests.integration.test_nftables import OVERALL as NFT_OVERALL
from tests.integration.test_nftables import check as nft_check
from tests.integration.test_rules_iptables import IPT, OVERALL, check_with, load
from tests.testbed import PY, Node, in_ns, plain_routing, problems

pytestmark = pytest.mark.netns

NODE1 = "192.168.0.2"  # the fixtures' Node InternalIP, and nftables mode's only nodeport-ips element
NODE2 = "192.168.0.3"
CLIENT = "192.168.0.10"
INSIDE = "203.0.113.5"  # a client inside ns5/svc5's loadBalancerSourceRanges (203.0.113.0/25)
POD = "10.180.0.3"
NODE_PORT = 3003  # ns3/svc3:p80
LB_IP = "5.6.7.8"  # ns5/svc5:p80
TRIES = 8
# TRIES connections at once, each given 2 s; prints how many were answered
CONNECT_MANY = ("import socket,sys\nfrom concurrent.futures import ThreadPoolExecutor\n"
                "ip,port,n,src=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]\n"
                "def one(_):\n s=socket.socket();s.settimeout(2)\n"
                " try:\n  s.bind((src,0));s.connect((ip,port));return s.recv(2)==b'ok'\n"
                " except OSError:\n  return False\n finally:\n  s.close()\n"
                "with ThreadPoolExecutor(n) as ex:\n print(sum(ex.map(one,range(n))))\n")


@dataclass(frozen=True)
class Cluster:
    client: str
    node2: str
    pod: str


def two_nodes(node: Node) -> Cluster:
    """The cluster drawn above around `node` (node1), its rules already loaded."""
    plain_routing(node.name)
    client, node2, pod = node.other_netns(), node.other_netns(forwarding=True), node.other_netns()
    for cmd in (("ip", "link", "add", "lan0", "type", "bridge"), ("ip", "link", "set", "lan0", "up"),
                ("ip", "addr", "add", f"{CLIENT}/24", "dev", "lan0"),
                ("ip", "addr", "add", f"{INSIDE}/32", "dev", "lan0"),
                ("ip", "route", "add", f"{LB_IP}/32", "via", NODE1)):  # the load balancer's choice: node1
        in_ns(client, *cmd)
    Node.wire(node.name, f"{NODE1}/24", client, b_master="lan0")
    Node.wire(node2, f"{NODE2}/24", client, b_master="lan0")
    Node.wire(node2, "10.180.0.254/24", pod, b_ip=f"{POD}/24")
    in_ns(pod, "ip", "route", "add", "default", "via", "10.180.0.254")
    node.sh("ip", "route", "add", "10.180.0.0/24", "via", NODE2)  # host-gw: node2's pods through node2
    node.sh("ip", "route", "add", f"{INSIDE}/32", "via", CLIENT)
    node.tcp_listener(pod, POD)
    # counts what reaches the client from the pod's own address: the reply that went around node1
    in_ns(client, "nft", "add table ip probe; add chain ip probe input { type filter hook input priority 0 ; }; "
          f"add rule ip probe input ip saddr {POD} tcp sport 80 counter")
    return Cluster(client, node2, pod)


def answers(ns: str, ip: str, port: int, source: str) -> int:
    """Of TRIES new connections from `source` in `ns` to ip:port, how many the listener answered."""
    return int(in_ns(ns, PY, "-c", CONNECT_MANY, ip, str(port), str(TRIES), source).strip())


def straight_from_pod(cluster: Cluster) -> int:
    listing = in_ns(cluster.client, "nft", "list", "chain", "ip", "probe", "input")
    m = re.search(r"counter packets (\d+)", listing)
    assert m, listing
    return int(m.group(1))


def loaded(node: Node, mode: str) -> None:
    """kube-proxy's own full-sync rules on node1: iptables mode on the `legacy` or `nft` backend, or nftables mode."""
    if mode == "nftables":
        nftables_node(node, NFT_OVERALL)
    else:
        load(node, OVERALL, mode)


def check(node: Node, mode: str, tmp: Path) -> dict[str, Any]:
    return nft_check(node, NFT_OVERALL) if mode == "nftables" else check_with(node, OVERALL, tmp, grace="0")


def _iptables_fault(kind: str) -> mutations.Fault:
    return next(f for f in mutations.faults((IPT / f"{OVERALL}.rules").read_text()) if f.kind == kind)


def _nft_fault(kind: str) -> nft_mutations.NftFault:
    return next(f for f in nft_mutations.faults((NFT / f"{NFT_OVERALL}.nft").read_text()) if f.kind == kind)


def break_it(node: Node, mode: str, kind: str) -> tuple[str, str]:
    """Apply the matrix's fault `kind` as a person would; returns the finding it must give."""
    if mode == "nftables":
        nft_fault = _nft_fault(kind)
        apply_nft(node, nft_fault)
        return nft_fault.expect
    fault = _iptables_fault(kind)
    apply(node, mode, fault.commands)
    return fault.expect


MASQUERADE = [(mode, kind) for mode in ("legacy", "nft") for kind in ("masquerade_mark_deleted", "masquerade_deleted")]
MASQUERADE += [("nftables", kind) for kind in ("mark_for_masquerade_deleted", "masquerade_rule_deleted")]


@pytest.mark.parametrize(("mode", "kind"), MASQUERADE, ids=[f"{m}-{k}" for m, k in MASQUERADE])
def test_masquerade_deleted_breaks_the_off_node_client_and_is_critical(node: Node, tmp_path: Path, mode: str,
                                                                       kind: str) -> None:
    loaded(node, mode)
    cluster = two_nodes(node)
    # whole rules: the client is answered and nothing is reported
    assert answers(cluster.client, NODE1, NODE_PORT, CLIENT) == TRIES
    assert straight_from_pod(cluster) == 0
    assert problems(check(node, mode, tmp_path)) == set()

    expect = break_it(node, mode, kind)
    assert answers(cluster.client, NODE1, NODE_PORT, CLIENT) == 0
    assert straight_from_pod(cluster) >= TRIES  # each SYN answered, from 10.180.0.3 and around node1
    # why a probe from the node itself cannot see it: its own reply path runs back through it
    assert answers(node.name, NODE1, NODE_PORT, NODE1) == TRIES
    doc = check(node, mode, tmp_path)
    hit = [f for f in doc["findings"] if (f["id"], f["service"] or f["subject"]) == expect]
    assert hit and hit[0]["severity"] == "critical", (kind, problems(doc))
    assert {p[1] for p in problems(doc)} == {expect[1]}


def test_nftables_firewall_element_deleted_lets_outside_clients_in_and_says_so(node: Node, tmp_path: Path) -> None:
    loaded(node, "nftables")
    cluster = two_nodes(node)
    # the ranges enforced: only the client inside them is served, and nothing is reported
    assert answers(cluster.client, LB_IP, 80, CLIENT) == 0
    assert answers(cluster.client, LB_IP, 80, INSIDE) == TRIES
    assert problems(check(node, "nftables", tmp_path)) == set()

    expect = break_it(node, "nftables", "firewall_element_deleted")
    assert answers(cluster.client, LB_IP, 80, CLIENT) == TRIES
    assert answers(cluster.client, LB_IP, 80, INSIDE) == TRIES
    doc = check(node, "nftables", tmp_path)
    assert problems(doc) == {expect}
    (f,) = [f for f in doc["findings"] if f["id"] == expect[0]]
    # an exposure, not an outage: every client is served, so a warning, and it says the ranges are not enforced
    assert f["severity"] == "warning"
    assert "no rule dropping clients outside" in f["message"] and "203.0.113.0/25" in f["message"]
    assert "the ranges are not enforced: anyone who reaches this node can use the Service" in f["message"]



@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_iptables_lb_drop_deleted_still_keeps_outside_clients_out_and_is_info(node: Node, tmp_path: Path,
                                                                              backend: str) -> None:
    """The iptables twin of the nftables fault above changes no answer: KUBE-FW-<hash> lets only the ranges on to
    the Service, so the DROP in KUBE-PROXY-FIREWALL is not what keeps the rest out. Said as info, and truly."""
    loaded(node, backend)
    cluster = two_nodes(node)
    assert (answers(cluster.client, LB_IP, 80, CLIENT), answers(cluster.client, LB_IP, 80, INSIDE)) == (0, TRIES)
    expect = break_it(node, backend, "lb_drop_deleted")
    assert (answers(cluster.client, LB_IP, 80, CLIENT), answers(cluster.client, LB_IP, 80, INSIDE)) == (0, TRIES)
    doc = check(node, backend, tmp_path)
    assert problems(doc) == set()
    (f,) = [f for f in doc["findings"] if (f["id"], f["service"]) == expect]
    assert f["severity"] == "info"
    assert "still kept from the Service (KUBE-FW-NUKIZ6OKUXPJNT4C lets only the ranges on" in f["message"]
