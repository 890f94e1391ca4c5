"""Hairpin: can a pod reach itself through its own Service? (the guide's last node-side section)

Traffic from a pod to a Service VIP that DNATs back to the same pod leaves and re-enters the bridge on
the pod's own port. A Linux bridge only sends a frame back out the port it came in on when that port
has hairpin on (kubelet's `hairpin-veth`, the bridge plugin's `hairpinMode`), or when the bridge is
promiscuous (kubelet's `promiscuous-bridge` with kubenet, the bridge plugin's `promiscMode`, which
containerd's default config sets for exactly this). This check states what kubelet does
(hairpin_mode.py), what the active CNI config asks for, and whether the bridges and ports match.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.catalogue import finding
from agent.checks.expected import host_of
from agent.checks.hairpin_mode import CNI, HAIRPIN_VETH, NONE, PROMISCUOUS_BRIDGE, HairpinMode, hairpin_mode
from agent.model import Finding, Severity, Snapshot
from agent.model.cluster import ClusterState
from agent.model.cni import BridgeConf, CniConfig
from agent.model.links import Bridge, BridgePort
from agent.model.views import Views

# Cluster hook -----------------------------------------------------------------------------------------
# Which Services a pod IP backs, and which pod has an IP, come from the cluster source. Without usable
# cluster state these return empty maps: every hairpin finding is then a warning, never critical.

def _cluster(snap: Snapshot) -> ClusterState | None:
    state = snap.cluster.data if snap.cluster.ok else None
    return state if state is not None and state.usable else None


def services_by_endpoint_ip(snap: Snapshot, views: Views) -> dict[str, list[str]] | None:
    """Endpoint IP -> sorted Service ports ("ns/name:port") that kube-proxy NATs to it; None without
    usable cluster state. Headless and ExternalName Services are left out: clients reach those pods
    directly, with no hairpin turn."""
    if _cluster(snap) is None or views.expected is None:
        return None
    found: dict[str, set[str]] = {}
    for port in views.expected:
        for endpoint in port.usable_endpoints:
            found.setdefault(host_of(endpoint), set()).add(port.service)
    return {ip: sorted(names) for ip, names in found.items()}


def pods_by_ip(snap: Snapshot) -> dict[str, str]:
    """Pod IP -> "namespace/pod" for the pods on this node (host-network pods share the node's IPs)."""
    state = _cluster(snap)
    return {ip: f"{p.namespace}/{p.name}" for p in (state.pods if state else []) if not p.host_network
            for ip in p.ips}


def services_backed(pod_ips: list[str], endpoints: dict[str, list[str]] | None) -> list[str]:
    return sorted({svc for ip in pod_ips for svc in (endpoints or {}).get(ip, [])})


def hairpin_severity(services: list[str]) -> Severity:
    """A port that backs a Service endpoint breaks that Service for the pod itself: critical. Otherwise
    (no endpoint, or no cluster state to tell) the pod cannot reach itself only if it ever tries: warning."""
    return "critical" if services else "warning"


# What each bridge needs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Needs:
    hairpin_by: str | None = None  # who requires hairpin on every pod port of this bridge
    promisc_by: str | None = None  # who requires the bridge to be promiscuous


def cni_covers_hairpin(conf: BridgeConf) -> bool:
    return conf.hairpin_mode is True or conf.promisc_mode is True


def bridge_needs(bridge: Bridge, mode: HairpinMode | None, cni: CniConfig | None) -> Needs:
    hairpin_by = promisc_by = None
    if mode is not None and mode.effective == HAIRPIN_VETH:
        hairpin_by = f"kubelet's effective hairpin mode {HAIRPIN_VETH}"
    if mode is not None and mode.effective == PROMISCUOUS_BRIDGE:
        promisc_by = f"kubelet's effective hairpin mode {PROMISCUOUS_BRIDGE}"
    if cni is not None and cni.bridge is not None and cni.bridge.bridge == bridge.name:
        if cni.bridge.hairpin_mode is True and hairpin_by is None:
            hairpin_by = f"{cni.file}: hairpinMode true"
        if cni.bridge.promisc_mode is True and promisc_by is None:
            promisc_by = f"{cni.file}: promiscMode true"
    return Needs(hairpin_by, promisc_by)


def _pod_label(port: BridgePort, pods: dict[str, str]) -> str:
    names = sorted({pods[ip] for ip in port.pod_ips if ip in pods})
    if names:
        return ", ".join(names)
    if port.pod_ips:
        return ", ".join(port.pod_ips)
    return port.peer_netns or "unknown"


def _kubelet_info(snap: Snapshot, mode: HairpinMode) -> Finding:
    log = snap.kubelet_log.data if snap.kubelet_log.ok else None
    if log is None:
        logged = "not read" if snap.kubelet_log.ok else "unreadable"
    else:  # only dockershim-era kubelets log it
        logged = f"{log.mode} ({log.file})" if log.mode else f"no hairpin line in {log.file}"
    return finding("kubelet.hairpin_mode", snap.node, evidence={
        "configured": mode.configured.value, "source": mode.configured.source, "effective": mode.effective,
        "runtime": mode.runtime.name, "runtime_source": mode.runtime.source,
        "network_plugin": mode.network_plugin, "reason": mode.reason, "logged": logged,
        "log_line": log.line if log else None})


def _cni_hairpin(cni: CniConfig, conf: BridgeConf, pod_bridges: list[Bridge],
                 endpoints: dict[str, list[str]] | None) -> Iterator[Finding]:
    """The active bridge config enables neither hairpin nor promisc, and kubelet leaves it to the CNI."""
    if cni_covers_hairpin(conf):
        return
    on_bridge = next((b for b in pod_bridges if b.name == conf.bridge), None)
    if on_bridge is None:
        return
    # "while pods reach their own Services": with cluster state, only pods that back a Service count.
    backing = [p for p in on_bridge.pod_ports() if services_backed(p.pod_ips, endpoints)]
    if endpoints is not None and not backing:
        return
    yield finding("cni.hairpin_disabled", cni.file, evidence={
        "file": cni.file, "bridge": conf.bridge, "via": conf.via,
        "hairpin_mode": "unset" if conf.hairpin_mode is None else str(conf.hairpin_mode).lower(),
        "pod_ports": len(on_bridge.pod_ports()),
        "services": services_backed([ip for p in backing for ip in p.pod_ips], endpoints)})


def _bridge(bridge: Bridge, needs: Needs, endpoints: dict[str, list[str]] | None,
            pods: dict[str, str]) -> Iterator[Finding]:
    if needs.promisc_by and not bridge.promiscuous:
        yield finding("bridge.not_promiscuous", bridge.name, evidence={
            "bridge": bridge.name, "required_by": needs.promisc_by, "pod_ports": len(bridge.pod_ports())})
    if not needs.hairpin_by:
        return
    for port in bridge.pod_ports():
        if port.hairpin is not False:  # on, or not reported by the kernel
            continue
        services = services_backed(port.pod_ips, endpoints)
        yield finding("bridge.hairpin_disabled", port.name, severity=hairpin_severity(services), evidence={
            "bridge": bridge.name, "interface": port.name, "pod": _pod_label(port, pods),
            "pod_ips": port.pod_ips, "services": services,
            "backs": ", ".join(services) if services else "no Service endpoint known",
            "required_by": needs.hairpin_by,
            "file": f"/sys/devices/virtual/net/{bridge.name}/brif/{port.name}/hairpin_mode"})


def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
    kubelet = snap.kubelet
    mode = hairpin_mode(kubelet.data) if kubelet.ok and kubelet.data is not None else None
    if mode is not None:
        yield _kubelet_info(snap, mode)
    cni = snap.cni.data.active if snap.cni.ok and snap.cni.data is not None else None
    if cni is not None and cni.bridge is None:
        yield finding("cni.no_bridge", cni.file, evidence={"file": cni.file, "plugin": cni.main_plugin or ""})
        return  # pods sit on no Linux bridge: hairpin is the CNI's own business
    links = snap.links.data if snap.links.ok else None
    pod_bridges = [b for b in links.bridges if b.pod_ports()] if links is not None else []
    if not pod_bridges:
        return
    endpoints, pods = services_by_endpoint_ip(snap, views), pods_by_ip(snap)
    conf = cni.bridge if cni is not None else None
    if mode is not None and mode.effective == NONE and not (conf and cni_covers_hairpin(conf)):
        yield finding("kubelet.hairpin_mode_none", snap.node, evidence={
            "source": mode.configured.source, "bridges": ", ".join(b.name for b in pod_bridges),
            "pod_ports": sum(len(b.pod_ports()) for b in pod_bridges)})
    if cni is not None and conf is not None and mode is not None and mode.effective == CNI:
        yield from _cni_hairpin(cni, conf, pod_bridges, endpoints)
    for bridge in pod_bridges:
        yield from _bridge(bridge, bridge_needs(bridge, mode, cni), endpoints, pods)
