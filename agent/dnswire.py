"""The little of DNS's wire format (RFC 1035) a probe needs: one question out, A/AAAA answers back.

Pure functions: agent/collect/probes.py sends the bytes. A reply that does not parse is an error with a
reason, never a guess; compression pointers are followed a bounded number of times.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

QTYPES = {"A": 1, "AAAA": 28}
CLASS_IN = 1
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_POINTERS = 16


class BadMessage(ValueError):
    """A reply that is not a well-formed DNS message for our question."""


@dataclass
class Reply:
    rcode: str
    addresses: list[str] = field(default_factory=list)
    truncated: bool = False


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(qid: int, name: str, qtype: str = "A") -> bytes:
    """A standard query with recursion desired, as nslookup sends it."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", QTYPES[qtype], CLASS_IN)


def _skip_name(msg: bytes, pos: int) -> int:
    """The offset just after the (possibly compressed) name at `pos`."""
    while True:
        if pos >= len(msg):
            raise BadMessage("name runs past the end")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 2 > len(msg):
                raise BadMessage("pointer runs past the end")
            return pos + 2
        if length & 0xC0:
            raise BadMessage("unknown label type")
        if length == 0:
            return pos + 1
        pos += 1 + length


def read_name(msg: bytes, pos: int) -> str:
    labels: list[str] = []
    for _ in range(MAX_POINTERS):
        while True:
            if pos >= len(msg):
                raise BadMessage("name runs past the end")
            length = msg[pos]
            if length & 0xC0 == 0xC0:
                if pos + 2 > len(msg):
                    raise BadMessage("pointer runs past the end")
                pos = ((length & 0x3F) << 8) | msg[pos + 1]
                break
            if length & 0xC0:
                raise BadMessage("unknown label type")
            if length == 0:
                return ".".join(labels)
            if pos + 1 + length > len(msg):
                raise BadMessage("label runs past the end")
            labels.append(msg[pos + 1:pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
    raise BadMessage("too many compression pointers")


def parse_reply(msg: bytes, qid: int, name: str, qtype: str = "A") -> Reply:
    """The rcode and the A/AAAA addresses of a reply to query(qid, name, qtype)."""
    if len(msg) < 12:
        raise BadMessage("shorter than a DNS header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid:
        raise BadMessage("reply to another query (id differs)")
    if not flags & 0x8000:
        raise BadMessage("not a reply")
    rcode = RCODES.get(flags & 0x000F, f"RCODE{flags & 0x000F}")
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(msg, pos) + 4
    want = QTYPES[qtype]
    addresses: list[str] = []
    for _ in range(ancount):
        pos = _skip_name(msg, pos)
        if pos + 10 > len(msg):
            raise BadMessage("answer header runs past the end")
        rtype, rclass, _, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        if pos + rdlen > len(msg):
            raise BadMessage("answer data runs past the end")
        data = msg[pos:pos + rdlen]
        pos += rdlen
        if rclass != CLASS_IN or rtype != want:
            continue  # a CNAME on the way, or another class: only the addresses count
        if (rtype == 1 and rdlen != 4) or (rtype == 28 and rdlen != 16):
            raise BadMessage(f"address of {rdlen} bytes")
        addresses.append(str(ipaddress.ip_address(data)))
    del name  # the question is checked by id; names in answers may be the CNAME chain's
    return Reply(rcode=rcode, addresses=addresses, truncated=bool(flags & 0x0200))


def answer(request: bytes, addresses: dict[str, list[str]], ttl: int = 5) -> bytes:
    """A server's reply to `request` from a name -> addresses table (tests' DNS server; NXDOMAIN when the
    name is unknown). Kept here beside the parser so the two agree on the format."""
    qid, _, _, _, _, _ = struct.unpack("!HHHHHH", request[:12])
    end = _skip_name(request, 12)
    name = read_name(request, 12).lower()
    qtype, _ = struct.unpack("!HH", request[end:end + 4])
    question = request[12:end + 4]
    known = addresses.get(name)
    rcode = 0 if known is not None else 3
    records = b""
    count = 0
    for addr in known or []:
        ip = ipaddress.ip_address(addr)
        rtype = 1 if ip.version == 4 else 28
        if rtype != qtype:
            continue
        records += b"\xc0\x0c" + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(ip.packed)) + ip.packed
        count += 1
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, 0)
    return header + question + records
