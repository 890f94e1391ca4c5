"""iptables metrics: rules per backend and table, and the Service ports and endpoints the rules program
(counts only: no Service, endpoint IP or pod name as a label)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from agent.checks.programmed_iptables import programmed_ports
from agent.model.programmed import ProgrammedPort
from agent.runner import Report

_cache: dict[int, tuple[Report, list[ProgrammedPort]]] = {}  # one entry: the latest report's ports


def _ports(report: Report) -> list[ProgrammedPort]:
    """programmed_ports of the report, computed once per report, not once per scrape."""
    hit = _cache.get(id(report))
    if hit is not None and hit[0] is report:
        return hit[1]
    state = report.snapshot.iptables.data
    ports = programmed_ports(state) if state is not None else []
    _cache.clear()
    _cache[id(report)] = (report, ports)
    return ports


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
    ports = _ports(report)
    yield GaugeMetricFamily("svcdoctor_iptables_service_ports", "Service ports with rules in the iptables "
                            "rules (dispatch or endpoint chains), per IP family counted separately.",
                            value=len(ports))
    yield GaugeMetricFamily("svcdoctor_iptables_endpoints", "Endpoints the iptables rules send Service traffic to "
                            "(DNAT targets of KUBE-SVC chains, summed over Service ports).",
                            value=sum(len(p.endpoints) for p in ports))
