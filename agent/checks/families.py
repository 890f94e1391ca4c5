"""Which IP families kube-proxy serves on this node, so that only those are judged.

kube-proxy runs a proxier for a family when the node has an address of it: an IPv6-only node has no IPv4
rules or IPv4 sysctls to judge, and a dual-stack node has both. The node's own addresses come from the
links source; the Node object's addresses stand in when links could not be read. None: not known, and
callers keep to what is safe without it.
"""

from __future__ import annotations

import ipaddress

from agent.model import Snapshot


def served_families(snap: Snapshot) -> frozenset[int] | None:
    links = snap.links.data if snap.links.ok else None
    addresses: list[str] = list(links.addresses) if links is not None else []
    if not addresses:
        cluster = snap.cluster.data if snap.cluster.ok else None
        if cluster is not None and cluster.node is not None:
            addresses = list(cluster.node.addresses)
    families = frozenset(ipaddress.ip_address(a).version for a in addresses if _is_ip(a))
    return families or None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
