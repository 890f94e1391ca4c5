"""Finding and traffic agree on IPv6 (issue 17): `table ip6 kube-proxy` (the supplementary IPv6 table) on an
IPv6-only node with real listeners at its endpoints' addresses; a TCP connection from the node to the Service's
IPv6 ClusterIP and NodePort is made before and after each fault that breaks it. With the table whole the
connections work and nothing is reported; after the fault the same connection fails and the finding is critical,
for the Service, for IPv6.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.test_mutation_matrix import NFT6_CASES, apply_nft, check_nft6, ipv6_nftables_node
from tests.testbed import PY, Node, problems

pytestmark = pytest.mark.netns

ENDPOINTS = ("fd00:10:180::1", "fd00:10:180::2:1")  # the table's endpoints (both serve ns1/svc1:p80)
BRIDGE_IP = "fd00:10:180::fe"  # the node's address on the pods' bridge
CONNECT = ("import socket,sys\ns=socket.socket(socket.AF_INET6);s.settimeout(1.5)\n"
           "try:\n s.connect((sys.argv[1],int(sys.argv[2])));print(s.recv(2).decode() or 'closed')\n"
           "except OSError as e:\n print(type(e).__name__)\n")


def serving_node(node: Node) -> None:
    """The IPv6 table on an IPv6-only node, a bridge with a pod listening on :80 at each endpoint address (added
    with nodad: a tentative address cannot be bound), and a route to the ClusterIP range out of the bridge."""
    ipv6_nftables_node(node)
    node.bridge("cni0")
    node.sh("ip", "addr", "add", f"{BRIDGE_IP}/64", "dev", "cni0", "nodad")
    for i, ip in enumerate(ENDPOINTS):
        pod = f"{node.name}-p{i}"
        subprocess.run(["ip", "netns", "add", pod], check=True)
        node.pod_namespaces.append(pod)
        port = f"vp{node.name[5:]}{i}"
        node.sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", pod)
        node.sh("ip", "link", "set", port, "master", "cni0", "up")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ip}/64", "dev", "eth0", "nodad"],
                    ["ip", "link", "set", "eth0", "up"], ["ip", "-6", "route", "add", "default", "via", BRIDGE_IP]):
            subprocess.run(["ip", "netns", "exec", pod, *cmd], check=True)
        node.tcp_listener(pod, ip)
    node.sh("ip", "-6", "route", "add", "fd00:172:30::/64", "dev", "cni0")


def connect(node: Node, ip: str, port: int) -> str:
    return node.sh(PY, "-c", CONNECT, ip, str(port)).stdout.strip()


# (fault kind, address connected to)
CASES = [("cluster_ip_element_deleted", ("fd00:172:30::41", 80)), ("nodeport_element_deleted", ("2001:db8::1", 3001))]


@pytest.mark.parametrize(("kind", "target"), CASES, ids=[c[0] for c in CASES])
def test_an_ipv6_fault_that_breaks_the_connection_is_critical_for_its_service(node: Node, kind: str,
                                                                              target: tuple[str, int]) -> None:
    (fault,) = [f for f in NFT6_CASES if f.kind == kind]
    serving_node(node)
    assert [connect(node, *target) for _ in range(4)] == ["ok"] * 4
    assert problems(check_nft6(node)) == set()
    apply_nft(node, fault, "ip6")
    assert connect(node, *target) != "ok"
    doc = check_nft6(node)
    assert problems(doc) == {fault.expect}
    (f,) = [f for f in doc["findings"] if (f["id"], f["service"]) == fault.expect]
    assert f["severity"] == "critical" and f["evidence"]["family"] == 6
