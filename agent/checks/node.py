"""Node prerequisites that Service traffic depends on: forwarding, bridge netfilter, route_localnet."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.mode import decide_mode
from agent.model import Finding, Snapshot
from agent.settings import as_bool, cidr_includes_loopback, config_unknown, kube_proxy_settings


def _serves_localhost_nodeports(snap: Snapshot) -> bool:
    proc = snap.kube_proxy.data
    if proc is None or decide_mode(snap).mode != "iptables":
        return False  # only the iptables proxier DNATs 127.0.0.1:NodePort
    settings = kube_proxy_settings(proc)
    if config_unknown(proc) and settings.localhost_nodeports.source == "default":
        return False  # kube-proxy's config is unread: its default is a guess, not a reason for a finding
    if not as_bool(settings.localhost_nodeports.value):
        return False
    addrs = settings.nodeport_addresses.value
    return not addrs or any(cidr_includes_loopback(str(cidr)) for cidr in addrs)


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.sysctl
    if not src.ok or src.data is None:
        return
    values = src.data.values
    if values.get("net/ipv4/ip_forward") == "0":
        yield finding("node.ip_forward_disabled", snap.node,
                      evidence={"file": "/proc/sys/net/ipv4/ip_forward", "value": "0"})
    links = snap.links.data
    bridges_with_ports = [b for b in links.bridges if b.ports] if links else []
    bnf = values.get("net/bridge/bridge-nf-call-iptables")
    if bridges_with_ports and bnf != "1":
        yield finding("node.bridge_nf_call_iptables_disabled", bridges_with_ports[0].name, evidence={
            "bridge": bridges_with_ports[0].name, "ports": len(bridges_with_ports[0].ports),
            "file": "/proc/sys/net/bridge/bridge-nf-call-iptables",
            "value": bnf if bnf is not None else "absent (br_netfilter not loaded)"})
    rl = values.get("net/ipv4/conf/all/route_localnet")
    if rl is not None and rl != "1" and _serves_localhost_nodeports(snap):
        yield finding("node.route_localnet_disabled", snap.node,
                      evidence={"file": "/proc/sys/net/ipv4/conf/all/route_localnet", "value": rl})
