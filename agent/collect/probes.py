"""Probes from the node: TCP connects and DNS queries, bounded in count, concurrency, rate and time.

Only addresses the caller allows are ever sent to (agent/explain/plan.py builds that set from the API's
ClusterIPs and endpoint IPs and kubelet's clusterDNS); anything else comes back NOT_ALLOWED without a
packet. The rate limit is one token bucket per Prober, shared by every run through it, so many
`/explain` requests at once cannot add up to more traffic than one. A probe never raises: every failure
is an outcome.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent import dnswire
from agent.collect.base import Absent, CollectContext
from agent.config import Config
from agent.model.probes import (
    ANSWERED,
    CONNECTED,
    DNS,
    DNS_ERROR,
    NO_ADDRESS,
    NOT_ALLOWED,
    NXDOMAIN,
    OVER_LIMIT,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    LatencyHistogram,
    ProbeResult,
    ProbeSet,
    Target,
)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MAX_RESOLV_CONF = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_targets: int = 64  # per run; the rest are OVER_LIMIT, never sent
    timeout_s: float = 1.0  # per probe
    concurrency: int = 4  # probes in flight at once, per run
    rate_per_s: float = 20.0  # probes started per second, across all runs of one Prober
    burst: int = 4


Send = Callable[[Target, float], ProbeResult]


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


_REFUSED = {errno.ECONNREFUSED}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def _os_outcome(code: int) -> str:
    if code in _REFUSED:
        return REFUSED
    if code in _UNREACHABLE:
        return UNREACHABLE
    return TIMEOUT if code in (errno.ETIMEDOUT, errno.EAGAIN, errno.EINPROGRESS) else UNREACHABLE


def tcp_connect(target: Target, timeout_s: float) -> ProbeResult:
    """A TCP handshake and nothing else (the guide's `wget` without the request): closed at once."""
    started = time.monotonic()
    with socket.socket(_family(target.address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((target.address, target.port))
        except TimeoutError:
            return ProbeResult(target, TIMEOUT, time.monotonic() - started, error=f"no answer in {timeout_s:g}s")
        except OSError as exc:
            return ProbeResult(target, _os_outcome(exc.errno or 0), time.monotonic() - started,
                               error=exc.strerror or str(exc))
    return ProbeResult(target, CONNECTED, time.monotonic() - started)


def dns_query(target: Target, timeout_s: float) -> ProbeResult:
    """One UDP question to the DNS server at target.address:port (the guide's `nslookup`)."""
    started = time.monotonic()
    qid = random.randrange(1, 0xFFFF)
    deadline = started + timeout_s
    with socket.socket(_family(target.address), socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((target.address, target.port))  # connected: an ICMP unreachable surfaces as ECONNREFUSED
            sock.send(dnswire.query(qid, target.name, target.qtype))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                data = sock.recv(4096)
                try:
                    reply = dnswire.parse_reply(data, qid, target.name, target.qtype)
                except dnswire.BadMessage as exc:
                    if "id differs" in str(exc):
                        continue  # a late answer to someone else's question
                    return ProbeResult(target, DNS_ERROR, time.monotonic() - started, error=str(exc))
                break
        except TimeoutError:
            return ProbeResult(target, TIMEOUT, time.monotonic() - started, error=f"no answer in {timeout_s:g}s")
        except OSError as exc:
            return ProbeResult(target, _os_outcome(exc.errno or 0), time.monotonic() - started,
                               error=exc.strerror or str(exc))
    latency = time.monotonic() - started
    if reply.rcode == "NXDOMAIN":
        return ProbeResult(target, NXDOMAIN, latency, error="NXDOMAIN")
    if reply.rcode != "NOERROR":
        return ProbeResult(target, DNS_ERROR, latency, error=reply.rcode)
    if not reply.addresses:
        return ProbeResult(target, NO_ADDRESS, latency, error="no address in the answer")
    return ProbeResult(target, ANSWERED, latency, answers=reply.addresses)


def send_default(target: Target, timeout_s: float) -> ProbeResult:
    return dns_query(target, timeout_s) if target.kind == DNS or target.name else tcp_connect(target, timeout_s)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; take() waits for one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.rate, self.burst, self.clock, self.sleep = rate, burst, clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self.sleep(wait)


class Prober:
    """Sends probes within Limits and keeps the cumulative latency histograms and totals per kind (what it
    remembers between runs stays in this object; each run's ProbeSet carries a copy)."""

    def __init__(self, limits: Limits | None = None, *, send: Send = send_default,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limits = limits or Limits()
        self.send = send
        self.bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst, clock, sleep)
        self._lock = threading.Lock()
        self._hist: dict[str, LatencyHistogram] = {}
        self._totals: dict[str, list[int]] = {}

    def _one(self, target: Target) -> ProbeResult:
        self.bucket.take()
        try:
            return self.send(target, self.limits.timeout_s)
        except Exception as exc:  # a probe must never take the caller down
            return ProbeResult(target, UNREACHABLE, error=f"{type(exc).__name__}: {exc}")

    def run(self, targets: Sequence[Target], allowed: frozenset[str], *, record: bool = False) -> list[ProbeResult]:
        """Probe each target once, in order; results in the same order. `record`: add them to the histograms."""
        results: list[ProbeResult | None] = [None] * len(targets)
        todo: list[int] = []
        for i, t in enumerate(targets):
            if t.address not in allowed:
                results[i] = ProbeResult(t, NOT_ALLOWED, error="not an address the API server names")
            elif len(todo) >= self.limits.max_targets:
                results[i] = ProbeResult(t, OVER_LIMIT, error=f"more than {self.limits.max_targets} probes a run")
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, min(self.limits.concurrency, len(todo))),
                                    thread_name_prefix="probe") as pool:
                for i, res in zip(todo, pool.map(lambda i: self._one(targets[i]), todo), strict=True):
                    results[i] = res
        done = [r for r in results if r is not None]
        if record:
            self._record([done[i] for i in todo])
        return done

    def _record(self, results: list[ProbeResult]) -> None:
        with self._lock:
            for r in results:
                h = self._hist.setdefault(r.target.kind, LatencyHistogram(list(BUCKETS), [0] * len(BUCKETS)))
                h.count += 1
                h.sum_s += r.latency_s
                for j, bound in enumerate(h.buckets):
                    if r.latency_s <= bound:
                        h.counts[j] += 1
                totals = self._totals.setdefault(r.target.kind, [0, 0])
                totals[0 if r.ok else 1] += 1

    def history(self) -> tuple[dict[str, LatencyHistogram], dict[str, list[int]]]:
        with self._lock:
            return ({k: LatencyHistogram(list(h.buckets), list(h.counts), h.count, h.sum_s)
                     for k, h in self._hist.items()}, {k: list(v) for k, v in self._totals.items()})


def read_nameservers(path: Path) -> list[str]:
    """The nameserver addresses of a resolv.conf (only those: the file's text is not kept)."""
    with path.open("rb") as fh:
        raw = fh.read(MAX_RESOLV_CONF)
    out: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return out


def resolv_conf(cfg: Config, path: str, into: ProbeSet) -> None:
    """kubelet's resolvConf, read under the host root, into `into` (nameservers only)."""
    into.resolv_conf = path
    if not path:  # kubelet's --resolv-conf="" : pods with dnsPolicy Default get no nameserver from the node
        return
    try:
        into.nameservers = read_nameservers(cfg.host(path))
    except FileNotFoundError:
        into.resolv_conf_error = "does not exist"
    except OSError as exc:
        into.resolv_conf_error = exc.strerror or str(exc)


# The continuous set in `serve` ------------------------------------------------------------------------

PROBER = Prober()


def collect(ctx: CollectContext) -> ProbeSet:
    """The endpoints on this node, the cluster DNS Service and kubernetes.default, every run."""
    from agent.explain.plan import allowed_addresses, kubelet_dns, node_targets

    if not ctx.cfg.probes:
        raise Absent("probes are off (--no-probes)")
    if ctx.cluster is None:
        raise Absent("no cluster state: probes go only to addresses the API server names")
    state = ctx.cluster.state()
    if not state.usable:
        raise Absent("no usable cluster state: probes go only to addresses the API server names")
    dns = kubelet_dns(ctx.kubelet)
    targets = node_targets(state, ctx.cfg.node_name, dns)
    out = ProbeSet(planned=len(targets))
    if ctx.kubelet is not None:  # what kubelet hands to pods: unknown without kubelet
        resolv_conf(ctx.cfg, dns.resolv_conf, out)
    out.results = PROBER.run(targets, allowed_addresses(state, dns), record=True)
    out.latency, out.totals = PROBER.history()
    return out
