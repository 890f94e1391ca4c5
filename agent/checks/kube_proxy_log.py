"""What kube-proxy's log says stopped it, since the agent's previous read (the guide: "check its logs")."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.model.kube_proxy_signals import LogCause

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
        if c.cause == "sync_failed" and named & EXPLAINS_SYNC_FAILED:
            continue
        ev = {"count": c.count, "since": since, "line": c.last_line, "at": c.last_at, "first_line": c.first_line,
              "first_at": c.first_at, "origin": log.origin}
        if c.detail:
            ev["detail"] = c.detail
        if c.services:
            ev["services"] = c.services
        if log.skipped_bytes:
            ev["skipped_bytes"] = log.skipped_bytes
        found = _finding(c, snap.node, c.services[0] if len(c.services) == 1 else None, ev)
        if found is not None:
            yield found


def _finding(c: LogCause, node: str, service: str | None, ev: dict[str, object]) -> Finding | None:
    match c.cause:
        case "iptables_restore_failed":
            return finding("kube_proxy_log.iptables_restore_failed", node, service=service, evidence=ev)
        case "xtables_lock_timeout":
            return finding("kube_proxy_log.xtables_lock_timeout", node, service=service, evidence=ev)
        case "nftables_failed":
            return finding("kube_proxy_log.nftables_failed", node, service=service, evidence=ev)
        case "api_unauthorized":
            return finding("kube_proxy_log.api_unauthorized", node, service=service, evidence=ev)
        case "api_unreachable":
            return finding("kube_proxy_log.api_unreachable", node, service=service, evidence=ev)
        case "conntrack_cleanup_failed":
            return finding("kube_proxy_log.conntrack_cleanup_failed", node, service=service, evidence=ev)
        case "ipvs_unusable":
            return finding("kube_proxy_log.ipvs_unusable", node, service=service, evidence=ev)
        case "node_ip_unknown":
            return finding("kube_proxy_log.node_ip_unknown", node, service=service, evidence=ev)
        case "sync_failed":
            return finding("kube_proxy_log.sync_failed", node, service=service, evidence=ev)
    return None  # a cause this agent version does not know (a newer snapshot replayed)
