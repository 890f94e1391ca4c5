"""Connection tracking: module, table use, and the binary kube-proxy shells out to."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.settings import parse_version

NETLINK_SINCE = (1, 32)  # kube-proxy cleans conntrack over netlink from v1.32 on, not with the binary
WARN_RATIO = 0.9


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
