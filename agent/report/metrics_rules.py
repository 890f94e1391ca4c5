"""Metrics of the expected-vs-actual comparison: how many Service ports are expected and programmed, which
are out of sync (only those, capped), and how long this node took to program changes (histogram)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.model.report import Report

MAX_OUT_OF_SYNC_SERIES = 100


def families(report: Report) -> Iterator[Metric]:
    views = report.views
    if views is None:
        return
    view = views.programmed
    if view is not None:
        yield GaugeMetricFamily("svcdoctor_services_programmed",
                                "Service ports this node's proxy rules program.", value=len(view.ports))
    cluster = report.snapshot.cluster.data
    if views.expected is None or cluster is None or not cluster.comparable:  # rules were not compared
        return
    families_read = set(view.families) if view is not None else {4, 6}
    expected = [e for e in views.expected if e.family in families_read]
    yield GaugeMetricFamily("svcdoctor_services_expected",
                            "Service ports the API server says this node should program.", value=len(expected))
    out = GaugeMetricFamily("svcdoctor_rules_out_of_sync",
                            "1 per Service port whose rules differ from the API (capped).",
                            labels=["service"])  # `namespace/name:port`, as in every metric with the label
    services = sorted({f.service for f in report.findings if f.id.startswith("rules.") and f.service})
    for service in services[:MAX_OUT_OF_SYNC_SERIES]:
        out.add_metric([service], 1)
    yield out
    yield GaugeMetricFamily("svcdoctor_rules_out_of_sync_truncated",
                            "Out-of-sync Service ports left out of svcdoctor_rules_out_of_sync by the cap.",
                            value=max(0, len(services) - MAX_OUT_OF_SYNC_SERIES))
