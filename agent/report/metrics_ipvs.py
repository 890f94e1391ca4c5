"""IPVS-mode metrics: the kernel's virtual and real servers (no addresses as labels)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.model.report import Report


def families(report: Report) -> Iterator[Metric]:
    src = report.snapshot.ipvs
    if not src.ok or src.data is None or not src.data.kernel_available:
        return
    vss = src.data.virtual_servers
    yield GaugeMetricFamily("svcdoctor_ipvs_virtual_servers", "IPVS virtual servers (ipvsadm -Ln services).",
                            value=len(vss))
    real = GaugeMetricFamily("svcdoctor_ipvs_real_servers",
                             "IPVS real servers; weight 0 is an endpoint kube-proxy is draining (terminating).",
                             labels=["state"])
    real.add_metric(["active"], sum(1 for vs in vss for rs in vs.real_servers if rs.weight > 0))
    real.add_metric(["terminating"], sum(1 for vs in vss for rs in vs.real_servers if rs.weight == 0))
    yield real
