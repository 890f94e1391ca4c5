"""Links over rtnetlink (pyroute2): bridges, their PROMISC flag, their ports, each port's hairpin, and
the pod on the far side of each veth port.

Netlink rather than parsing `ip` output or walking /sys: one dump gives every link, and an AF_BRIDGE
dump gives each port's IFLA_BRPORT_MODE (hairpin) without one sysfs read per port.

The far end of each veth port (which pod it is) is resolved in agent/collect/veth_peers.py.
"""

from __future__ import annotations

import socket
from typing import Any

from agent.collect import veth_peers
from agent.collect.base import CollectContext
from agent.model.links import Bridge, BridgePort, Links
from agent.pyroute2_parts import IPRoute

IFF_UP = 0x1
IFF_PROMISC = 0x100


def _same_namespace_peer(port: BridgePort, links: list[Any], addrs: list[Any]) -> None:
    """Both ends of the veth are here (not a pod, but say where it goes)."""
    peer = next((m for m in links if int(m["index"]) == port.peer_index), None)
    if peer is None:
        return
    port.peer_name, port.peer_netns = str(peer.get("IFLA_IFNAME")), "this network namespace"
    port.pod_ips = sorted(str(m.get("IFA_ADDRESS")) for m in addrs
                          if int(m["index"]) == port.peer_index and m.get("IFA_ADDRESS") is not None)


def collect(ctx: CollectContext) -> Links:
    with IPRoute() as ipr:
        links = list(ipr.link("dump"))
        addrs = list(ipr.addr("dump"))
        hairpin = {
            int(msg["index"]): bool(mode)
            for msg in ipr.link("dump", family=socket.AF_BRIDGE)
            if (mode := msg.get_nested("IFLA_PROTINFO", "IFLA_BRPORT_MODE")) is not None
        }
        bridges: dict[int, Bridge] = {}
        names: list[str] = []
        for msg in links:
            name = str(msg.get("IFLA_IFNAME"))
            names.append(name)
            if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge":
                flags = int(msg["flags"])
                bridges[int(msg["index"])] = Bridge(name=name, index=int(msg["index"]),
                                                    promiscuous=bool(flags & IFF_PROMISC), up=bool(flags & IFF_UP))
        ports: list[BridgePort] = []
        for msg in links:
            master = msg.get("IFLA_MASTER")
            if master is None or int(master) not in bridges:
                continue
            index = int(msg["index"])
            link = msg.get("IFLA_LINK")
            port = BridgePort(
                name=str(msg.get("IFLA_IFNAME")), index=index, hairpin=hairpin.get(index),
                peer_netns_id=msg.get("IFLA_LINK_NETNSID"),
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                peer_index=int(link) if link is not None and int(link) != index else None,
            )
            bridges[int(master)].ports.append(port)
            ports.append(port)
        veths = [p for p in ports if p.kind == "veth" and p.peer_index is not None]
        for p in veths:
            if p.peer_netns_id is None:
                _same_namespace_peer(p, links, addrs)
        scanned = veth_peers.resolve(ctx, ipr, [p for p in veths if p.peer_netns_id is not None])
    for b in bridges.values():
        b.ports.sort(key=lambda p: p.name)
    return Links(bridges=sorted(bridges.values(), key=lambda b: b.name), interfaces=sorted(names),
                 netns_scanned=scanned, addresses=node_addresses(links, addrs))


SCOPE_UNIVERSE = 0
VIP_INTERFACES = ("kube-ipvs0",)  # IPVS mode binds every ClusterIP here: Service addresses, not the node's


def node_addresses(links: list[Any], addrs: list[Any]) -> list[str]:
    """The node's global-scope addresses: which IP families it has (kube-proxy serves a family when the
    node has an address of it). Link-local and host-scope addresses say nothing about that."""
    vip_links = {int(m["index"]) for m in links if m.get("IFLA_IFNAME") in VIP_INTERFACES}
    return sorted({str(m.get("IFA_ADDRESS")) for m in addrs
                   if m.get("scope") == SCOPE_UNIVERSE and int(m["index"]) not in vip_links
                   and m.get("IFA_ADDRESS") is not None})
