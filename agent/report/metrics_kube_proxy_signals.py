"""kube-proxy's failure signals and conntrack pressure as metrics (no IPs, no Service names as labels).

Values are what the snapshot holds: kube-proxy's own cumulative counters passed through (Prometheus
computes their rates), the kernel's conntrack counters summed over CPUs, and per-read counts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.model.kube_proxy_signals import EXPECTED
from agent.model.report import Report

P = "kubeproxy_sync_proxy_rules_"
FAILURE_KINDS = {P + "iptables_restore_failures_total": "iptables_restore",
                 P + "iptables_partial_restore_failures_total": "iptables_partial_restore",
                 P + "nftables_sync_failures_total": "nftables_sync"}


def families(report: Report) -> Iterator[Metric]:
    snap = report.snapshot
    http = snap.kube_proxy_http.data if snap.kube_proxy_http.ok else None
    sig = http.signals if http is not None else None
    if sig is not None:
        failures = CounterMetricFamily("svcdoctor_kube_proxy_sync_failures",
                                       "kube-proxy's own count of failed rule syncs (its cumulative counter).",
                                       labels=["kind", "ip_family"])
        for c in sig.failures:
            failures.add_metric([FAILURE_KINDS.get(c.metric, c.metric), c.ip_family], c.value)
        yield failures
        pending = GaugeMetricFamily("svcdoctor_kube_proxy_changes_pending",
                                    "Changes kube-proxy has seen but not yet synced to the rules.", labels=["kind"])
        for kind, value in (("endpoint", sig.endpoint_changes_pending), ("service", sig.service_changes_pending)):
            if value is not None:
                pending.add_metric([kind], value)
        yield pending
        exported = GaugeMetricFamily("svcdoctor_kube_proxy_metric_exported",
                                     "1 if kube-proxy exports the metric svcdoctor reads, 0 if this kube-proxy "
                                     "(its version, its mode) has no such series.", labels=["metric"])
        for name in EXPECTED:
            exported.add_metric([name], 0 if name in sig.not_found else 1)
        yield exported
        no_local = GaugeMetricFamily("svcdoctor_kube_proxy_no_local_endpoints",
                                     "Services with a Local traffic policy and no endpoint on this node, as "
                                     "kube-proxy counts them.", labels=["traffic_policy", "ip_family"])
        for n in sig.no_local_endpoints:
            no_local.add_metric([n.traffic_policy, n.ip_family], n.services)
        yield no_local
    log = snap.kube_proxy_log.data if snap.kube_proxy_log.ok else None
    if log is not None:
        lines = GaugeMetricFamily("svcdoctor_kube_proxy_log_lines",
                                  "Lines naming a failure cause that kube-proxy logged between the agent's "
                                  "latest two reads of its log.", labels=["cause"])
        for cause in log.causes:
            lines.add_metric([cause.cause], cause.count)
        yield lines
        yield GaugeMetricFamily("svcdoctor_kube_proxy_log_skipped_bytes",
                                "Bytes of kube-proxy's log written since the previous read beyond what one read "
                                "takes (not matched).", value=log.skipped_bytes)
    ct = snap.conntrack.data if snap.conntrack.ok else None
    if ct is not None and ct.stats is not None:
        events = CounterMetricFamily("svcdoctor_conntrack_events", "nf_conntrack's per-CPU counters summed "
                                     "(/proc/net/stat/nf_conntrack).", labels=["event"])
        for name, value in sorted(ct.stats.totals.items()):
            events.add_metric([name], value)
        yield events
    flows = snap.conntrack_flows.data if snap.conntrack_flows.ok else None
    if flows is not None:
        yield GaugeMetricFamily("svcdoctor_conntrack_flows_read",
                                "UDP and SCTP conntrack entries the latest stale-flow read went through.",
                                value=flows.entries_read)
        stale = GaugeMetricFamily("svcdoctor_conntrack_stale_entries",
                                  "Conntrack entries toward Services whose replies come from no serving endpoint.",
                                  labels=["kind"])
        for kind, fid in (("stale", "conntrack.stale_flows"), ("blackholed", "conntrack.blackholed_flows")):
            stale.add_metric([kind], sum(int(f.evidence.get("entries", 0)) for f in report.findings if f.id == fid))
        yield stale
