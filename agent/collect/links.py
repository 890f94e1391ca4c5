"""Links over rtnetlink (pyroute2): bridges, their PROMISC flag, their ports and each port's hairpin.

Netlink rather than parsing `ip` output or walking /sys: one dump gives every link, and an AF_BRIDGE
dump gives each port's IFLA_BRPORT_MODE (hairpin) without one sysfs read per port.
"""

from __future__ import annotations

import socket

from pyroute2 import IPRoute

from agent.collect.base import CollectContext
from agent.model.links import Bridge, BridgePort, Links

IFF_UP = 0x1
IFF_PROMISC = 0x100


def collect(ctx: CollectContext) -> Links:
    with IPRoute() as ipr:
        links = list(ipr.link("dump"))
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
    for msg in links:
        master = msg.get("IFLA_MASTER")
        if master is not None and int(master) in bridges:
            index = int(msg["index"])
            bridges[int(master)].ports.append(BridgePort(
                name=str(msg.get("IFLA_IFNAME")), index=index, hairpin=hairpin.get(index),
                peer_netns_id=msg.get("IFLA_LINK_NETNSID"),
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
            ))
    return Links(bridges=sorted(bridges.values(), key=lambda b: b.name), interfaces=sorted(names))
