"""Only the IP families kube-proxy serves on this node are judged (agent/checks/families.py)."""

from __future__ import annotations

import pytest

from agent.checks.families import served_families
from agent.model import Sysctls
from agent.model.links import Bridge, BridgePort, Links
from tests.checks.helpers import found
from tests.snapshots import healthy

N = "test-node"
OFF = Sysctls(values={"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "0",
                      "net/ipv4/conf/all/route_localnet": "1", "net/bridge/bridge-nf-call-iptables": "0",
                      "net/bridge/bridge-nf-call-ip6tables": "0"})
POD = BridgePort(name="veth1", index=5, hairpin=True, peer_netns_id=1, kind="veth", peer_index=2)


def links(*addresses: str) -> Links:
    return Links(bridges=[Bridge(name="cni0", index=4, promiscuous=True, up=True, ports=[POD])],
                 addresses=list(addresses))


@pytest.mark.parametrize(("addresses", "expected"), [
    (("192.168.0.2",), {("node.ip_forward_disabled", N), ("node.bridge_nf_call_iptables_disabled", "cni0")}),
    (("2001:db8::1",), {("node.ipv6_forwarding_disabled", N), ("node.bridge_nf_call_ip6tables_disabled", "cni0")}),
    (("192.168.0.2", "2001:db8::1"), {("node.ip_forward_disabled", N), ("node.ipv6_forwarding_disabled", N),
                                      ("node.bridge_nf_call_iptables_disabled", "cni0"),
                                      ("node.bridge_nf_call_ip6tables_disabled", "cni0")}),
    # Addresses unknown: IPv4 as before; IPv6 is judged only once the node is known to have it.
    ((), {("node.ip_forward_disabled", N), ("node.bridge_nf_call_iptables_disabled", "cni0")}),
])
def test_each_served_family_and_only_those(addresses: tuple[str, ...], expected: set[tuple[str, str]]) -> None:
    assert found(healthy(sysctl=OFF, links=links(*addresses))) == expected


def test_an_ipv6_only_node_is_not_judged_on_ipv4_sysctls() -> None:
    ok6 = Sysctls(values={"net/ipv4/ip_forward": "0", "net/ipv6/conf/all/forwarding": "1",
                          "net/ipv4/conf/all/route_localnet": "0", "net/bridge/bridge-nf-call-ip6tables": "1"})
    assert found(healthy(sysctl=ok6, links=links("2001:db8::1"))) == set()


def test_families_from_the_node_object_when_links_are_unread() -> None:
    from agent.model import Source
    from agent.model.cluster import ClusterState, NodeSpec

    state = ClusterState(origin="t", fetched_at=0, node=NodeSpec("test-node", addresses=["2001:db8::1"]))
    snap = healthy(links=Source("links", ok=False, error="denied"), cluster=Source("cluster", ok=True, data=state))
    assert served_families(snap) == frozenset({6})


@pytest.mark.parametrize(("addresses", "judged"), [
    (("192.168.0.2",), [4]),
    (("192.168.0.2", "2001:db8::1"), [4, 6]),
    ((), [4]),  # not known: only the families with kube-proxy's rules, as before
])
def test_an_ipv6_save_without_kube_proxys_chains_is_looked_at_only_where_ipv6_is_served(
        addresses: tuple[str, ...], judged: list[int]) -> None:
    """ip6tables read whole but empty of kube-proxy's chains: on a node with an IPv6 address kube-proxy's IPv6
    proxier should have written there, so its Services count as read (and missing); elsewhere not looked at."""
    from agent.checks.mode import decide_mode
    from agent.checks.programmed import programmed
    from agent.model import Source
    from agent.model.iptables import IptablesState, RuleSet

    ipt = IptablesState(backend="nft", backend_reason="t", rulesets=(RuleSet(family=4),), families_read=(4, 6))
    snap = healthy(links=links(*addresses), iptables=Source("iptables", ok=True, data=ipt))
    view = programmed(snap, decide_mode(snap), ())
    assert view is not None and view.families == judged
