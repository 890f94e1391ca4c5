"""What kube-proxy's log says stopped it, since the agent's previous read (the guide: "check its logs")."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot

IDS = {
    "iptables_restore_failed": "kube_proxy_log.iptables_restore_failed",
    "xtables_lock_timeout": "kube_proxy_log.xtables_lock_timeout",
    "nftables_failed": "kube_proxy_log.nftables_failed",
    "api_unauthorized": "kube_proxy_log.api_unauthorized",
    "api_unreachable": "kube_proxy_log.api_unreachable",
    "conntrack_cleanup_failed": "kube_proxy_log.conntrack_cleanup_failed",
    "ipvs_unusable": "kube_proxy_log.ipvs_unusable",
    "node_ip_unknown": "kube_proxy_log.node_ip_unknown",
    "sync_failed": "kube_proxy_log.sync_failed",
}
# "Sync failed" follows each of these in the log: with one of them named, it adds nothing
EXPLAINS_SYNC_FAILED = {"iptables_restore_failed", "xtables_lock_timeout", "nftables_failed"}


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.kube_proxy_log
    if not src.ok or src.data is None:
        return
    log = src.data
    since = (f"the last {log.window_s:.0f}s (first read)" if log.first_read and log.window_s
             else "the agent's previous read")
    named = {c.cause for c in log.causes}
    for c in log.causes:
        fid = IDS.get(c.cause)
        if fid is None or (c.cause == "sync_failed" and named & EXPLAINS_SYNC_FAILED):
            continue
        ev = {"count": c.count, "since": since, "line": c.last_line, "at": c.last_at, "first_line": c.first_line,
              "first_at": c.first_at, "origin": log.origin}
        if c.detail:
            ev["detail"] = c.detail
        if c.services:
            ev["services"] = c.services
        if log.skipped_bytes:
            ev["skipped_bytes"] = log.skipped_bytes
        yield finding(fid, snap.node, service=c.services[0] if len(c.services) == 1 else None, evidence=ev)
