"""Snapshot data for kube-proxy's own word on why its rules are wrong: its failure metrics and its log.

Counters only say something when compared with an earlier read: the collector's reader object keeps
the previous values and puts the difference here, so a check judges this snapshot alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# kube-proxy's metric names svcdoctor reads (pkg/proxy/metrics/metrics.go)
P = "kubeproxy_sync_proxy_rules_"
LAST_SYNC = P + "last_timestamp_seconds"
LAST_QUEUED = P + "last_queued_timestamp_seconds"
FAILURES = (P + "iptables_restore_failures_total", P + "iptables_partial_restore_failures_total",
            P + "nftables_sync_failures_total")
ENDPOINTS_PENDING = P + "endpoint_changes_pending"
SERVICES_PENDING = P + "service_changes_pending"
NO_LOCAL = P + "no_local_endpoints_total"
PROGRAMMING = "kubeproxy_network_programming_duration_seconds"
EXPECTED = (LAST_SYNC, LAST_QUEUED, *FAILURES, ENDPOINTS_PENDING, SERVICES_PENDING, NO_LOCAL, PROGRAMMING)

@dataclass
class SyncTimes:
    """kube-proxy's sync timestamps for one IP family ("" when its version has no ip_family label)."""

    ip_family: str
    last_sync: float | None = None  # kubeproxy_sync_proxy_rules_last_timestamp_seconds
    last_queued: float | None = None  # kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds


@dataclass
class FailureCounter:
    """One of kube-proxy's failure counters, and how much it rose since the agent's previous read."""

    metric: str
    ip_family: str
    value: float
    delta: float | None = None  # None: first read, or the counter went down (kube-proxy restarted)


@dataclass
class NoLocalEndpoints:
    """kubeproxy_sync_proxy_rules_no_local_endpoints_total: a gauge despite its name, recounted each sync."""

    traffic_policy: str  # "internal" | "external"
    ip_family: str
    services: float


@dataclass
class ProgrammingLatency:
    """kubeproxy_network_programming_duration_seconds between two reads: how many observations, and the
    upper bound of the bucket holding the 99th of them (None when there were none)."""

    ip_family: str
    observations: float
    p99_upper_s: float | None = None


@dataclass
class KubeProxyMetrics:
    read_at: float
    previous_read_at: float | None = None  # None on the reader's first read: no rises are known yet
    sync: list[SyncTimes] = field(default_factory=list)
    failures: list[FailureCounter] = field(default_factory=list)
    endpoint_changes_pending: float | None = None
    service_changes_pending: float | None = None
    # read time since which every read saw changes pending (None: the latest read saw none)
    endpoint_changes_pending_since: float | None = None
    service_changes_pending_since: float | None = None
    no_local_endpoints: list[NoLocalEndpoints] = field(default_factory=list)
    programming: list[ProgrammingLatency] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)  # the metrics this kube-proxy does not export


@dataclass
class LogCause:
    """The lines of kube-proxy's log naming one cause, since the agent's previous read."""

    cause: str  # e.g. "iptables_restore_failed"; the finding id is kube_proxy_log.<cause>
    count: int
    first_line: str  # the message only (no CRI or klog prefix), truncated
    last_line: str
    first_at: str | None = None  # the line's own timestamp (CRI) when it has one
    last_at: str | None = None
    detail: str | None = None  # e.g. iptables-restore's "line 86 failed" from the lines after the message
    services: list[str] = field(default_factory=list)  # Services the lines name (servicePortName=...), a few


@dataclass
class KubeProxyLog:
    origin: str  # "files /var/log/pods/kube-system_kube-proxy-..." or "journald unit kube-proxy"
    first_read: bool  # the reader's first read: only the recent tail was read (window_s)
    window_s: float | None = None  # on a first read: how far back lines were counted
    bytes_read: int = 0
    lines_read: int = 0
    skipped_bytes: int = 0  # more was written since the last read than one read may take: skipped
    files: list[str] = field(default_factory=list)  # host paths read in this round
    causes: list[LogCause] = field(default_factory=list)
