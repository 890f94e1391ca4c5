"""Node prerequisites that Service traffic depends on: forwarding, bridge netfilter, route_localnet, for
each IP family kube-proxy serves here (agent/checks/families.py)."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.families import served_families
from agent.checks.localhost_nodeports import serves_localhost_nodeports
from agent.checks.mode import decide_mode
from agent.model import Finding, Snapshot
from agent.model.links import Bridge
from agent.settings import config_unknown, kube_proxy_settings


def _serves_localhost_nodeports(snap: Snapshot) -> bool:
    proc = snap.kube_proxy.data
    if proc is None:
        return False
    if config_unknown(proc) and kube_proxy_settings(proc).localhost_nodeports.source == "default":
        return False  # kube-proxy's config is unread: its default is a guess, not a reason for a finding
    return serves_localhost_nodeports(snap, decide_mode(snap).mode)


def _bridge_nf(snap: Snapshot, values: dict[str, str | None], bridge: Bridge, family: int) -> Iterator[Finding]:
    """Pods on a bridge reach Services through kube-proxy's rules only if bridged traffic passes netfilter."""
    key = "bridge-nf-call-iptables" if family == 4 else "bridge-nf-call-ip6tables"
    value = values.get(f"net/bridge/{key}")
    if value == "1":
        return
    evidence = {"bridge": bridge.name, "ports": len(bridge.ports), "file": f"/proc/sys/net/bridge/{key}",
                "value": value if value is not None else "absent (br_netfilter not loaded)"}
    if family == 4:
        yield finding("node.bridge_nf_call_iptables_disabled", bridge.name, evidence=evidence)
    else:
        yield finding("node.bridge_nf_call_ip6tables_disabled", bridge.name, evidence=evidence)


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.sysctl
    if not src.ok or src.data is None:
        return
    values = src.data.values
    families = served_families(snap)
    ipv4 = families is None or 4 in families  # unknown: IPv4, as every node but an IPv6-only one has it
    ipv6 = families is not None and 6 in families  # judged only once the node is known to have IPv6
    if ipv4 and values.get("net/ipv4/ip_forward") == "0":
        yield finding("node.ip_forward_disabled", snap.node,
                      evidence={"file": "/proc/sys/net/ipv4/ip_forward", "value": "0"})
    if ipv6 and values.get("net/ipv6/conf/all/forwarding") == "0":
        yield finding("node.ipv6_forwarding_disabled", snap.node,
                      evidence={"file": "/proc/sys/net/ipv6/conf/all/forwarding", "value": "0"})
    links = snap.links.data
    bridges_with_ports = [b for b in links.bridges if b.ports] if links else []
    if bridges_with_ports and ipv4:
        yield from _bridge_nf(snap, values, bridges_with_ports[0], 4)
    if bridges_with_ports and ipv6:
        yield from _bridge_nf(snap, values, bridges_with_ports[0], 6)
    rl = values.get("net/ipv4/conf/all/route_localnet")  # IPv6 has no localhost NodePorts
    if ipv4 and rl is not None and rl != "1" and _serves_localhost_nodeports(snap):
        yield finding("node.route_localnet_disabled", snap.node,
                      evidence={"file": "/proc/sys/net/ipv4/conf/all/route_localnet", "value": rl})
