"""What to probe, and the only addresses a probe may go to. Pure functions over the cluster model and
kubelet's settings: agent/collect/probes.py sends what these choose."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.kubeobjects import parse_ip_sloppy
from agent.model import ProcessInfo
from agent.model.cluster import ClusterState, ServicePortSpec, ServiceSpec, SliceSpec
from agent.model.probes import CLUSTER_IP, DNS, ENDPOINT, KUBERNETES, Target
from agent.settings import pick

DNS_PORT = 53
MAX_ENDPOINTS_PER_PORT = 8  # explain probes a few pods per port, not a 500-pod Deployment


@dataclass(frozen=True)
class DnsConfig:
    """kubelet's DNS settings: what it hands to pods."""

    servers: list[str] = field(default_factory=list)  # clusterDNS: the cluster DNS Service IPs
    domain: str = "cluster.local"
    resolv_conf: str = "/etc/resolv.conf"  # the file pods with dnsPolicy Default get (CoreDNS among them)
    source: str = "default"  # where servers came from


def kubelet_dns(proc: ProcessInfo | None) -> DnsConfig:
    servers = pick(proc, "cluster-dns", "clusterDNS", [])
    raw = servers.value if isinstance(servers.value, list) else str(servers.value).split(",")
    ips = [ip for ip in (parse_ip_sloppy(str(v)) for v in raw if str(v).strip()) if ip is not None]
    domain = str(pick(proc, "cluster-domain", "clusterDomain", "cluster.local").value).strip(".") or "cluster.local"
    resolv = pick(proc, "resolv-conf", "resolvConf", "/etc/resolv.conf")
    return DnsConfig(servers=ips, domain=domain, resolv_conf=str(resolv.value),
                     source=servers.source if ips else "kubelet's clusterDNS unknown")


def fqdn(svc_ns: str, svc_name: str, domain: str) -> str:
    return f"{svc_name}.{svc_ns}.svc.{domain}"


def allowed_addresses(state: ClusterState, dns: DnsConfig) -> frozenset[str]:
    """Every ClusterIP and endpoint IP the API server names, and the cluster DNS Service IPs."""
    out = set(dns.servers)
    for svc in state.services:
        out.update(ip for ip in svc.cluster_ips if ip not in ("None", ""))
    for sl in state.slices:
        if sl.address_type != "FQDN":
            out.update(ep.address for ep in sl.endpoints)
    return frozenset(out)


def _qtype(address: str) -> str:
    return "AAAA" if ":" in address else "A"


def _port_target(kind: str, address: str, port: int, protocol: str, subject: str, dns: DnsConfig) -> Target | None:
    """TCP: a connect. UDP only where the protocol answers: DNS on 53. Anything else is not probed."""
    if protocol == "TCP":
        return Target(kind, address, port, subject=subject)
    if protocol == "UDP" and port == DNS_PORT:
        return Target(kind, address, port, subject=subject, name=fqdn("default", "kubernetes", dns.domain),
                      qtype="A")
    return None


def cluster_ips(svc: ServiceSpec) -> list[str]:
    return [ip for ip in svc.cluster_ips if ip not in ("None", "")]


def slice_port(sl: SliceSpec, sp: ServicePortSpec) -> int | None:
    """The endpoint port of a Service port in one slice (matched by port name and protocol, as kube-proxy)."""
    return next((p.port for p in sl.ports if p.name == sp.name and p.protocol == sp.protocol), None)


def service_targets(svc: ServiceSpec, ports: list[ServicePortSpec], slices: list[SliceSpec],
                    dns: DnsConfig) -> list[Target]:
    """explain's probes: the Service's name and kubernetes.default at the cluster DNS, each ClusterIP:port,
    and a few endpoints per port by IP:targetPort."""
    subject = f"{svc.namespace}/{svc.name}"
    out: list[Target] = []
    for server in dns.servers[:1]:
        want = _qtype(cluster_ips(svc)[0]) if cluster_ips(svc) else "A"
        out.append(Target(DNS, server, DNS_PORT, subject=subject, name=fqdn(svc.namespace, svc.name, dns.domain),
                          qtype=want))
        out.append(Target(DNS, server, DNS_PORT, subject="default/kubernetes",
                          name=fqdn("default", "kubernetes", dns.domain), qtype=_qtype(server)))
    for sp in ports:
        port_subject = f"{subject}:{sp.name}" if sp.name else subject
        for ip in cluster_ips(svc):
            t = _port_target(CLUSTER_IP, ip, sp.port, sp.protocol, port_subject, dns)
            if t is not None:
                out.append(t)
        seen: set[tuple[str, int]] = set()
        for sl in slices:
            port = slice_port(sl, sp)
            if port is None or sl.address_type == "FQDN":
                continue
            for ep in sl.endpoints:
                if (ep.address, port) in seen or len(seen) >= MAX_ENDPOINTS_PER_PORT or not ep.serving:
                    continue
                seen.add((ep.address, port))
                t = _port_target(ENDPOINT, ep.address, port, sp.protocol, port_subject, dns)
                if t is not None:
                    out.append(t)
    return out


def node_targets(state: ClusterState, node: str, dns: DnsConfig) -> list[Target]:
    """serve's continuous set: kubernetes.default by name at each cluster DNS server and by ClusterIP, then
    every ready endpoint on this node (is something listening on targetPort). In that order, so the per-run
    cap never crowds out the DNS and API server probes."""
    out: list[Target] = []
    services = {(s.namespace, s.name): s for s in state.services}
    seen: set[tuple[str, int]] = set()
    for sl in state.slices:
        svc = services.get((sl.namespace, sl.service))
        if svc is None or sl.address_type == "FQDN":
            continue
        for sp in svc.ports:
            port = slice_port(sl, sp)
            if port is None:
                continue
            subject = f"{svc.namespace}/{svc.name}:{sp.name}" if sp.name else f"{svc.namespace}/{svc.name}"
            for ep in sl.endpoints:
                if ep.node_name != node or not ep.ready or (ep.address, port) in seen:
                    continue
                seen.add((ep.address, port))
                t = _port_target(ENDPOINT, ep.address, port, sp.protocol, subject, dns)
                if t is not None:
                    out.append(t)
    head = [Target(DNS, server, DNS_PORT, subject="cluster DNS", name=fqdn("default", "kubernetes", dns.domain),
                   qtype=_qtype(server)) for server in dns.servers]
    kubernetes = services.get(("default", "kubernetes"))
    if kubernetes is not None and kubernetes.ports:
        sp = next((p for p in kubernetes.ports if p.name == "https"), kubernetes.ports[0])
        head += [Target(KUBERNETES, ip, sp.port, subject="default/kubernetes") for ip in cluster_ips(kubernetes)]
    return head + out
