"""Prometheus exposition of the latest Report: a custom collector that reads, never triggers, a check.

Naming follows kube-state-metrics: one `svcdoctor_` prefix, base units, `_info` for facts, and no
endpoint IPs or pod names as labels. Per-Service series exist only while a finding exists, and are
capped per id so a broken cluster cannot blow up a Prometheus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.catalogue import load
from agent.model.report import Report
from agent.report import (
    metrics_bridge,
    metrics_iptables,
    metrics_ipvs,
    metrics_kube_proxy_signals,
    metrics_nftables,
    metrics_probes,
    metrics_rules,
)

MAX_SERIES_PER_ID = 100


def finding_families(report: Report) -> Iterator[Metric]:
    per_id = Counter(f.id for f in report.findings)
    severity = {f.id: f.severity for f in report.findings}
    counts = GaugeMetricFamily("svcdoctor_findings", "Findings in the latest check, per finding id.",
                               labels=["id", "severity"])
    # Every catalogued id is always present (0 when quiet), so alerts can tell "fixed" from "absent".
    for entry in sorted(load().values(), key=lambda e: e.id):
        if not entry.retired:
            counts.add_metric([entry.id, severity.get(entry.id, entry.severity)], per_id.get(entry.id, 0))
    yield counts

    one = GaugeMetricFamily("svcdoctor_finding", "1 per finding about a Service port (capped per id).",
                            labels=["id", "severity", "service"])
    truncated = GaugeMetricFamily("svcdoctor_findings_truncated",
                                  "Service findings left out of svcdoctor_finding by the per-id cap.",
                                  labels=["id"])
    emitted: Counter[str] = Counter()
    for f in report.findings:
        if f.service is None:
            continue
        if emitted[f.id] < MAX_SERIES_PER_ID:
            one.add_metric([f.id, f.severity, f.service], 1)
        emitted[f.id] += 1
    for fid, n in sorted(emitted.items()):
        truncated.add_metric([fid], max(0, n - MAX_SERIES_PER_ID))
    yield one
    yield truncated


def source_families(report: Report) -> Iterator[Metric]:
    ok = GaugeMetricFamily("svcdoctor_source_success", "1 if the source was read (or is absent), 0 if it failed.",
                           labels=["source"])
    dur = GaugeMetricFamily("svcdoctor_source_duration_seconds", "Time spent reading the source.",
                            labels=["source"])
    for s in report.snapshot.sources():
        ok.add_metric([s.name], 1 if s.ok else 0)
        dur.add_metric([s.name], s.duration_s)
    yield ok
    yield dur


def node_families(report: Report) -> Iterator[Metric]:
    snap = report.snapshot
    http = snap.kube_proxy_http.data
    if snap.kube_proxy.data is not None:
        info = GaugeMetricFamily("svcdoctor_kube_proxy_info", "kube-proxy as seen on this node.",
                                 labels=["mode", "version", "backend"])
        backend = snap.iptables.data.backend if snap.iptables.data is not None else ""
        info.add_metric([report.proxy_mode or "", (http.version if http else None) or "", backend], 1)
        yield info
    ct = snap.conntrack.data
    if ct is not None and ct.count is not None:
        yield GaugeMetricFamily("svcdoctor_conntrack_entries", "Entries in the conntrack table.", value=ct.count)
    if ct is not None and ct.max is not None:
        yield GaugeMetricFamily("svcdoctor_conntrack_entries_limit", "nf_conntrack_max.", value=ct.max)


# Each area adds its families here; all read only the Report.
FAMILIES: tuple[Callable[[Report], Iterator[Metric]], ...] = (finding_families, source_families, node_families,
                                                             metrics_bridge.families, metrics_iptables.families,
                                                             metrics_nftables.families, metrics_ipvs.families,
                                                             metrics_rules.families, metrics_probes.families,
                                                             metrics_kube_proxy_signals.families)


class ReportCollector(Collector):
    def __init__(self, latest: Callable[[], Report | None], runs: Callable[[], tuple[int, int]],
                 lag: Callable[[], tuple[list[tuple[str, float]], float]] | None = None) -> None:
        self._latest = latest
        self._runs = runs
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("svcdoctor_build_info", "svcdoctor's version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        ok, failed = self._runs()
        runs = CounterMetricFamily("svcdoctor_check_runs", "Check runs since start, by outcome.", labels=["result"])
        runs.add_metric(["completed"], ok)
        runs.add_metric(["crashed"], failed)
        yield runs
        if self._lag is not None:
            buckets, total = self._lag()
            yield HistogramMetricFamily("svcdoctor_rules_sync_lag_seconds",
                                        "Time from a Service's last API change to its rules matching on this node.",
                                        buckets=buckets, sum_value=total)
        report = self._latest()
        if report is None:
            return
        yield GaugeMetricFamily("svcdoctor_last_check_timestamp_seconds", "When the latest check finished.",
                                value=report.generated_at)
        yield GaugeMetricFamily("svcdoctor_check_duration_seconds", "How long the latest check's judging took.",
                                value=report.check_duration_s)
        for fam in FAMILIES:
            yield from fam(report)
