"""Connection tracking: module, table use, and the binary kube-proxy shells out to."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.settings import parse_version

NETLINK_SINCE = (1, 32)  # kube-proxy cleans conntrack over netlink from v1.32 on, not with the binary
WARN_RATIO = 0.9
# Per second, summed over CPUs. Any drop means a new connection was refused a table slot. A few insert
# failures a minute are the known UDP race (two packets of one new flow, e.g. DNS A and AAAA, on two CPUs);
# a steady stream is worth a look. Invalid packets are common (out-of-window TCP): only a flood is reported.
INSERT_FAILED_PER_S = 1.0
INVALID_PER_S = 100.0


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.conntrack
    if not src.ok or src.data is None:
        return
    ct = src.data
    if not ct.module_loaded:
        yield finding("conntrack.kernel_module_missing", snap.node, evidence={"file": "/proc/modules",
                      "sysctl": "net.netfilter.nf_conntrack_count absent"})
    elif ct.count is not None and ct.max:
        ratio = ct.count / ct.max
        if ratio >= WARN_RATIO:
            yield finding("conntrack.table_full", snap.node, severity="critical" if ratio >= 1 else "warning",
                          evidence={"count": ct.count, "max": ct.max, "percent": 100 * ratio})
    yield from _pressure(snap)
    proc = snap.kube_proxy.data
    if proc is not None and ct.kube_proxy_binary is None and ct.kube_proxy_binary_unknown is None:
        http = snap.kube_proxy_http.data
        version_text = http.version if http else None
        version = parse_version(version_text)
        if version is not None and version >= NETLINK_SINCE:
            return
        yield finding("conntrack.binary_missing", snap.node,
                      severity="critical" if version is not None else "warning",
                      evidence={"version": version_text or "unknown (kube-proxy metrics unreadable)",
                                "searched": ct.kube_proxy_binary_searched, "in_root_of_pid": proc.pid,
                                "host_binary": ct.host_binary})


def _pressure(snap: Snapshot) -> Iterator[Finding]:
    ct = snap.conntrack.data
    if ct is None:
        return
    if ct.stats_error:
        yield finding("agent.source_failed", "conntrack_stats", evidence={
            "source": "conntrack (/proc/net/stat/nf_conntrack)", "error": ct.stats_error})
        return
    if ct.stats is None or ct.stats.rates is None:  # first read: no interval to rate over
        return
    rates, interval = ct.stats.rates, ct.stats.interval_s
    ratio = {"count": ct.count, "max": ct.max}
    dropped = rates.get("drop", 0.0) + rates.get("early_drop", 0.0)
    if dropped > 0:
        yield finding("conntrack.dropping", snap.node, evidence={
            "drop_per_second": rates.get("drop", 0.0), "early_drop_per_second": rates.get("early_drop", 0.0),
            "over_seconds": interval, **ratio})
    if rates.get("insert_failed", 0.0) >= INSERT_FAILED_PER_S:
        yield finding("conntrack.insert_failures", snap.node, evidence={
            "insert_failed_per_second": rates["insert_failed"], "threshold_per_second": INSERT_FAILED_PER_S,
            "over_seconds": interval})
    if rates.get("invalid", 0.0) >= INVALID_PER_S:
        yield finding("conntrack.invalid_packets", snap.node, evidence={
            "invalid_per_second": rates["invalid"], "threshold_per_second": INVALID_PER_S, "over_seconds": interval})
