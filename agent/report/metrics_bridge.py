"""Bridge metrics: per bridge, PROMISC and how many of its ports have hairpin on (labels: bridge only)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.model.report import Report


def families(report: Report) -> Iterator[Metric]:
    links = report.snapshot.links.data if report.snapshot.links.ok else None
    if links is None:
        return
    promisc = GaugeMetricFamily("svcdoctor_bridge_promiscuous", "1 if the bridge has IFF_PROMISC set.",
                                labels=["bridge"])
    ports = GaugeMetricFamily("svcdoctor_bridge_ports", "Ports attached to the bridge.", labels=["bridge"])
    hairpin = GaugeMetricFamily("svcdoctor_bridge_ports_hairpin", "Bridge ports with hairpin mode on.",
                                labels=["bridge"])
    for b in links.bridges:
        promisc.add_metric([b.name], 1 if b.promiscuous else 0)
        ports.add_metric([b.name], len(b.ports))
        hairpin.add_metric([b.name], sum(1 for p in b.ports if p.hairpin))
    yield promisc
    yield ports
    yield hairpin
