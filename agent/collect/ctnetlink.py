"""A read-only, streaming dump of the conntrack table over ctnetlink (NETLINK_NETFILTER).

`conntrack -L` prints every entry as text and the agent would have to hold or re-parse it; at a
million entries that is hundreds of MB. Here the kernel sends the table in batches of messages, each
batch is parsed as it arrives and only the fields the caller needs are yielded, so memory stays at one
receive buffer whatever the table's size. The kernel filters by protocol where it can (CTA_FILTER,
Linux 5.8+); an older kernel answers EINVAL and the reader filters instead. Only IPCTNL_MSG_CT_GET with
NLM_F_DUMP is ever sent: nothing is created, changed or deleted.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Iterator
from operator import itemgetter

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_FILTER = 1, 2, 25
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_FLAG_PROTO_NUM = 1 << 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}
RECV_BUFFER = 1 << 20

_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_BE16 = struct.Struct(">H")


class DumpError(Exception):
    """The kernel refused or broke off the dump (errno kept), or the deadline passed."""

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(message)
        self.errno = err


# One entry: (protocol, orig src, orig dst, orig sport, orig dport, reply src, reply sport); addresses packed
# (4 or 16 bytes). A plain tuple: at a million entries, building an object per entry costs seconds.
Entry = tuple[int, bytes, bytes, int, int, bytes, int]
PROTO, ORIG_SRC, ORIG_DST, ORIG_SPORT, ORIG_DPORT, REPLY_SRC, REPLY_SPORT = range(7)


def _layout(addr: int) -> tuple[struct.Struct, itemgetter[tuple[int, ...]], tuple[int, ...], tuple[int, ...]]:
    """The kernel's fixed encoding of an ORIG+REPLY tuple pair for a port-based protocol without a zone
    (ctnetlink_dump_tuples: IP src, dst, then protocol number, source and destination port): one struct
    read instead of walking 16 attributes per entry. Returns the struct, a getter for its header fields,
    their expected values, and the indexes of the data fields. A message that differs is walked instead."""
    one = f"HH HH HH{addr}s HH{addr}s HH HHB3x HHH2x HHH2x"
    st = struct.Struct(">" + one + " " + one)
    ip_len = 4 + 2 * (4 + addr)
    tuple_len = 4 + ip_len + 28
    src_kind, dst_kind = (CTA_IP_V4_SRC, CTA_IP_V4_DST) if addr == 4 else (CTA_IP_V6_SRC, CTA_IP_V6_DST)
    fixed: list[int] = []
    for outer in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
        for length, kind in ((tuple_len, NLA_F_NESTED | outer), (ip_len, NLA_F_NESTED | CTA_TUPLE_IP),
                             (4 + addr, src_kind), (4 + addr, dst_kind), (28, NLA_F_NESTED | CTA_TUPLE_PROTO),
                             (5, CTA_PROTO_NUM), (6, CTA_PROTO_SRC_PORT), (6, CTA_PROTO_DST_PORT)):
            # attribute headers are host-endian; the struct reads big-endian: compare with the swapped value
            fixed += struct.unpack(">HH", struct.pack("=HH", length, kind))
    # per tuple 21 fields: 2 outer, 2 ip, 2+1 src, 2+1 dst, 2 proto, 2+1 num, 2+1 sport, 2+1 dport
    data = (6, 9, 14, 17, 20)  # src, dst, num, sport, dport within one tuple
    header_idx = [i for i in range(42) if i % 21 not in data]
    return st, itemgetter(*header_idx), tuple(fixed), data


_FAST = {4: _layout(4), 16: _layout(16)}


def _attr(nla_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, nla_type) + payload + b"\0" * (-length % 4)


def dump_request(family: int, protocol: int | None, seq: int = 1) -> bytes:
    """IPCTNL_MSG_CT_GET | NLM_F_DUMP for one address family, filtered by protocol in the kernel if given."""
    attrs = b""
    if protocol is not None:
        proto = _attr(NLA_F_NESTED | CTA_TUPLE_PROTO, _attr(CTA_PROTO_NUM, bytes([protocol])))
        attrs = (_attr(NLA_F_NESTED | CTA_TUPLE_ORIG, proto)
                 + _attr(NLA_F_NESTED | CTA_FILTER, _attr(CTA_FILTER_ORIG_FLAGS,
                                                           struct.pack("=I", CTA_FILTER_FLAG_PROTO_NUM))))
    body = struct.pack("=BBH", FAMILIES[family], 0, 0) + attrs
    return _NLMSG.pack(16 + len(body), (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
                       NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _tuple(buf: memoryview, pos: int, end: int) -> tuple[bytes, bytes, int, int, int]:
    """(src, dst, proto, sport, dport) of a CTA_TUPLE_* nest."""
    src = dst = b""
    proto = sport = dport = 0
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(buf, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        inner, inner_end = pos + 4, min(pos + length, end)
        if kind == CTA_TUPLE_IP:
            while inner + 4 <= inner_end:
                ln, k = _NLA.unpack_from(buf, inner)
                if ln < 4:
                    break
                k &= NLA_TYPE_MASK
                if k in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = bytes(buf[inner + 4:inner + ln])
                elif k in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = bytes(buf[inner + 4:inner + ln])
                inner += (ln + 3) & ~3
        elif kind == CTA_TUPLE_PROTO:
            while inner + 4 <= inner_end:
                ln, k = _NLA.unpack_from(buf, inner)
                if ln < 4:
                    break
                k &= NLA_TYPE_MASK
                if k == CTA_PROTO_NUM:
                    proto = buf[inner + 4]
                elif k == CTA_PROTO_SRC_PORT:
                    sport = _BE16.unpack_from(buf, inner + 4)[0]
                elif k == CTA_PROTO_DST_PORT:
                    dport = _BE16.unpack_from(buf, inner + 4)[0]
                inner += (ln + 3) & ~3
        pos += (length + 3) & ~3
    return src, dst, proto, sport, dport


def parse_entries(buf: memoryview, size: int) -> Iterator[Entry | int]:
    """The entries in one received batch; yields NLMSG_DONE (an int) when the dump is over.
    Raises DumpError on NLMSG_ERROR or a message that does not parse."""
    try:
        yield from _parse_entries(buf, size)
    except (struct.error, IndexError) as exc:
        raise DumpError(f"malformed conntrack message: {exc}") from exc


def _parse_entries(buf: memoryview, size: int) -> Iterator[Entry | int]:
    off = 0
    while off + 16 <= size:
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < 16 or off + length > size:
            raise DumpError(f"truncated netlink message ({length} bytes at {off} of {size})")
        if kind == NLMSG_DONE:
            yield NLMSG_DONE
            return
        if kind == NLMSG_ERROR:
            err = -struct.unpack_from("=i", buf, off + 16)[0]
            if err:
                raise DumpError(f"kernel refused the conntrack dump: {os.strerror(err)}", err)
        elif kind >> 8 == NFNL_SUBSYS_CTNETLINK:
            fast = _FAST[16 if buf[off + 16] == socket.AF_INET6 else 4]
            if length >= 20 + fast[0].size:
                t = fast[0].unpack_from(buf, off + 20)
                if fast[1](t) == fast[2]:
                    # orig: src 6, dst 9, num 14, sport 17, dport 20; reply: the same + 21
                    yield (t[14], t[6], t[9], t[17], t[20], t[27], t[38])
                    off += (length + 3) & ~3
                    continue
            pos, end = off + 20, off + length  # nlmsghdr (16) + nfgenmsg (4)
            orig = reply = None
            while pos + 4 <= end:
                ln, k = _NLA.unpack_from(buf, pos)
                if ln < 4:
                    break
                k &= NLA_TYPE_MASK
                if k == CTA_TUPLE_ORIG:
                    orig = _tuple(buf, pos + 4, min(pos + ln, end))
                elif k == CTA_TUPLE_REPLY:
                    reply = _tuple(buf, pos + 4, min(pos + ln, end))
                    break  # the kernel writes ORIG then REPLY first: the rest is not needed
                pos += (ln + 3) & ~3
            if orig is not None and reply is not None:
                yield (orig[2], orig[0], orig[1], orig[3], orig[4], reply[0], reply[3])
        off += (length + 3) & ~3


def dump(family: int, protocol: int, deadline: float, *, kernel_filter: bool = True) -> Iterator[Entry]:
    """Stream the table's entries of one family and protocol (filtered by the kernel unless told not to).
    The caller must consume it to the end for a whole read; raises DumpError on a kernel error or past
    `deadline`."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        sock.send(dump_request(family, protocol if kernel_filter else None))
        buf = bytearray(RECV_BUFFER)
        view = memoryview(buf)
        while True:
            if time.monotonic() > deadline:
                raise DumpError("the conntrack dump did not finish in time")
            try:
                size = sock.recv_into(buf)
            except TimeoutError as exc:
                raise DumpError("the kernel stopped answering the conntrack dump") from exc
            except OSError as exc:  # ENOBUFS: the dump was broken off; a partial table is no table
                raise DumpError(f"conntrack dump failed: {exc.strerror or exc}", exc.errno or 0) from exc
            for item in parse_entries(view, size):
                if isinstance(item, int):
                    return
                if item[PROTO] == protocol:
                    yield item
    finally:
        sock.close()


def supports_kernel_filter(err: DumpError) -> bool:
    """A kernel without CTA_FILTER (before 5.8) rejects the filtered request with EINVAL/EOPNOTSUPP."""
    return err.errno not in (errno.EINVAL, errno.EOPNOTSUPP)
