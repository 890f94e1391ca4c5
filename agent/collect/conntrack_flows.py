"""Conntrack entries toward Services, for kube-proxy's stale-flow rule (pkg/proxy/conntrack/cleanup.go).

kube-proxy deletes UDP entries whose original destination is a Service IP (ClusterIP, external IP,
LoadBalancer IP) or a NodePort and whose reply source is not a serving endpoint of that Service. The
table is read here over ctnetlink (agent/collect/ctnetlink.py), one dump per family and protocol (UDP,
SCTP) of the Services that have such ports, filtered by protocol in the kernel. Entries are not kept:
each one toward a watched destination is counted into a group per (destination, reply source), with a
few example tuples; the check (agent/checks/conntrack_flows.py) judges the groups against the API.

Which destinations to watch comes from the cluster state (the same provider as the `cluster` source);
without it, entries cannot be attributed and nothing is read.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import time
from pathlib import Path

from agent.collect.base import Absent, CollectContext, CollectError
from agent.collect.ctnetlink import ORIG_DPORT, ORIG_DST, REPLY_SRC, DumpError, Entry, dump, supports_kernel_filter
from agent.model.cluster import ClusterState
from agent.model.conntrack_table import ConntrackFlows, FlowGroup

PROTOCOLS = {"UDP": 17, "SCTP": 132}
PROTO_NAMES = {17: "udp", 132: "sctp"}
MAX_GROUPS = 50_000  # (destination, reply source) pairs: Service ports x endpoints, not entries
MAX_EXAMPLES = 3


def _packed(ip: str) -> tuple[int, bytes] | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return addr.version, addr.packed


def _text(family: int, packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, packed)


def hostport(family: int, packed: bytes, port: int) -> str:
    ip = _text(family, packed)
    return f"[{ip}]:{port}" if family == 6 else f"{ip}:{port}"


class Watch:
    """What to look for, per (family, protocol): Service IPs, NodePorts, and this node's addresses."""

    def __init__(self, state: ClusterState) -> None:
        self.ips: dict[tuple[int, int], set[bytes]] = {}
        self.node_ports: dict[tuple[int, int], set[int]] = {}
        node_addrs = [p for p in (_packed(a) for a in (state.node.addresses if state.node else [])) if p]
        self.node_addrs = {fam: {b for f, b in node_addrs if f == fam} for fam in (4, 6)}
        for svc in state.services:
            protos = {PROTOCOLS[sp.protocol] for sp in svc.ports if sp.protocol in PROTOCOLS}
            ips = [p for p in (_packed(ip) for ip in (*svc.cluster_ips, *svc.external_ips, *svc.load_balancer_ips))
                   if p]
            for proto in protos:
                for fam, packed in ips:
                    self.ips.setdefault((fam, proto), set()).add(packed)
                for sp in svc.ports:
                    if sp.node_port and PROTOCOLS.get(sp.protocol) == proto:
                        for fam in {f for f, _ in ips} or {4}:
                            self.node_ports.setdefault((fam, proto), set()).add(sp.node_port)

    def lookups(self) -> list[tuple[int, int]]:
        return sorted(set(self.ips) | set(self.node_ports))

    def size(self) -> int:
        return sum(map(len, self.ips.values())) + sum(map(len, self.node_ports.values()))


class _Count:
    __slots__ = ("entries", "examples")

    def __init__(self) -> None:
        self.entries = 0
        self.examples: list[str] = []


