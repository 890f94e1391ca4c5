"""The pod on the far side of each veth bridge port: its interface name and addresses.

A veth port names its far end by IFLA_LINK (ifindex over there) and IFLA_LINK_NETNSID (an id that is
only meaningful in *this* namespace). To turn the id into a namespace we ask the kernel for the id of
each candidate namespace (RTM_GETNSID with an fd: read-only, it assigns nothing) until every wanted id
is found: named namespaces first (containerd and CRI-O bind-mount them under /run/netns, Docker under
/run/docker/netns), then /proc/<pid>/ns/net (a pod's pause process).

The far end is then read over rtnetlink from inside that namespace, which needs setns(2) and so
CAP_SYS_ADMIN. Two pyroute2 pitfalls, measured: `IPRoute(netns=name)` silently *creates* a missing
namespace unless `flags=0`, and every netns socket forks a helper process (~16 ms), so one socket per
namespace is opened and reused for all its ports. The DaemonSet runs without CAP_SYS_ADMIN: then the
namespace is read through a process in it instead, /proc/<pid>/net/{fib_trie,if_inet6,igmp}, which
needs CAP_SYS_PTRACE, as /proc/<pid>/ns/net does: the DaemonSet no longer has it (docs/security.md),
so there only the namespaces named under /run/netns are asked.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from agent.collect.base import CollectContext, read_text
from agent.model.links import BridgePort
from agent.pyroute2_parts import IPRoute

NETNSA_NSID_NOT_ASSIGNED = (-1, 4294967295)  # the kernel's -1, as pyroute2 may decode it unsigned
# Where runtimes bind-mount pod namespaces (containerd and CRI-O: /var/run/netns; Docker: its own dir).
NAMED_NETNS_DIRS = ("/run/netns", "/var/run/netns", "/run/docker/netns", "/var/run/docker/netns")
_PROC_NS = re.compile(r"/(\d+)/ns/net$")


@dataclass
class FarSide:
    """What one namespace shows: interface names by ifindex, and its addresses (by ifindex when known)."""

    names: dict[int, str] = field(default_factory=dict)
    addrs: dict[int, list[str]] = field(default_factory=dict)
    unattributed: list[str] = field(default_factory=list)  # procfs: IPv4 addresses without an ifindex


def _keep(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_link_local or ip.is_loopback)


def _candidates(ctx: CollectContext) -> Iterator[tuple[str, tuple[int, int]]]:
    """Paths of network namespace files with their (dev, inode), named ones first; each namespace once."""
    seen: set[tuple[int, int]] = set()

    def key(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # gone meanwhile, or not ours to see
        k = (st.st_dev, st.st_ino)
        if k in seen:
            return None
        seen.add(k)
        return k

    for d in NAMED_NETNS_DIRS:
        try:
            names = sorted(os.listdir(ctx.cfg.host(d)))
        except OSError:
            continue
        for name in names:
            path = str(ctx.cfg.host(d) / name)
            if (k := key(path)) is not None:
                yield path, k
    for pid in _pids(ctx):
        path = str(ctx.cfg.procfs(pid, "ns", "net"))
        if (k := key(path)) is not None:
            yield path, k


def _pids(ctx: CollectContext) -> list[int]:
    try:
        return sorted(int(p) for p in os.listdir(ctx.cfg.proc) if p.isdigit())
    except OSError:
        return []


def _nsid_of(ipr: IPRoute, path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        reply = ipr.get_netnsid(fd=fd)
    except Exception:  # netlink refused this one (a namespace being torn down): not a pod of ours
        return None
    finally:
        os.close(fd)
    nsid = reply.get("nsid") if reply else None
    return None if nsid is None or nsid in NETNSA_NSID_NOT_ASSIGNED else int(nsid)


def _find_namespaces(ctx: CollectContext, ipr: IPRoute, wanted: set[int]
                     ) -> tuple[dict[int, tuple[str, tuple[int, int]]], int]:
    """nsid -> (a path to that namespace, its inode key) for the wanted ids; and how many were looked at."""
    found: dict[int, tuple[str, tuple[int, int]]] = {}
    scanned = 0
    for path, k in _candidates(ctx):
        if wanted <= found.keys():
            break
        scanned += 1
        nsid = _nsid_of(ipr, path)
        if nsid is not None and nsid in wanted and nsid not in found:
            found[nsid] = (path, k)
    return found, scanned


def read_netlink(path: str) -> FarSide:
    # flags=0: never create a namespace; one socket (one helper process) per namespace.
    with IPRoute(netns=path, flags=0) as pod:
        links, addrs = list(pod.link("dump")), list(pod.addr("dump"))
    side = FarSide(names={int(m["index"]): str(m.get("IFLA_IFNAME")) for m in links})
    for msg in addrs:
        value = msg.get("IFA_ADDRESS")
        if value is not None and _keep(str(value)):
            side.addrs.setdefault(int(msg["index"]), []).append(str(ipaddress.ip_address(str(value))))
    return side


def parse_fib_trie(text: str) -> list[str]:
    """Local IPv4 addresses: the "|-- a.b.c.d" lines followed by "/32 host LOCAL"."""
    out: set[str] = set()
    lines = text.splitlines()
    for here, after in itertools.pairwise(lines):
        if here.strip().startswith("|--") and "/32 host LOCAL" in after:
            addr = here.strip()[3:].strip()
            if _keep(addr):
                out.add(addr)
    return sorted(out)


def parse_if_inet6(text: str, side: FarSide) -> None:
    """Fields: address (32 hex), ifindex (hex), prefix length, scope (00 = global), flags, name."""
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6:
            continue
        index = int(f[1], 16)
        side.names.setdefault(index, f[5])
        addr = str(ipaddress.IPv6Address(bytes.fromhex(f[0])))
        if f[3] == "00" and _keep(addr):
            side.addrs.setdefault(index, []).append(addr)


def parse_igmp_names(text: str, side: FarSide) -> None:
    """/proc/net/igmp lists every multicast-capable IPv4 interface as "<ifindex>\\t<name> : ..."."""
    for line in text.splitlines()[1:]:
        m = re.match(r"(\d+)\s+(\S+)\s*:", line)
        if m:
            side.names.setdefault(int(m.group(1)), m.group(2))


def read_procfs(ctx: CollectContext, pid: int) -> FarSide:
    side = FarSide()
    net = ctx.cfg.procfs(pid, "net")
    parse_igmp_names(read_text(net / "igmp") or "", side)
    parse_if_inet6(read_text(net / "if_inet6") or "", side)
    fib = read_text(net / "fib_trie")
    if fib is None:
        raise FileNotFoundError(f"process {pid} is gone")
    side.unattributed = parse_fib_trie(fib)
    return side


def _pid_in(ctx: CollectContext, path: str, k: tuple[int, int], pids: dict[tuple[int, int], int] | None
            ) -> tuple[int | None, dict[tuple[int, int], int]]:
    """A process inside the namespace: from the path itself, else from one /proc scan (kept for reuse)."""
    m = _PROC_NS.search(path)
    if m:
        return int(m.group(1)), pids or {}
    if pids is None:
        pids = {}
        for pid in _pids(ctx):
            try:
                st = os.stat(ctx.cfg.procfs(pid, "ns", "net"))
            except OSError:
                continue
            pids.setdefault((st.st_dev, st.st_ino), pid)
    return pids.get(k), pids


def _fill(port: BridgePort, side: FarSide, where: str) -> None:
    if port.peer_index not in side.names and port.peer_index not in side.addrs and not side.unattributed:
        port.peer_error = f"no interface {port.peer_index} in {where}"
        return
    port.peer_name = side.names.get(port.peer_index or -1)
    port.peer_netns = where
    port.pod_ips = sorted(set(side.addrs.get(port.peer_index or -1, [])) | set(side.unattributed))


def resolve(ctx: CollectContext, ipr: IPRoute, ports: list[BridgePort]) -> int:
    """Fill peer_name/peer_netns/pod_ips of veth ports whose far end is elsewhere; returns namespaces scanned."""
    wanted = {p.peer_netns_id for p in ports if p.peer_netns_id is not None and p.peer_index is not None}
    if not wanted:
        return 0
    found, scanned = _find_namespaces(ctx, ipr, wanted)
    netlink_denied: str | None = None
    pids: dict[tuple[int, int], int] | None = None
    for nsid in sorted(wanted):
        mine = [p for p in ports if p.peer_netns_id == nsid]
        if nsid not in found:
            for p in mine:
                p.peer_error = f"network namespace with id {nsid} not found among {scanned} namespaces"
            continue
        path, k = found[nsid]
        side: FarSide | None = None
        where, error = path, ""
        if netlink_denied is None:
            try:
                side = read_netlink(path)
            except OSError as exc:  # usually EPERM (setns needs CAP_SYS_ADMIN): use /proc for the rest too
                netlink_denied = error = f"netlink in {path}: {exc.strerror or exc}"
        if side is None:
            pid, pids = _pid_in(ctx, path, k, pids)
            if pid is not None:
                try:
                    side, where = read_procfs(ctx, pid), str(ctx.cfg.procfs(pid, "net"))
                except OSError as exc:
                    error = f"{error}; /proc/{pid}/net: {exc.strerror or exc}".lstrip("; ")
            else:
                error = f"{error or netlink_denied}; no process in {path} to read /proc/<pid>/net from"
        for p in mine:
            if side is None:
                p.peer_error = error
            else:
                _fill(p, side, where)
    return scanned
