"""Metrics of the agent's own probes (`serve`): latency histograms and outcome counters since start, and the
latest run's failures, per probe kind (endpoint, dns, kubernetes). No addresses as labels."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from agent.model.probes import KINDS, NOT_ALLOWED, OVER_LIMIT
from agent.model.report import Report


def families(report: Report) -> Iterator[Metric]:
    src = report.snapshot.probes
    if not src.ok or src.data is None:
        return
    probes = src.data
    hist = HistogramMetricFamily("svcdoctor_probe_duration_seconds",
                                 "Time to a probe's answer (TCP handshake, DNS reply), by probe kind, since start.",
                                 labels=["kind"])
    for kind, h in sorted(probes.latency.items()):
        buckets = [(str(b), float(c)) for b, c in zip(h.buckets, h.counts, strict=True)] + [("+Inf", float(h.count))]
        hist.add_metric([kind], buckets, h.sum_s)
    yield hist
    total = CounterMetricFamily("svcdoctor_probes", "Probes sent since start, by kind and result.",
                                labels=["kind", "result"])
    for kind, (ok, failed) in sorted(probes.totals.items()):
        total.add_metric([kind, "success"], ok)
        total.add_metric([kind, "failure"], failed)
    yield total
    latest = GaugeMetricFamily("svcdoctor_probe_failures", "Probes of the latest run that got no answer, by kind.",
                               labels=["kind"])
    for kind in KINDS:
        if kind == "cluster_ip":
            continue  # not in serve's continuous set
        latest.add_metric([kind], sum(1 for r in probes.results if r.target.kind == kind and not r.ok
                                      and r.outcome not in (NOT_ALLOWED, OVER_LIMIT)))
    yield latest
