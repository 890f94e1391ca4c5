"""Does kube-proxy on this node accept NodePorts on 127.0.0.1 (its `-d 127.0.0.0/8` KUBE-NODEPORTS twins)?

Only the iptables proxier does, for IPv4, when `localhostNodePorts` is on (the default) and
`nodePortAddresses` is empty or includes a loopback range (kube-proxy's proxier.go).
"""

from __future__ import annotations

from agent.model import Snapshot
from agent.settings import as_bool, cidr_includes_loopback, kube_proxy_settings


def serves_localhost_nodeports(snap: Snapshot, mode: str | None) -> bool:
    proc = snap.kube_proxy.data if snap.kube_proxy.ok else None
    if proc is None or mode != "iptables":
        return False
    settings = kube_proxy_settings(proc)
    if not as_bool(settings.localhost_nodeports.value):
        return False
    addrs = settings.nodeport_addresses.value
    return not addrs or any(cidr_includes_loopback(str(cidr)) for cidr in addrs)
