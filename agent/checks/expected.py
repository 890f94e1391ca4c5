"""What kube-proxy on this node should have programmed, per Service port and IP family.

Follows kube-proxy's own rules: pkg/proxy/endpointslicecache.go (merge a Service's slices, first
address of each endpoint) and pkg/proxy/topology.go CategorizeEndpoints (ready endpoints, else
serving-and-terminating ones; traffic policy Local uses only this node's endpoints), and the proxiers'
choice between jumping to the Service, REJECT "has no endpoints" and DROP "has no local endpoints".
Pure functions over the compact cluster model; no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agent.model.cluster import ClusterState, EndpointSpec, ServicePortSpec, ServiceSpec, SliceSpec
from agent.model.programmed import (
    CLUSTER_IP,
    DROP,
    EXTERNAL_IP,
    LOAD_BALANCER_IP,
    NODE_PORT,
    REJECT,
    TO_SERVICE,
    ExpectedPort,
)


def port_name(ns: str, name: str, port: str) -> str:
    return f"{ns}/{name}:{port}" if port else f"{ns}/{name}"


def family_of(ip: str) -> int:
    return 6 if ":" in ip else 4


def hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def host_of(addr: str) -> str:
    """The IP of an "ip:port" / "[ip]:port" endpoint or dispatch address (the inverse of hostport)."""
    return addr.rsplit(":", 1)[0].strip("[]")


def skipped(svc: ServiceSpec) -> bool:
    """kube-proxy's ShouldSkipService: headless, ExternalName and IP-less Services get no rules."""
    return svc.type == "ExternalName" or not svc.cluster_ips or svc.cluster_ips[0] in ("None", "")


def _externally_accessible(svc: ServiceSpec, sp: ServicePortSpec) -> bool:
    return bool(sp.node_port) or bool(svc.external_ips) or bool(svc.load_balancer_ips)


@dataclass
class _Ep:
    addr: str  # ip:port
    spec: EndpointSpec


SlicesByService = dict[tuple[str, str], list[SliceSpec]]


def _endpoints_for(slices: SlicesByService, svc: ServiceSpec, sp: ServicePortSpec, family: int) -> list[_Ep]:
    want_type = "IPv6" if family == 6 else "IPv4"
    seen: dict[str, _Ep] = {}
    for sl in slices.get((svc.namespace, svc.name), ()):
        if sl.address_type != want_type:
            continue
        ports = [p for p in sl.ports if p.name == sp.name and p.protocol == sp.protocol]
        if not ports:
            continue
        for ep in sl.endpoints:
            addr = hostport(ep.address, ports[0].port)
            seen.setdefault(addr, _Ep(addr, ep))
    return list(seen.values())


def _categorize(svc: ServiceSpec, sp: ServicePortSpec, eps: list[_Ep], node: str
                ) -> tuple[set[str] | None, set[str] | None, bool, set[str]]:
    """(cluster endpoints, local endpoints, has any usable endpoint, usable endpoints) as CategorizeEndpoints."""
    external = _externally_accessible(svc, sp)
    ext_local = external and svc.external_traffic_policy == "Local"
    int_local = svc.internal_traffic_policy == "Local"
    uses_cluster = not int_local or (external and not ext_local)
    uses_local = int_local or ext_local

    def local(e: _Ep) -> bool:
        return e.spec.node_name is not None and e.spec.node_name == node

    ready = {e.addr for e in eps if e.spec.ready}
    serving_term = {e.addr for e in eps if not e.spec.ready and e.spec.serving and e.spec.terminating}
    usable = ready or serving_term
    cluster: set[str] | None = None
    has_any = False
    if uses_cluster:
        cluster = set(ready) or set(serving_term)
        has_any = bool(cluster)
    local_eps: set[str] | None = None
    if uses_local:
        has_any = has_any or bool(ready) or bool(serving_term)
        local_ready = {e.addr for e in eps if local(e) and e.spec.ready}
        local_term = {e.addr for e in eps if local(e) and not e.spec.ready and e.spec.serving and e.spec.terminating}
        local_eps = local_ready or local_term
    return cluster, local_eps, has_any, usable


