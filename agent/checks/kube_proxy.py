"""Is kube-proxy running, healthy, and keeping its rules in sync? (the guide's "Is kube-proxy working?")"""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot
from agent.settings import kube_proxy_settings

LAST_SYNC = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
LAST_QUEUED = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.kube_proxy
    if not src.ok:  # agent.source_failed reports it
        return
    proc = src.data
    if proc is None:
        yield finding("kube_proxy.not_running", snap.node, evidence={"searched": "processes named kube-proxy "
                      "in this network namespace", "note": src.note or ""})
        return
    if proc.config_error:
        yield finding("kube_proxy.config_unreadable", snap.node,
                      evidence={"path": proc.config_path, "error": proc.config_error, "pid": proc.pid})
    http_src = snap.kube_proxy_http
    if not http_src.ok or http_src.data is None:
        return
    http = http_src.data
    if http.healthz_error is not None or (http.healthz_status is not None and http.healthz_status != 200):
        detail = http.healthz_error or str(http.healthz_body or "")
        yield finding("kube_proxy.unhealthy", snap.node, evidence={
            "url": http.healthz_url, "status": http.healthz_status,
            "answer": f"answered {http.healthz_status}" if http.healthz_status else "did not answer",
            "detail": detail, "body": http.healthz_body})
    period = float(kube_proxy_settings(proc).sync_period_s.value)
    source = kube_proxy_settings(proc).sync_period_s.source
    signals = http.signals
    # per IP family when kube-proxy labels its timestamps (v1.33+), else the one pair it exports
    pairs = ([(st.ip_family, st.last_sync, st.last_queued) for st in signals.sync] if signals and signals.sync
             else [("", http.metrics.get(LAST_SYNC), http.metrics.get(LAST_QUEUED))])
    for family, last, queued in pairs:
        if last is None or queued is None:
            continue
        age = snap.taken_at - last
        if queued > last and age > 2 * period:
            evidence = {"age_seconds": age, "sync_period_seconds": period, "sync_period_source": source,
                        LAST_SYNC: last, LAST_QUEUED: queued}
            if family:
                evidence["ip_family"] = family
            if signals is not None:  # changes kube-proxy has queued but not synced, and since when
                for kind in ("endpoint", "service"):
                    pending = getattr(signals, f"{kind}_changes_pending")
                    since = getattr(signals, f"{kind}_changes_pending_since")
                    if pending:
                        evidence[f"{kind}_changes_pending"] = pending
                        evidence[f"{kind}_changes_pending_for_seconds"] = signals.read_at - (since or signals.read_at)
            yield finding("kube_proxy.sync_stale", snap.node, evidence=evidence)
