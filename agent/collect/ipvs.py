"""kube-proxy's IPVS mode: virtual and real servers (IPVS generic netlink, as `ipvsadm -Ln` reads them),
the kube-ipvs0 dummy interface and its addresses (rtnetlink), and the KUBE-* ipsets (`ipset save`).

Read-only, and never the cause of a module load: the IPVS netlink family is only asked for when
/proc/net/ip_vs shows ip_vs is loaded (the generic netlink controller would otherwise load the module
on request), and `ipset save` only runs when ip_set is in the kernel. When IPVS cannot be opened the
reason is recorded in the data and the rest is still read: the checks decide whether it matters
(only when kube-proxy runs in IPVS mode).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from agent.collect.base import Absent, CollectContext, CollectError, read_text
from agent.collect.nftables import kernel_module_present
from agent.collect.subproc import run_command
from agent.model.ipvs import INTERFACE, IpvsState, RealServer, VirtualServer

PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", 132: "sctp"}
IP_VS_SVC_F_PERSISTENT = 0x1


def collect(ctx: CollectContext) -> IpvsState:
    state = IpvsState()
    state.interface_present, state.interface_addresses = read_interface()
    state.ipsets, state.ipset_error = read_ipsets(ctx)
    if read_text(ctx.cfg.procfs("net", "ip_vs")) is None:
        state.kernel_available = False
        state.kernel_error = "ip_vs is not loaded (no /proc/net/ip_vs in this network namespace)"
        return state
    try:
        state.virtual_servers = read_virtual_servers()
    except IpvsUnavailable as exc:
        state.kernel_available = False
        state.kernel_error = str(exc)
    return state


class IpvsUnavailable(Exception):
    """The IPVS generic netlink family cannot be opened."""


def read_virtual_servers() -> list[VirtualServer]:
    from agent.pyroute2_parts import IPVS, IPVSService, NetlinkError

    try:
        ipvs = IPVS()
    except NetlinkError as exc:  # ENOENT from the genl controller: no "IPVS" family
        raise IpvsUnavailable(f"the IPVS netlink family is not available: {exc}") from exc
    except PermissionError as exc:
        raise CollectError(f"IPVS netlink: permission denied ({exc})") from exc
    try:
        out: list[VirtualServer] = []
        for msg in ipvs.service("dump"):
            vs = virtual_server(msg)
            key = IPVSService.from_message(msg)
            vs.real_servers = [real_server(d) for d in ipvs.dest("dump", service=key)]
            out.append(vs)
        return out
    finally:
        ipvs.close()


# netlink messages -> model (pure: tested on messages in the kernel's wire format) -------------------

def _attrs(msg: Any, nla: str) -> dict[str, Any]:
    inner = msg.get_attr(nla)
    return dict(inner["attrs"]) if inner is not None else {}


def _address(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def virtual_server(msg: Any) -> VirtualServer:
    """An IPVS_CMD_NEW_SERVICE message (a service dump reply) as a VirtualServer."""
    a = _attrs(msg, "IPVS_CMD_ATTR_SERVICE")
    family = 6 if a.get("IPVS_SVC_ATTR_AF") == socket.AF_INET6 else 4
    flags = a.get("IPVS_SVC_ATTR_FLAGS") or {}
    persistent = bool(int(flags.get("flags", 0)) & IP_VS_SVC_F_PERSISTENT)
    fwmark = a.get("IPVS_SVC_ATTR_FWMARK") or None
    addr = str(a.get("IPVS_SVC_ATTR_ADDR", ""))
    return VirtualServer(
        protocol=PROTOCOLS.get(int(a.get("IPVS_SVC_ATTR_PROTOCOL", 0)), str(a.get("IPVS_SVC_ATTR_PROTOCOL"))),
        address=_address(addr, int(a.get("IPVS_SVC_ATTR_PORT", 0))),
        family=family,
        scheduler=str(a.get("IPVS_SVC_ATTR_SCHED_NAME", "")),
        persistent_seconds=int(a.get("IPVS_SVC_ATTR_TIMEOUT", 0)) if persistent else None,
        fwmark=int(fwmark) if fwmark else None,
    )


def real_server(msg: Any) -> RealServer:
    """An IPVS_CMD_NEW_DEST message (a dest dump reply) as a RealServer."""
    a = _attrs(msg, "IPVS_CMD_ATTR_DEST")
    return RealServer(
        address=_address(str(a.get("IPVS_DEST_ATTR_ADDR", "")), int(a.get("IPVS_DEST_ATTR_PORT", 0))),
        weight=int(a.get("IPVS_DEST_ATTR_WEIGHT", 0)),
        active_connections=int(a.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0)),
        inactive_connections=int(a.get("IPVS_DEST_ATTR_INACT_CONNS", 0)),
    )


# kube-ipvs0 -------------------------------------------------------------------------------------------

def read_interface() -> tuple[bool, list[str]]:
    from agent.pyroute2_parts import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=INTERFACE)
        if not index:
            return False, []
        return True, sorted(str(m.get_attr("IFA_ADDRESS")) for m in ipr.get_addr(index=index[0]))


# ipsets -----------------------------------------------------------------------------------------------

def read_ipsets(ctx: CollectContext) -> tuple[dict[str, list[str]], str | None]:
    """kube-proxy's ipsets, or why they could not be read (then nothing is judged from them). Without
    the ip_set module no set exists: that is a read, not a failure."""
    if not kernel_module_present(ctx, "ip_set"):
        return {}, None
    try:
        text = run_command(["ipset", "save"], ctx.budget_s() / 2)
        return parse_ipset_save(text.splitlines()), None
    except (Absent, CollectError, ValueError) as exc:
        return {}, str(exc)


def parse_ipset_save(lines: Iterable[str]) -> dict[str, list[str]]:
    """`ipset save` output -> {set: [member, ...]} for kube-proxy's KUBE-* sets. ValueError on a line
    `ipset save` never prints (it prints only `create` and `add`): then the output is not its own."""
    sets: dict[str, list[str]] = {}
    for line in lines:
        parts = line.split()
        if parts and (parts[0] not in ("create", "add") or len(parts) < 3):
            raise ValueError(f"`ipset save` printed a line it never prints ({len(line)} characters)")
        if len(parts) >= 2 and parts[1].startswith("KUBE-"):
            if parts[0] == "create":
                sets.setdefault(parts[1], [])
            elif parts[0] == "add" and len(parts) >= 3:
                sets.setdefault(parts[1], []).append(parts[2])
    return sets
