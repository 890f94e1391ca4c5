"""nftables-mode metrics: what kube-proxy's table holds, per IP family (labels: family only)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.model.report import Report


def families(report: Report) -> Iterator[Metric]:
    src = report.snapshot.nftables
    if not src.ok or src.data is None or not src.data.tables:
        return
    chains = GaugeMetricFamily("svcdoctor_nftables_chains", "Chains in kube-proxy's nftables table.",
                               labels=["family"])
    ports = GaugeMetricFamily("svcdoctor_nftables_service_ports",
                              "Service ports kube-proxy's nftables maps dispatch (to endpoints or a reject/drop).",
                              labels=["family"])
    endpoints = GaugeMetricFamily("svcdoctor_nftables_endpoints",
                                  "Endpoints (DNAT targets) the dispatched Service ports choose from.",
                                  labels=["family"])
    all_ports = (report.views.nftables_ports if report.views is not None else None) or ()
    for table in src.data.tables:
        programmed = [p for p in all_ports if p.family == table.ip_family]
        chains.add_metric([table.family], table.chain_count())
        ports.add_metric([table.family], len(programmed))
        endpoints.add_metric([table.family], sum(len(p.endpoints) for p in programmed))
    yield chains
    yield ports
    yield endpoints