class Groups:
    """Entries counted per (family, protocol, orig dst, dst port, reply src, reply port); bounded."""

    def __init__(self, max_groups: int = MAX_GROUPS) -> None:
        self.max_groups = max_groups
        self.counts: dict[tuple[int, int, bytes, int, bytes, int], _Count] = {}

    def add(self, family: int, e: Entry) -> None:
        proto, src, dst, sport, dport, rsrc, rport = e
        key = (family, proto, dst, dport, rsrc, rport)
        slot = self.counts.get(key)
        if slot is None:
            if len(self.counts) >= self.max_groups:
                raise CollectError(f"more than {self.max_groups} (Service destination, reply source) pairs in the "
                                   "conntrack table: not judged")
            slot = self.counts[key] = _Count()
        slot.entries += 1
        if len(slot.examples) < MAX_EXAMPLES:
            slot.examples.append(f"{hostport(family, src, sport)} -> {hostport(family, dst, dport)} => "
                                 f"{hostport(family, rsrc, rport)}")

    def result(self) -> list[FlowGroup]:
        return [FlowGroup(family=fam, protocol=PROTO_NAMES[proto], orig_dst=hostport(fam, dst, dport),
                          reply_src=hostport(fam, rsrc, rport), entries=c.entries, examples=c.examples)
                for (fam, proto, dst, dport, rsrc, rport), c in sorted(self.counts.items())]


def read_flows(watch: Watch, deadline: float, max_groups: int = MAX_GROUPS) -> ConntrackFlows:
    groups = Groups(max_groups)
    seen = 0
    kernel_filter = True
    for fam, proto in watch.lookups():
        ips = watch.ips.get((fam, proto), set())
        ports = watch.node_ports.get((fam, proto), set())
        local = watch.node_addrs.get(fam, set())
        try:
            entries = dump(fam, proto, deadline, kernel_filter=kernel_filter)
            first = next(entries, None)
        except DumpError as exc:
            if not kernel_filter or supports_kernel_filter(exc):
                raise CollectError(str(exc)) from exc
            kernel_filter = False  # before Linux 5.8: the whole family, filtered here
            entries = dump(fam, proto, deadline, kernel_filter=False)
            first = next(entries, None)
        try:
            for e in itertools.chain([first] if first is not None else [], entries):
                seen += 1
                if e[ORIG_DST] in ips:
                    groups.add(fam, e)
                elif e[ORIG_DPORT] in ports and (e[ORIG_DST] in local or e[REPLY_SRC] != e[ORIG_DST]):
                    # a NodePort: on this node's address, or DNATed from any address (kube-proxy matches the
                    # port alone; a client's own flow to a remote port of that number is neither)
                    groups.add(fam, e)
        except DumpError as exc:
            raise CollectError(str(exc)) from exc
    return ConntrackFlows(read_at=time.time(), entries_read=seen, destinations_watched=watch.size(),
                          groups=groups.result(), kernel_filter=kernel_filter)


def _ctnetlink_missing(ctx: CollectContext) -> bool:
    """Reading must not make the kernel load nf_conntrack_netlink: when modules are listed and it is
    neither listed nor built in (/sys/module), the node has no ctnetlink user and is left alone."""
    modules = ctx.cfg.procfs("modules")
    try:
        listed = {line.split(" ", 1)[0] for line in modules.read_text().splitlines()}
    except OSError:
        return False  # no module support: ctnetlink is built in or absent, and nothing gets loaded
    return "nf_conntrack_netlink" not in listed and not (Path(ctx.cfg.sys) / "module" / "nf_conntrack_netlink").exists()


def collect(ctx: CollectContext) -> ConntrackFlows:
    if ctx.cluster is None:
        raise Absent("no cluster state: conntrack flows cannot be attributed to Services")
    state: ClusterState = ctx.cluster.state()
    if not state.usable:
        raise Absent("the cluster state is not usable: conntrack flows are not judged")
    watch = Watch(state)
    if not watch.lookups():
        raise Absent("no Service has a UDP or SCTP port: no conntrack entry to check")
    if _ctnetlink_missing(ctx):
        raise Absent("nf_conntrack_netlink is not loaded (not loading it)")
    try:
        return read_flows(watch, time.monotonic() + ctx.deadline_s)
    except PermissionError as exc:
        raise CollectError("reading conntrack over netlink needs CAP_NET_ADMIN") from exc
