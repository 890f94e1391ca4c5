"""kube-proxy's failure signals from its /metrics: a bounded parser and a reader that remembers the last read.

Names and labels as kube-proxy exports them (pkg/proxy/metrics/metrics.go): before v1.33 the series carry
no labels (no_local_endpoints_total has `traffic_policy`); from v1.33 each carries `ip_family` ("IPv4",
"IPv6"), one series per family on a dual-stack node. Counters are exported only by the proxier that
counts them (iptables restore failures in iptables/IPVS mode, nftables sync failures in nftables mode),
and a labelled counter has no series until it first counts: what was not found is said, not guessed.

The parser reads the Prometheus text format line by line and keeps only the series named here, so a
large or hostile exposition costs a bounded amount of memory; a wanted line that does not parse fails
the read (a partial read must not look like "no failures").
"""

from __future__ import annotations

import math
import re

from agent.model.kube_proxy_signals import (  # the metric names are the model's: reporters name them too
    ENDPOINTS_PENDING,
    EXPECTED,
    FAILURES,
    LAST_QUEUED,
    LAST_SYNC,
    NO_LOCAL,
    PROGRAMMING,
    SERVICES_PENDING,
    FailureCounter,
    KubeProxyMetrics,
    NoLocalEndpoints,
    ProgrammingLatency,
    SyncTimes,
)

WANTED = frozenset({*EXPECTED[:-1], PROGRAMMING + "_bucket", PROGRAMMING + "_count"})

MAX_LINES = 500_000  # kube-proxy exports a few thousand lines; more is not a kube-proxy
MAX_LINE = 16_384
MAX_SERIES = 10_000  # series kept over all wanted names

Series = dict[str, list[tuple[dict[str, str], float]]]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _value(text: str) -> float:
    if "_" in text:  # Python's float() takes "1_0"; Prometheus does not
        raise ValueError(text)
    return float(text)  # accepts NaN, +Inf, -Inf as Prometheus writes them


