"""Is IPVS mode able to serve? (the guide's `ipvsadm -ln` step)

Only judged when kube-proxy runs in IPVS mode (another mode's IPVS leftovers are
kube_proxy.stale_mode_rules): the kernel has IPVS, kube-ipvs0 exists, every virtual server on a
Service VIP has that VIP on kube-ipvs0 (IPVS only sees traffic to an address the node owns), and every
ClusterIP:port with a virtual server is in KUBE-CLUSTER-IP (kube-proxy's iptables rules match on it).
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.mode import decide_mode
from agent.checks.programmed_ipvs import service_port_name
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState
from agent.model.ipvs import CLUSTER_IP_SET, EXTERNAL_IP_SET, INTERFACE, LOAD_BALANCER_SET, IpvsState


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.ipvs
    if not src.ok or src.data is None or decide_mode(snap).mode != "ipvs":
        return
    state = src.data
    if not state.kernel_available:
        yield finding("ipvs.kernel_unavailable", snap.node, evidence={"why": state.kernel_error or "unknown"})
        return
    if not state.interface_present:
        yield finding("ipvs.interface_missing", snap.node, evidence={
            "interface": INTERFACE, "virtual_servers": len(state.virtual_servers)})
    cluster = snap.cluster.data if snap.cluster.ok else None
    yield from _vips_not_bound(snap, state, cluster)
    if cluster is not None and state.ipset_error is None:  # a failed `ipset save` shows no set missing
        yield from _cluster_ip_set(state, cluster)


def _vips(state: IpvsState, cluster: ClusterState | None) -> dict[str, str]:
    """Service VIP -> the Service port that owns it ("" when only kube-proxy's ipsets say it is a VIP)."""
    out: dict[str, str] = {}
    for set_name in (CLUSTER_IP_SET, EXTERNAL_IP_SET, LOAD_BALANCER_SET):
        for member in state.ipsets.get(set_name, []):
            out.setdefault(member.split(",", 1)[0], "")
    for svc in cluster.services if cluster else []:
        for ip in [*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips]:
            if ip and ip != "None" and svc.ports:
                out[ip] = service_port_name(svc.namespace, svc.name, svc.ports[0].name)
    return out


def _vips_not_bound(snap: Snapshot, state: IpvsState, cluster: ClusterState | None) -> Iterator[Finding]:
    if not state.interface_present:
        return  # interface_missing says it for all of them
    vips = _vips(state, cluster)
    bound = set(state.interface_addresses)
    seen: set[str] = set()
    for vs in state.virtual_servers:
        if vs.ip in vips and vs.ip not in bound and vs.ip not in seen:
            seen.add(vs.ip)
            service = vips[vs.ip] or None
            yield finding("ipvs.vip_not_bound", service or vs.ip, service=service, evidence={
                "address": vs.ip, "virtual_server": f"{vs.protocol.upper()} {vs.address}", "interface": INTERFACE,
                "bound": len(bound)})


def _cluster_ip_set(state: IpvsState, cluster: ClusterState) -> Iterator[Finding]:
    members = set(state.ipsets.get(CLUSTER_IP_SET, []))
    with_vs = {(vs.ip, vs.protocol, vs.port) for vs in state.virtual_servers}
    for svc in cluster.services:
        for p in svc.ports:
            for ip in svc.cluster_ips:
                proto = p.protocol.lower()
                entry = f"{ip},{proto}:{p.port}"
                if (ip, proto, p.port) in with_vs and entry not in members:
                    service = service_port_name(svc.namespace, svc.name, p.name)
                    yield finding("ipvs.ipset_missing", service, service=service, evidence={
                        "set": CLUSTER_IP_SET, "entry": entry,
                        "set_exists": CLUSTER_IP_SET in state.ipsets, "set_size": len(members)})
