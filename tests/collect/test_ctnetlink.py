"""The ctnetlink dump parser on hand-built kernel messages (IPv4 and IPv6, the fixed layout and the attribute
walk, zones, truncation, errors), fuzzed; and a snapshot with every issue-19 field round-trips through JSON."""

from __future__ import annotations

import contextlib
import json
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collect.ctnetlink import NLMSG_DONE, DumpError, dump_request, parse_entries
from agent.model import Snapshot, Source
from agent.model.conntrack_table import ConntrackFlows, ConntrackStats, FlowGroup
from agent.model.kube_proxy_signals import FailureCounter, KubeProxyLog, KubeProxyMetrics, LogCause, SyncTimes
from agent.serial import to_jsonable
from tests.snapshots import healthy


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _tuple(kind: int, fam: int, src: str, dst: str, proto: int, sport: int, dport: int, zone: bool = False) -> bytes:
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    s, d = (1, 2) if fam == 4 else (3, 4)
    ip = _attr(0x8000 | 1, _attr(s, socket.inet_pton(af, src)) + _attr(d, socket.inet_pton(af, dst)))
    ports = _attr(2, struct.pack(">H", sport)) + _attr(3, struct.pack(">H", dport))
    pr = _attr(0x8000 | 2, _attr(1, bytes([proto])) + ports)
    return _attr(0x8000 | kind, ip + pr + (_attr(3, struct.pack(">H", 7)) if zone else b""))


def entry_msg(fam: int, src: str, dst: str, reply_src: str, proto: int = 17, zone: bool = False) -> bytes:
    af = socket.AF_INET if fam == 4 else socket.AF_INET6
    body = struct.pack("=BBH", af, 0, 0) + _tuple(1, fam, src, dst, proto, 40000, 53, zone) \
        + _tuple(2, fam, reply_src, src, proto, 53, 40000, zone) + _attr(3, struct.pack(">I", 0x188)) \
        + _attr(7, struct.pack(">I", 30))
    return struct.pack("=IHHII", 16 + len(body), (1 << 8) | 1, 2, 1, 0) + body


DONE = struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)


def _parse(data: bytes) -> list[object]:
    return list(parse_entries(memoryview(bytearray(data)), len(data)))


@pytest.mark.parametrize("zone", [False, True])
def test_ipv4_and_ipv6_entries_parse_alike_with_or_without_the_fixed_layout(zone: bool) -> None:
    got = _parse(entry_msg(4, "10.0.0.2", "10.96.0.10", "10.244.1.5", zone=zone)
                 + entry_msg(6, "fd00::2", "fd00:96::a", "fd00:244::5", zone=zone) + DONE)
    v4 = (17, socket.inet_aton("10.0.0.2"), socket.inet_aton("10.96.0.10"), 40000, 53,
          socket.inet_aton("10.244.1.5"), 53)
    v6 = (17, socket.inet_pton(socket.AF_INET6, "fd00::2"), socket.inet_pton(socket.AF_INET6, "fd00:96::a"), 40000, 53,
          socket.inet_pton(socket.AF_INET6, "fd00:244::5"), 53)
    assert got == [v4, v6, NLMSG_DONE]


def test_kernel_error_is_a_dump_error_with_errno() -> None:
    err = struct.pack("=IHHIIi", 36, 2, 0, 1, 0, -22) + b"\0" * 16
    with pytest.raises(DumpError) as exc:
        _parse(err)
    assert exc.value.errno == 22


def test_truncated_message_is_a_dump_error() -> None:
    msg = entry_msg(4, "10.0.0.2", "10.96.0.10", "10.244.1.5")
    with pytest.raises(DumpError, match="truncated"):
        _parse(msg[:-8] + struct.pack("=I", 0)[:0])


def test_dump_request_asks_only_to_read() -> None:
    req = dump_request(4, 17)
    length, kind, flags = struct.unpack_from("=IHH", req)
    assert (length, kind, flags) == (len(req), 0x101, 0x301)  # IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 200))
def test_fuzz_parser_raises_only_dump_errors(noise: bytes, cut: int) -> None:
    good = entry_msg(4, "10.0.0.2", "10.96.0.10", "10.244.1.5")
    for data in (noise, good[:cut] + noise, good + noise, good[:20] + noise + good[20 + len(noise):]):
        with contextlib.suppress(DumpError):
            _parse(data)


def test_snapshot_with_issue_19_data_round_trips_and_old_ones_load() -> None:
    snap = healthy()
    http = snap.kube_proxy_http.data
    assert http is not None and snap.conntrack.data is not None
    http.signals = KubeProxyMetrics(read_at=1.0, previous_read_at=0.5, sync=[SyncTimes("IPv4", 1.0, 0.5)],
                                    failures=[FailureCounter("m", "IPv4", 3.0, 1.0)], not_found=["x"])
    snap.conntrack.data.stats = ConntrackStats(totals={"drop": 1}, rates={"drop": 0.1}, interval_s=10, cpus=2)
    snap.kube_proxy_log = Source("kube_proxy_log", ok=True, data=KubeProxyLog(
        origin="files", first_read=False, causes=[LogCause("sync_failed", 2, "a", "b", services=["ns/s:p"])]))
    snap.conntrack_flows = Source("conntrack_flows", ok=True, data=ConntrackFlows(
        read_at=1.0, entries_read=5, destinations_watched=2, groups=[FlowGroup(4, "udp", "1.2.3.4:53", "5.6.7.8:53", 3,
                                                                               ["x"])]))
    again = Snapshot.from_json(snap.to_json())
    assert to_jsonable(again) == to_jsonable(snap)
    raw = json.loads(snap.to_json())
    for name in ("kube_proxy_log", "conntrack_flows"):
        raw.pop(name)
    raw["kube_proxy_http"]["data"].pop("signals")
    raw["conntrack"]["data"].pop("stats")
    old = Snapshot.from_json(json.dumps(raw))
    assert old.kube_proxy_log.absent and old.conntrack_flows.absent and old.conntrack.data is not None
    assert old.conntrack.data.stats is None