def _labels(line: str, start: int, lineno: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    pos = start + 1
    if line[pos:pos + 1] == "}":
        return labels, pos + 1
    while True:
        m = _LABEL.match(line, pos)
        if m is None:
            raise ValueError(f"line {lineno}: malformed labels")
        labels[m.group(1)] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        pos = m.end()
        if m.group(3) == "}":
            return labels, pos


def parse(text: str, wanted: frozenset[str] = WANTED, *, max_lines: int = MAX_LINES, max_line: int = MAX_LINE,
          max_series: int = MAX_SERIES) -> Series:
    """The samples of the `wanted` metric names: name -> [(labels, value)]. Raises ValueError on a wanted
    line that does not parse, an over-long wanted line, or more lines or wanted series than the bounds."""
    out: Series = {}
    kept = 0
    for lineno, raw in enumerate(text.split("\n"), 1):
        if lineno > max_lines:
            raise ValueError(f"more than {max_lines} lines")
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        m = _NAME.match(line)
        if m is None:
            raise ValueError(f"line {lineno}: no metric name")
        name = m.group(0)
        if name not in wanted:
            continue
        if len(line) > max_line:
            raise ValueError(f"line {lineno}: {name} is longer than {max_line} characters")
        pos = m.end()
        labels: dict[str, str] = {}
        if line[pos:pos + 1] == "{":
            labels, pos = _labels(line, pos, lineno)
        rest = line[pos:].split()
        if not rest or len(rest) > 2:
            raise ValueError(f"line {lineno}: {name} has no value")
        try:
            value = _value(rest[0])
        except ValueError:
            raise ValueError(f"line {lineno}: {name} value {rest[0][:20]!r} is not a number") from None
        kept += 1
        if kept > max_series:
            raise ValueError(f"more than {max_series} series of the metrics svcdoctor reads")
        out.setdefault(name, []).append((labels, value))
    return out


def _family(labels: dict[str, str]) -> str:
    return labels.get("ip_family", "")


def _p99_upper(deltas: dict[float, float]) -> float | None:
    total = deltas.get(math.inf, 0.0)
    if total <= 0:
        return None
    finite = sorted(le for le in deltas if le != math.inf)
    for le in finite:
        if deltas[le] >= 0.99 * total:
            return le
    return finite[-1] if finite else None  # beyond the last bucket: at least its bound (JSON has no inf)


class MetricsReader:
    """Turns one /metrics body into KubeProxyMetrics, with rises since this reader's previous read.
    Holds the previous counter values, histogram buckets and pending streaks; one per collector."""

    def __init__(self) -> None:
        self._prev_at: float | None = None
        self._prev_counters: dict[tuple[str, str], float] = {}
        self._prev_buckets: dict[str, dict[float, float]] = {}
        self._pending_since: dict[str, float | None] = {}

    def read(self, body: str, now: float) -> KubeProxyMetrics:
        series = parse(body)  # raises before any state changes: a failed read leaves the baseline as it was
        out = KubeProxyMetrics(read_at=now, previous_read_at=self._prev_at)
        out.not_found = [n for n in EXPECTED if n not in series and not (
            n == PROGRAMMING and PROGRAMMING + "_bucket" in series)]
        fams = sorted({_family(lb) for n in (LAST_SYNC, LAST_QUEUED) for lb, _ in series.get(n, [])})
        for fam in fams:
            st = SyncTimes(ip_family=fam)
            for lb, v in series.get(LAST_SYNC, []):
                if _family(lb) == fam:
                    st.last_sync = v
            for lb, v in series.get(LAST_QUEUED, []):
                if _family(lb) == fam:
                    st.last_queued = v
            out.sync.append(st)
        counters: dict[tuple[str, str], float] = {}
        for name in FAILURES:
            for lb, v in series.get(name, []):
                key = (name, _family(lb))
                counters[key] = v
                prev = self._prev_counters.get(key)
                # a counter first seen after the first read started at 0 when kube-proxy first counted
                if prev is None and self._prev_at is not None:
                    prev = 0.0
                delta = v - prev if prev is not None and v >= prev else None
                out.failures.append(FailureCounter(metric=name, ip_family=key[1], value=v, delta=delta))
        for name, attr in ((ENDPOINTS_PENDING, "endpoint_changes_pending"),
                           (SERVICES_PENDING, "service_changes_pending")):
            values = [v for _, v in series.get(name, [])]
            pending = sum(values) if values else None
            setattr(out, attr, pending)
            since = self._pending_since.get(name) if pending else None
            if pending and since is None:
                since = now
            self._pending_since[name] = since
            setattr(out, attr + "_since", since)
        for lb, v in series.get(NO_LOCAL, []):
            out.no_local_endpoints.append(NoLocalEndpoints(traffic_policy=lb.get("traffic_policy", ""),
                                                           ip_family=_family(lb), services=v))
        buckets: dict[str, dict[float, float]] = {}
        for lb, v in series.get(PROGRAMMING + "_bucket", []):
            try:
                le = float(lb.get("le", ""))
            except ValueError:
                raise ValueError(f"{PROGRAMMING}_bucket has le={lb.get('le', '')[:20]!r}") from None
            buckets.setdefault(_family(lb), {})[le] = v
        for fam, now_b in sorted(buckets.items()):
            prev_b = self._prev_buckets.get(fam)
            if prev_b is None:
                continue
            deltas = {le: v - prev_b.get(le, 0.0) for le, v in now_b.items()}
            if any(d < 0 for d in deltas.values()):  # kube-proxy restarted: no interval to judge
                continue
            out.programming.append(ProgrammingLatency(ip_family=fam, observations=deltas.get(math.inf, 0.0),
                                                      p99_upper_s=_p99_upper(deltas)))
        self._prev_at, self._prev_counters, self._prev_buckets = now, counters, buckets
        return out
