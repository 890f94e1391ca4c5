"""The DNS wire format: what the probe sends parses on the tests' server, its answers parse back, and no
byte string makes the parser do anything but return a Reply or raise BadMessage."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dnswire import BadMessage, answer, parse_reply, query, read_name


def test_query_answer_round_trip_a_and_aaaa() -> None:
    table = {"web.default.svc.cluster.local": ["10.96.0.20", "fd00::20"]}
    a = parse_reply(answer(query(7, "web.default.svc.cluster.local"), table), 7, "x", "A")
    aaaa = parse_reply(answer(query(8, "web.default.svc.cluster.local", "AAAA"), table), 8, "x", "AAAA")
    assert (a.rcode, a.addresses) == ("NOERROR", ["10.96.0.20"])
    assert (aaaa.rcode, aaaa.addresses) == ("NOERROR", ["fd00::20"])


def test_unknown_name_is_nxdomain() -> None:
    reply = parse_reply(answer(query(9, "nope.default.svc.cluster.local"), {}), 9, "x")
    assert (reply.rcode, reply.addresses) == ("NXDOMAIN", [])


def test_reply_to_another_query_is_refused() -> None:
    with pytest.raises(BadMessage, match="id differs"):
        parse_reply(answer(query(1, "a.b"), {"a.b": ["10.0.0.1"]}), 2, "a.b")


def test_compression_loop_is_bounded() -> None:
    msg = b"\x00" * 12 + b"\xc0\x0c"  # a pointer to itself
    with pytest.raises(BadMessage, match="pointers"):
        read_name(msg, 12)


def test_cname_before_the_address_is_skipped() -> None:
    q = query(5, "web.default.svc.cluster.local")
    header = struct.pack("!HHHHHH", 5, 0x8180, 1, 2, 0, 0)
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 5, 2) + b"\xc0\x0c"
    a = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([10, 0, 0, 7])
    reply = parse_reply(header + q[12:] + cname + a, 5, "x")
    assert reply.addresses == ["10.0.0.7"]


@given(st.binary(max_size=600))
def test_any_bytes_give_a_reply_or_bad_message(data: bytes) -> None:
    with contextlib.suppress(BadMessage):
        parse_reply(data, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0, "x")


@given(st.binary(min_size=12, max_size=200))
def test_a_valid_header_with_garbage_after_it(data: bytes) -> None:
    msg = struct.pack("!HHHHHH", 3, 0x8180, 1, 3, 0, 0) + data
    with contextlib.suppress(BadMessage):
        parse_reply(msg, 3, "x")
