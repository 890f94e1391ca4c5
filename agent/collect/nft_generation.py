"""The nf_tables ruleset generation and table list: whether anything in nf_tables changed since the
last read, for the price of two netlink requests. Read-only (GET requests only).

Every committed nf_tables transaction in a network namespace (any table, any family: iptables-nft's
restores, kube-proxy's nftables mode, anyone's `nft`) bumps one 32-bit counter, which NFT_MSG_GETGEN
returns. A reader that remembers the generation its last read was taken at can skip a read whose
generation is unchanged. The table list (NFT_MSG_GETTABLE, one dump) says which tables exist, so a read
can tell a table it was not shown from one that is not there.

Self-contained on purpose: the iptables reader (agent/collect/iptables.py) uses it, and the nftables
reader can (`NfTablesInfo`, `read_info`).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETGEN = 1, 4, 16
NFTA_TABLE_NAME, NFTA_GEN_ID, NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 1, 1, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
FAMILY_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
FAMILY_NUMBERS = {name: number for number, name in FAMILY_NAMES.items()}
MAX_REPLY = 64 << 10  # one receive; a table list of thousands of tables takes several
MAX_MESSAGES = 100_000  # replies to one request: a bound, not a limit anyone meets

_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    """The request failed or its answer did not make sense (the reader then reads without the skip)."""


@dataclass(frozen=True)
class NfTablesInfo:
    generation: int
    tables: tuple[tuple[str, str], ...]  # (family, name) of every table, as the kernel lists them


def _attr(payload: bytes, kind: int) -> bytes | None:
    pos = 0
    while pos + 4 <= len(payload):
        length, typ = _ATTR.unpack_from(payload, pos)
        if length < 4:
            return None
        if typ & 0x3FFF == kind:
            return payload[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return None


def _request(sock: socket.socket, seq: int, msg: int, dump: bool, family: int = socket.AF_UNSPEC,
             payload: bytes = b"") -> list[bytes]:
    """One GET request; each reply's nfgenmsg and attributes."""
    body = struct.pack("=BBH", family, 0, 0) + payload
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    sock.send(_HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, seq, 0) + body)
    out: list[bytes] = []
    while len(out) < MAX_MESSAGES:
        data = sock.recv(MAX_REPLY)
        pos = 0
        while pos + _HDR.size <= len(data):
            length, kind, mflags, got_seq, _ = _HDR.unpack_from(data, pos)
            if length < _HDR.size or pos + length > len(data):
                raise NetlinkError("nf_tables netlink: malformed reply")
            if got_seq == seq:
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, pos + _HDR.size)[0]
                    if err == 0:
                        return out
                    raise NetlinkError(-err, f"nf_tables netlink request {msg}: {os.strerror(-err)}")
                if mflags & NLM_F_DUMP_INTR:
                    raise NetlinkError("nf_tables changed during the table dump")
                out.append(data[pos + _HDR.size:pos + length])
                if not dump:
                    return out
            pos += (length + 3) & ~3
    raise NetlinkError("nf_tables netlink: too many replies")


def read_info(timeout_s: float = 2.0) -> NfTablesInfo:
    """The generation and the table list, consistent with each other (read again if a commit came
    between them). Raises NetlinkError (an OSError) when nf_tables cannot be asked."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout_s)
        sock.bind((0, 0))
        seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
        for _ in range(3):
            gen = _generation(sock, seq + 1)
            replies = _request(sock, seq + 2, NFT_MSG_GETTABLE, dump=True)
            tables = tuple((FAMILY_NAMES.get(m[0], str(m[0])), _text(_attr(m[4:], NFTA_TABLE_NAME))) for m in replies)
            seq += 3
            if _generation(sock, seq) == gen:
                return NfTablesInfo(gen, tables)
        raise NetlinkError("nf_tables changed during three table dumps in a row")


def _generation(sock: socket.socket, seq: int) -> int:
    for reply in _request(sock, seq, NFT_MSG_GETGEN, dump=False):
        value = _attr(reply[4:], NFTA_GEN_ID)
        if value is not None and len(value) == 4:
            return int(struct.unpack(">I", value)[0])
    raise NetlinkError("nf_tables netlink: no generation in the reply")


def _text(value: bytes | None) -> str:
    return (value or b"").split(b"\0", 1)[0].decode("utf-8", "replace")


def list_chains(family: str, table: str, timeout_s: float = 2.0) -> tuple[str, ...]:
    """The names of a table's chains (one GETCHAIN dump of that table: names only, no rules)."""
    name = table.encode() + b"\0"
    attr = _ATTR.pack(4 + len(name), NFTA_CHAIN_TABLE) + name
    attr += b"\0" * (-len(attr) % 4)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout_s)
        sock.bind((0, 0))
        replies = _request(sock, 1, NFT_MSG_GETCHAIN, True, FAMILY_NUMBERS[family], attr)
        return tuple(_text(_attr(m[4:], NFTA_CHAIN_NAME)) for m in replies)


def read_generation(timeout_s: float = 2.0) -> int:
    """The nf_tables ruleset generation alone (one NFT_MSG_GETGEN request)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout_s)
        sock.bind((0, 0))
        return _generation(sock, 1)
