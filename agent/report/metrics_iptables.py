"""iptables metrics: rules per backend and table, and the Service ports and endpoints the rules program
(counts only: no Service, endpoint IP or pod name as a label)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.model.report import Report


def families(report: Report) -> Iterator[Metric]:
    src = report.snapshot.iptables
    if not src.ok or src.data is None:
        return
    state = src.data
    rules = GaugeMetricFamily("svcdoctor_iptables_rules", "Rules in the iptables backend kube-proxy uses, per table "
                              "(IPv4 and IPv6 together).", labels=["backend", "table"])
    per_table: Counter[str] = Counter()
    for rs in state.rulesets:
        for table in rs.tables.values():
            per_table[table.name] += table.rule_count
    for table_name, count in sorted(per_table.items()):
        rules.add_metric([state.backend, table_name], count)
    yield rules
    ports = [p for view in (report.views.iptables if report.views is not None else ()) for p in view.ports]
    yield GaugeMetricFamily("svcdoctor_iptables_service_ports", "Service ports with rules in the iptables "
                            "rules (dispatch or endpoint chains), per IP family counted separately.",
                            value=len(ports))
    yield GaugeMetricFamily("svcdoctor_iptables_endpoints", "Endpoints the iptables rules send Service traffic to "
                            "(DNAT targets of KUBE-SVC chains, summed over Service ports).",
                            value=sum(len(p.endpoints) for p in ports))
