"""Stale conntrack flows toward Services, by kube-proxy's own cleanup rule (pkg/proxy/conntrack/cleanup.go).

An entry whose original destination is a Service IP or NodePort of a UDP (or SCTP) Service port and whose
reply source is not a serving endpoint of that Service keeps its flow going where kube-proxy's rules no
longer send it: to an endpoint that is gone (`conntrack.stale_flows`), or, never DNATed because it was
created while the Service had no endpoints, to the Service IP itself (`conntrack.blackholed_flows`).
kube-proxy deletes such entries after each sync; ones still here mean its cleanup is not running or
failing. Services whose endpoints changed within the grace period are left to kube-proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.catalogue import finding
from agent.checks.expected import family_of, host_of, hostport, port_name, skipped
from agent.checks.rules import grace_seconds
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState, SliceSpec
from agent.model.conntrack_table import FlowGroup

MAX_LISTED = 5


@dataclass
class _Port:
    service: str
    family: int
    serving: set[str]  # endpoint IPs kube-proxy counts as serving (ready or not, terminating or not)
    last_change: float | None


@dataclass
class _Stale:
    entries: int = 0
    reply_sources: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def _index(state: ClusterState) -> tuple[dict[tuple[str, str], _Port], dict[tuple[int, str, int], _Port]]:
    """(protocol, "ip:port") -> Service port, and (family, protocol, node port) -> Service port."""
    by_dst: dict[tuple[str, str], _Port] = {}
    by_node_port: dict[tuple[int, str, int], _Port] = {}
    slices: dict[tuple[str, str], list[SliceSpec]] = {}
    last: dict[tuple[str, str], float] = {}
    for sl in state.slices:
        slices.setdefault((sl.namespace, sl.service), []).append(sl)
        if sl.last_change is not None:
            last[(sl.namespace, sl.service)] = max(last.get((sl.namespace, sl.service), 0.0), sl.last_change)
    for svc in state.services:
        if skipped(svc):
            continue
        for sp in svc.ports:
            if sp.protocol not in ("UDP", "SCTP"):
                continue
            proto = sp.protocol.lower()
            for family in sorted({family_of(ip) for ip in svc.cluster_ips}):
                serving = {ep.address for sl in slices.get((svc.namespace, svc.name), [])
                           if sl.address_type == ("IPv6" if family == 6 else "IPv4")
                           and any(p.name == sp.name and p.protocol == sp.protocol for p in sl.ports)
                           for ep in sl.endpoints if ep.serving}
                changes = [t for t in (svc.last_change, last.get((svc.namespace, svc.name))) if t is not None]
                port = _Port(port_name(svc.namespace, svc.name, sp.name), family, serving, max(changes, default=None))
                for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips):
                    if family_of(ip) == family:
                        by_dst[(proto, hostport(ip, sp.port))] = port
                if sp.node_port:
                    by_node_port[(family, proto, sp.node_port)] = port
    return by_dst, by_node_port


def _command(g: FlowGroup, by_node_port: bool) -> str:
    fam = " -f ipv6" if g.family == 6 else ""
    dst, dport = host_of(g.orig_dst), g.orig_dst.rsplit(":", 1)[1]
    where = f"--orig-dst {dst} --orig-port-dst {dport}" if by_node_port else f"--orig-dst {dst}"
    return f"conntrack -D{fam} -p {g.protocol} {where} --reply-src {host_of(g.reply_src)}"


def check(snap: Snapshot) -> Iterator[Finding]:
    flows, cluster = snap.conntrack_flows, snap.cluster
    if not flows.ok or flows.data is None or not cluster.ok or cluster.data is None or not cluster.data.usable:
        return
    by_dst, by_node_port = _index(cluster.data)
    grace = grace_seconds(snap)
    stale: dict[tuple[str, str, int], _Stale] = {}  # (kind, service port, family)
    for g in flows.data.groups:
        node_port = False
        port = by_dst.get((g.protocol, g.orig_dst))
        if port is None:
            port = by_node_port.get((g.family, g.protocol, int(g.orig_dst.rsplit(":", 1)[1])))
            node_port = True
        if port is None or host_of(g.reply_src) in port.serving:
            continue
        if port.last_change is not None and flows.data.read_at - port.last_change < grace:
            continue  # kube-proxy may not have synced (and cleaned up) the change yet
        kind = "blackholed" if g.reply_src == g.orig_dst else "stale"
        acc = stale.setdefault((kind, port.service, port.family), _Stale())
        acc.entries += g.entries
        acc.reply_sources.add(g.reply_src)
        acc.examples.extend(g.examples[:MAX_LISTED - len(acc.examples)])
        cmd = _command(g, node_port)
        if cmd not in acc.commands and len(acc.commands) < MAX_LISTED:
            acc.commands.append(cmd)
    for (kind, service, family), acc in sorted(stale.items()):
        ev = {"entries": acc.entries, "ip_family": family, "reply_sources": sorted(acc.reply_sources)[:MAX_LISTED],
              "examples": acc.examples, "command": acc.commands[0], "commands": acc.commands}
        if kind == "stale":
            yield finding("conntrack.stale_flows", service, service=service, evidence=ev)
        else:
            yield finding("conntrack.blackholed_flows", service, service=service, evidence=ev)
