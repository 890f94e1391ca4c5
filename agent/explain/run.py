"""Runs explain for one Service: fetch its pods, send its probes, walk (pure), and the agent's
`GET /explain?service=...` answer. The only explain code that does I/O (through agent/collect/)."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

from agent.collect.base import CollectError
from agent.collect.probes import Prober, resolv_conf
from agent.collect.service_pods import PodsSource
from agent.config import Config
from agent.explain.model import Explanation, ServiceQuery
from agent.explain.plan import allowed_addresses, kubelet_dns, service_targets
from agent.explain.walk import CannotExplain, walk
from agent.model.probes import ProbeSet
from agent.model.report import Report
from agent.report.explain_json import explain_document


def explain(report: Report, query: ServiceQuery, *, pods: PodsSource | None, prober: Prober | None,
            cfg: Config | None = None, now: float | None = None) -> Explanation:
    """Raises CannotExplain when there is no usable cluster state."""
    snap = report.snapshot
    state = snap.cluster.data if snap.cluster.ok else None
    svc = next((s for s in state.services if s.namespace == query.namespace and s.name == query.name), None) \
        if state is not None and state.usable else None
    pod_list = None
    if svc is not None and pods is not None:
        try:
            pod_list = pods(svc.namespace, svc.selector)
        except CollectError:
            pod_list = None  # the walk says it saw only this node's pods
    probes = None
    if svc is not None and state is not None and prober is not None:
        dns = kubelet_dns(snap.kubelet.data)
        ports = [p for p in svc.ports if query.port is None or query.port in (p.name, str(p.port))]
        slices = [s for s in state.slices if s.namespace == svc.namespace and s.service == svc.name]
        targets = service_targets(svc, ports, slices, dns)
        probes = ProbeSet(planned=len(targets), results=prober.run(targets, allowed_addresses(state, dns)))
        if cfg is not None and snap.kubelet.data is not None:
            resolv_conf(cfg, dns.resolv_conf, probes)
        elif snap.probes.data is not None:  # the agent read it on its last run
            seen = snap.probes.data
            probes.resolv_conf, probes.nameservers, probes.resolv_conf_error = (
                seen.resolv_conf, list(seen.nameservers), seen.resolv_conf_error)
    return walk(query, snap, report.findings, pod_list, probes, now=time.time() if now is None else now,
                views=report.views)


def explain_response(report: Report | None, query: str, *, pods: PodsSource | None = None,
                     prober: Prober | None = None) -> tuple[int, bytes]:
    """The agent's answer to GET /explain?service=NS/NAME[:PORT][&probes=0]: (HTTP status, JSON body)."""
    def error(status: int, message: str) -> tuple[int, bytes]:
        return status, (json.dumps({"error": message}) + "\n").encode()

    params = parse_qs(query, keep_blank_values=True)
    unknown = set(params) - {"service", "probes"}
    if unknown:
        return error(400, f"unknown parameter {sorted(unknown)[0]!r}; use service and probes")
    if not params.get("service"):
        return error(400, "missing parameter service=NAMESPACE/NAME[:PORT]")
    try:
        q = ServiceQuery.parse(params["service"][-1])
    except ValueError as exc:
        return error(400, str(exc))
    if params.get("probes", ["1"])[-1] not in ("0", "1"):
        return error(400, "probes must be 0 or 1")
    if report is None:
        return error(503, "no check has completed yet")
    use_probes = prober if params.get("probes", ["1"])[-1] == "1" else None
    try:
        expl = explain(report, q, pods=pods, prober=use_probes)
    except CannotExplain as exc:
        return error(503, str(exc))
    return 200, (json.dumps(explain_document(expl), indent=1) + "\n").encode()


def serve_options(cfg: Config, provider: object) -> dict[str, object]:
    """explain_response's keyword arguments for an agent: where pods come from, and its prober (none with
    --no-probes). One Prober for every /explain request of this agent, owned by the agent's State (not the
    module): its token bucket caps the traffic the requests add up to."""
    from agent.collect.service_pods import pods_source_for

    return {"pods": pods_source_for(provider), "prober": Prober() if cfg.probes else None}
