"""Why the rules are wrong, in kube-proxy's own numbers: failed syncs, slow programming, Local policies
with no local endpoint. The rises were computed by the collector's reader; this only judges them."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.expected import port_name
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState

PARTIAL = "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total"
SLOW_P99_S = 30.0  # SIG Scalability's network programming SLO: p99 within 30 s
MIN_OBSERVATIONS = 5  # fewer changes than this between reads say little about a percentile
MAX_NAMED = 5


def _local_policy_services(state: ClusterState, policy: str) -> list[str]:
    """Service ports with a Local `policy` ("internal"/"external") as the API states them, a few."""
    out: list[str] = []
    for svc in state.services:
        for sp in svc.ports:
            external = bool(sp.node_port or svc.external_ips or svc.load_balancer_ips)
            if (policy == "internal" and svc.internal_traffic_policy == "Local") or (
                    policy == "external" and external and svc.external_traffic_policy == "Local"):
                out.append(port_name(svc.namespace, svc.name, sp.name))
    return sorted(out)[:MAX_NAMED]


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.kube_proxy_http
    if not src.ok or src.data is None or src.data.signals is None:
        return
    sig = src.data.signals
    interval = sig.read_at - sig.previous_read_at if sig.previous_read_at is not None else None
    for c in sig.failures:
        if c.delta:
            ev = {"metric": c.metric, "rose_by": c.delta, "value": c.value, "over_seconds": interval,
                  "ip_family": c.ip_family or "not labelled (kube-proxy < 1.33)"}
            yield finding("kube_proxy.sync_failures", snap.node, evidence=ev,
                          severity="warning" if c.metric == PARTIAL else None)
    for p in sig.programming:
        if p.observations >= MIN_OBSERVATIONS and p.p99_upper_s is not None and p.p99_upper_s > SLOW_P99_S:
            yield finding("kube_proxy.network_programming_slow", snap.node, evidence={
                "p99_at_most_seconds": p.p99_upper_s, "observations": p.observations, "over_seconds": interval,
                "slo_seconds": SLOW_P99_S, "ip_family": p.ip_family or "not labelled (kube-proxy < 1.33)"})
    cluster = snap.cluster.data if snap.cluster.ok and snap.cluster.data is not None else None
    for n in sig.no_local_endpoints:
        if n.services <= 0:
            continue
        ev = {"traffic_policy": n.traffic_policy, "services": n.services,
              "ip_family": n.ip_family or "not labelled (kube-proxy < 1.33)"}
        if cluster is not None and cluster.usable:
            ev["local_policy_services"] = _local_policy_services(cluster, n.traffic_policy)
        # internal Local: this node's own pods get no answer; external Local: by design, the load balancer
        # steers away from a node without endpoints (its health check port fails)
        yield finding("kube_proxy.no_local_endpoints", snap.node, evidence=ev,
                      severity="warning" if n.traffic_policy == "internal" else "info")