def normalise_range(text: str) -> str | None:
    """A loadBalancerSourceRanges entry as kube-proxy uses it (spaces trimmed), in the form rules print it
    ("203.0.113.0/25"; a host without its /32 or /128, as the iptables reader keeps it); None: not a CIDR."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def expected_ports(state: ClusterState, node: str, *, localhost_nodeports: bool = False) -> list[ExpectedPort]:
    """`localhost_nodeports`: kube-proxy (iptables mode) also accepts NodePorts on 127.0.0.1 (IPv4 only)."""
    out: list[ExpectedPort] = []
    last_by_service: dict[tuple[str, str], float] = {}
    slices: SlicesByService = {}
    for sl in state.slices:
        slices.setdefault((sl.namespace, sl.service), []).append(sl)
        if sl.last_change is not None:
            key = (sl.namespace, sl.service)
            last_by_service[key] = max(last_by_service.get(key, 0.0), sl.last_change)
    for svc in state.services:
        if skipped(svc):
            continue
        for sp in svc.ports:
            for family in sorted({family_of(ip) for ip in svc.cluster_ips}):
                exp = _expect(slices, svc, sp, family, node, last_by_service)
                exp.localhost_node_port = localhost_nodeports and family == 4 and bool(sp.node_port)
                out.append(exp)
    return out


def _expect(slices: SlicesByService, svc: ServiceSpec, sp: ServicePortSpec, family: int, node: str,
            last_by_service: dict[tuple[str, str], float]) -> ExpectedPort:
    eps = _endpoints_for(slices, svc, sp, family)
    cluster, local, has_any, usable = _categorize(svc, sp, eps, node)
    int_local = svc.internal_traffic_policy == "Local"
    ext_local = _externally_accessible(svc, sp) and svc.external_traffic_policy == "Local"
    has_internal = has_any and not (int_local and not local)
    has_external = has_any and not (ext_local and not local)

    def action(has: bool) -> str:
        return TO_SERVICE if has else (REJECT if not has_any else DROP)

    exp = ExpectedPort(
        service=port_name(svc.namespace, svc.name, sp.name), namespace=svc.namespace, name=svc.name,
        port_name=sp.name, protocol=sp.protocol.lower(), family=family,
        cluster_endpoints=cluster, local_endpoints=local, usable_endpoints=usable,
        topology_filtered=svc.topology_aware and any(e.spec.hint_zones for e in eps),
        affinity_seconds=svc.session_affinity_seconds,
        last_change=max([t for t in (svc.last_change, last_by_service.get((svc.namespace, svc.name)))
                         if t is not None], default=None),
    )
    for ip in svc.cluster_ips:
        if family_of(ip) == family:
            exp.dispatch[(CLUSTER_IP, hostport(ip, sp.port))] = action(has_internal)
    for ip in svc.external_ips:
        if family_of(ip) == family:
            exp.dispatch[(EXTERNAL_IP, hostport(ip, sp.port))] = action(has_external)
    for ip in svc.load_balancer_ips:
        if family_of(ip) == family:
            exp.dispatch[(LOAD_BALANCER_IP, hostport(ip, sp.port))] = action(has_external)
    if sp.node_port:
        exp.dispatch[(NODE_PORT, f":{sp.node_port}")] = action(has_external)
    # kube-proxy writes the dispatch rules whenever some endpoint is reachable from this node (pods and node-local
    # clients short-circuit to the cluster-wide endpoints), and the DROP for outside clients beside them.
    reachable = bool(cluster) or bool(local)
    exp.short_circuit = {key for key, act in exp.dispatch.items() if act == DROP and key[0] != CLUSTER_IP
                         and reachable}
    # loadBalancerSourceRanges: kube-proxy firewalls the LB addresses only while the Service takes external traffic
    lb_dispatched = any(act == TO_SERVICE for (kind, _), act in exp.dispatch.items() if kind == LOAD_BALANCER_IP)
    if lb_dispatched:
        ranges = [r for r in map(normalise_range, svc.load_balancer_source_ranges) if r is not None]
        exp.source_ranges = sorted({r for r in ranges if family_of(r) == family})
    return exp
