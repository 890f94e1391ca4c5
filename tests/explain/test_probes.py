"""The prober: only allowed addresses, at most max_targets a run, at most `concurrency` in flight, the
rate bucket shared across runs; and the real senders against real sockets on loopback."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from agent.collect.probes import Limits, Prober, dns_query, read_nameservers, tcp_connect
from agent.dnswire import answer
from agent.model.probes import (
    ANSWERED,
    CONNECTED,
    DNS,
    ENDPOINT,
    NOT_ALLOWED,
    NXDOMAIN,
    OVER_LIMIT,
    REFUSED,
    TIMEOUT,
    ProbeResult,
    Target,
)


class Recorder:
    """A send function that records what was sent and how many were in flight at once."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.sent: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.hold = hold

    def __call__(self, target: Target, timeout_s: float) -> ProbeResult:
        with self.lock:
            self.sent.append(target.address)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.hold is not None:
            self.hold.wait(0.05)  # overlap the probes of one run, so concurrency shows
        with self.lock:
            self.in_flight -= 1
        return ProbeResult(target, CONNECTED)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def _targets(n: int, prefix: str = "10.0.0.") -> list[Target]:
    return [Target(ENDPOINT, f"{prefix}{i}", 80) for i in range(n)]


def test_only_allowed_addresses_are_sent_to() -> None:
    rec = Recorder()
    clock = FakeClock()
    targets = [*_targets(3), Target(ENDPOINT, "192.0.2.1", 80), Target(DNS, "8.8.8.8", 53, name="x")]
    results = Prober(send=rec, clock=clock.clock, sleep=clock.sleep).run(
        targets, frozenset({"10.0.0.0", "10.0.0.1", "10.0.0.2"}))
    assert sorted(rec.sent) == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert [r.outcome for r in results] == [CONNECTED] * 3 + [NOT_ALLOWED] * 2


def test_at_most_max_targets_per_run() -> None:
    rec = Recorder()
    clock = FakeClock()
    targets = _targets(10)
    results = Prober(Limits(max_targets=4, rate_per_s=1000, burst=100), send=rec, clock=clock.clock,
                     sleep=clock.sleep).run(targets, frozenset(t.address for t in targets))
    assert len(rec.sent) == 4
    assert [r.outcome for r in results].count(OVER_LIMIT) == 6


def test_concurrency_is_capped() -> None:
    rec = Recorder(hold=threading.Event())
    targets = _targets(12)
    Prober(Limits(concurrency=3, rate_per_s=10_000, burst=100), send=rec).run(
        targets, frozenset(t.address for t in targets))
    assert len(rec.sent) == 12 and rec.max_in_flight <= 3


def test_rate_bucket_spaces_probes_and_is_shared_across_runs() -> None:
    clock = FakeClock()
    rec = Recorder()
    prober = Prober(Limits(rate_per_s=10, burst=2, concurrency=1), send=rec, clock=clock.clock, sleep=clock.sleep)
    targets = _targets(6)
    allowed = frozenset(t.address for t in targets)
    prober.run(targets[:3], allowed)
    prober.run(targets[3:], allowed)  # a second run (another /explain request) draws on the same bucket
    # 6 probes at 10/s with a burst of 2: the last one starts no earlier than 0.4 s after the first
    assert len(rec.sent) == 6
    assert abs(clock.now - 0.4) < 1e-6


def test_histograms_and_totals_accumulate_when_recorded() -> None:
    clock = FakeClock()
    prober = Prober(send=Recorder(), clock=clock.clock, sleep=clock.sleep)
    targets = _targets(3)
    prober.run(targets, frozenset(t.address for t in targets), record=True)
    prober.run(targets, frozenset(), record=True)  # not sent: not counted
    hist, totals = prober.history()
    assert hist[ENDPOINT].count == 3 and totals[ENDPOINT] == [3, 0]


def test_tcp_connect_against_real_sockets() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        assert tcp_connect(Target(ENDPOINT, "127.0.0.1", port), 1.0).outcome == CONNECTED
    finally:
        srv.close()
    assert tcp_connect(Target(ENDPOINT, "127.0.0.1", port), 1.0).outcome == REFUSED


def test_dns_query_against_a_real_server() -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    table = {"kubernetes.default.svc.cluster.local": ["10.96.0.1"]}

    def serve(n: int) -> None:
        for _ in range(n):
            data, peer = srv.recvfrom(512)
            srv.sendto(answer(data, table), peer)

    t = threading.Thread(target=serve, args=(2,), daemon=True)
    t.start()
    ok = dns_query(Target(DNS, "127.0.0.1", port, name="kubernetes.default.svc.cluster.local"), 2.0)
    missing = dns_query(Target(DNS, "127.0.0.1", port, name="nope.default.svc.cluster.local"), 2.0)
    t.join(2)
    srv.close()
    assert (ok.outcome, ok.answers) == (ANSWERED, ["10.96.0.1"])
    assert missing.outcome == NXDOMAIN
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        assert dns_query(Target(DNS, "127.0.0.1", silent.getsockname()[1], name="a.b"), 0.2).outcome == TIMEOUT
    finally:
        silent.close()


def test_resolv_conf_keeps_only_nameserver_addresses(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("# secret comment\nsearch corp.example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\n"
                 "nameserver not-an-ip\noptions edns0\n")
    assert read_nameservers(f) == ["127.0.0.53", "fe80::1"]
