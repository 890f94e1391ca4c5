"""What kube-proxy's IPVS mode programmed, per Service port, in the mode-independent form of
agent/model/programmed.py.

A virtual server is one dispatch (ClusterIP, externalIP, LoadBalancer IP, or a NodePort on one node
IP); its real servers are the endpoints. IPVS carries no Service names, so the API server's view
(`cluster`) ties a virtual server to its Service port; without it the kind comes from kube-proxy's
ipsets and the port is named after the address. Weight-0 real servers are endpoints kube-proxy is
draining (terminating): listed as evidence, not as programmed endpoints. A virtual server without
real servers answers ICMP port unreachable (ip_vs_leave): a REJECT.
"""

from __future__ import annotations

from agent.model.cluster import ClusterState
from agent.model.ipvs import CLUSTER_IP_SET, EXTERNAL_IP_SET, LOAD_BALANCER_SET, IpvsState, VirtualServer
from agent.model.programmed import (
    CLUSTER_IP,
    EXTERNAL_IP,
    LOAD_BALANCER_IP,
    NODE_PORT,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ProgrammedPort,
    ProgrammedServices,
)

VipKey = tuple[str, str, int]  # (ip, protocol, port)


def service_port_name(namespace: str, name: str, port_name: str) -> str:
    return f"{namespace}/{name}:{port_name}" if port_name else f"{namespace}/{name}"


def _cluster_index(cluster: ClusterState | None) -> tuple[dict[VipKey, tuple[str, str]], dict[tuple[str, int], str]]:
    vips: dict[VipKey, tuple[str, str]] = {}
    node_ports: dict[tuple[str, int], str] = {}
    for svc in cluster.services if cluster else []:
        for p in svc.ports:
            name, proto = service_port_name(svc.namespace, svc.name, p.name), p.protocol.lower()
            for ips, kind in ((svc.cluster_ips, CLUSTER_IP), (svc.external_ips, EXTERNAL_IP),
                              (svc.load_balancer_ips, LOAD_BALANCER_IP)):
                for ip in ips:
                    if ip and ip != "None":
                        vips[(ip, proto, p.port)] = (name, kind)
            if p.node_port:
                node_ports[(proto, p.node_port)] = name
    return vips, node_ports


def _ipset_kinds(state: IpvsState) -> dict[VipKey, str]:
    """"172.30.0.41,tcp:80" members of kube-proxy's sets -> the dispatch kind."""
    kinds: dict[VipKey, str] = {}
    for set_name, kind in ((CLUSTER_IP_SET, CLUSTER_IP), (EXTERNAL_IP_SET, EXTERNAL_IP),
                           (LOAD_BALANCER_SET, LOAD_BALANCER_IP)):
        for member in state.ipsets.get(set_name, []):
            ip, _, rest = member.partition(",")
            proto, _, port = rest.partition(":")
            if port.isdigit():
                kinds[(ip, proto, int(port))] = kind
    return kinds


def _identify(vs: VirtualServer, state: IpvsState, vips: dict[VipKey, tuple[str, str]],
              node_ports: dict[tuple[str, int], str], set_kinds: dict[VipKey, str]) -> tuple[str, str, str]:
    """(service port name, dispatch kind, dispatch address) of one virtual server."""
    key = (vs.ip, vs.protocol, vs.port)
    if key in vips:
        name, kind = vips[key]
        return name, kind, vs.address
    bound = vs.ip in state.interface_addresses
    if not bound and key not in set_kinds and (vs.protocol, vs.port) in node_ports:
        return node_ports[(vs.protocol, vs.port)], NODE_PORT, f":{vs.port}"
    kind = set_kinds.get(key) or (CLUSTER_IP if bound else NODE_PORT)
    address = f":{vs.port}" if kind == NODE_PORT else vs.address
    return f"?/{vs.protocol}/{vs.address}", kind, address  # no Service known for it: named by address


def programmed_ports(state: IpvsState, cluster: ClusterState | None = None) -> list[ProgrammedPort]:
    vips, node_ports = _cluster_index(cluster)
    set_kinds = _ipset_kinds(state)
    ports: dict[tuple[str, str, int], ProgrammedPort] = {}
    node_port_ips: dict[tuple[str, str, int, str], set[str]] = {}  # (port key + address) -> node IPs with a VS
    for vs in state.virtual_servers:
        if vs.fwmark is not None:
            continue  # kube-proxy does not program firewall-mark services
        name, kind, address = _identify(vs, state, vips, node_ports, set_kinds)
        port = ports.setdefault((name, vs.protocol, vs.family),
                                ProgrammedPort(service=name, protocol=vs.protocol, family=vs.family, endpoints=[]))
        active = sorted(rs.address for rs in vs.real_servers if rs.weight > 0)
        draining = sorted(rs.address for rs in vs.real_servers if rs.weight == 0)
        action = TO_SERVICE if vs.real_servers else REJECT
        evidence = f"{vs.protocol.upper()} {vs.address} {vs.scheduler}: {len(active)} real server(s)"
        if kind == NODE_PORT:
            node_port_ips.setdefault((name, vs.protocol, vs.family, address), set()).add(vs.ip)
        if not any(d.kind == kind and d.address == address and d.action == action for d in port.dispatch):
            port.dispatch.append(Dispatch(kind, address, action, evidence))
        port.endpoints = sorted(set(port.endpoints) | set(active))
        if draining:
            port.evidence["terminating"] = ", ".join(sorted(set(draining) | set(
                filter(None, port.evidence.get("terminating", "").split(", ")))))
        if vs.persistent_seconds is not None:
            port.affinity_seconds = vs.persistent_seconds
        port.evidence.setdefault("virtual_server", f"{vs.protocol.upper()} {vs.address}")
    _require_every_node_ip(ports, node_port_ips)
    return list(ports.values())


def _require_every_node_ip(ports: dict[tuple[str, str, int], ProgrammedPort],
                           node_port_ips: dict[tuple[str, str, int, str], set[str]]) -> None:
    """kube-proxy gives a NodePort a virtual server on every node IP it serves NodePorts on (the IPs
    that hold any NodePort virtual server). A NodePort missing on one of them counts as not programmed:
    its dispatch is left out, so the comparison reports it, with the IPs in the port's evidence."""
    all_ips: dict[int, set[str]] = {}
    for (_, _, family, _), ips in node_port_ips.items():
        all_ips.setdefault(family, set()).update(ips)
    for (name, proto, family, address), ips in node_port_ips.items():
        missing = all_ips[family] - ips
        if missing:
            port = ports[(name, proto, family)]
            port.dispatch = [d for d in port.dispatch if not (d.kind == NODE_PORT and d.address == address)]
            port.evidence[f"node_port{address}_missing_on"] = ", ".join(sorted(missing))


def programmed_services(state: IpvsState, cluster: ClusterState | None = None) -> ProgrammedServices:
    """programmed_ports; one IPVS dump holds both families, so both were looked at."""
    return ProgrammedServices("ipvs", programmed_ports(state, cluster), families=[4, 6])
