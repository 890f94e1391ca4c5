"""The Debug Services guide for one Service, step by step, as a pure function.

Inputs: the cluster state (in the snapshot), the node's snapshot and the findings its checks made, the
Service's pods (fetched on demand; None when only this node's pods are known) and the probe results
(None when probes are off). Output: an Explanation whose steps follow the guide's order
(https://kubernetes.io/docs/tasks/debug/debug-application/debug-service/). No I/O.

A step that cannot judge (its source failed, probes off, nothing on this node) is skipped with the reason;
a step is never "ok" from silence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.catalogue import finding
from agent.checks.mode import decide_mode
from agent.checks.probes import resolv_conf_loop
from agent.explain.derive import RulesView, service_rules
from agent.explain.model import OK, PROBLEM, SKIPPED, Explanation, ServiceQuery, Status, Step
from agent.explain.plan import cluster_ips, fqdn, kubelet_dns, slice_port
from agent.kubeobjects import parse_selector
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState, PodSpec, ServicePortSpec, ServiceSpec, SliceSpec
from agent.model.probes import CLUSTER_IP, DNS, ENDPOINT, REFUSED, TIMEOUT, UNREACHABLE, ProbeResult, ProbeSet
from agent.model.views import ModeDecision, Views

RECENT_RESTART_S = 3600.0  # a restart within the last hour is the guide's "pods are crashing" hint
CRASHING = ("CrashLoopBackOff", "RunContainerError", "CreateContainerError")
NODE_KUBE_PROXY = ("kube_proxy.not_running", "kube_proxy.unhealthy", "kube_proxy.sync_stale",
                   "kube_proxy.mode_unsupported", "kube_proxy.mode_mismatch", "kube_proxy.stale_mode_rules")
NODE_FORWARDING = ("node.ip_forward_disabled", "node.bridge_nf_call_iptables_disabled",
                   "conntrack.kernel_module_missing", "conntrack.table_full")
NODE_HAIRPIN = ("kubelet.hairpin_mode_none", "cni.hairpin_disabled", "bridge.not_promiscuous")

TITLES = {
    "service": "Does the Service exist?",
    "dns_service": "Does the Service work by DNS name?",
    "dns_any": "Does any Service work by DNS name?",
    "by_ip": "Does the Service work by IP?",
    "definition": "Is the Service defined correctly?",
    "endpoints": "Does the Service have any Endpoints?",
    "pods": "Are the Pods working?",
    "kube_proxy": "Is kube-proxy working?",
    "rules": "Is kube-proxy writing this Service's rules?",
    "proxying": "Is kube-proxy proxying?",
    "hairpin": "Edge case: can a Pod reach itself via the Service IP?",
}
ORDER = tuple(TITLES)


class CannotExplain(Exception):
    """The walk has nothing to stand on (no usable cluster state): exit 2, not a finding."""


def _step(sid: str, status: Status, summary: str, evidence: dict[str, Any] | None = None,
          findings: Sequence[Finding] = (), symptom: bool = False) -> Step:
    return Step(sid, TITLES[sid], status, summary, dict(evidence or {}), tuple(findings), symptom)


def _skip(sid: str, why: str) -> Step:
    return _step(sid, SKIPPED, why)


def _outcome(r: ProbeResult) -> str:
    return r.outcome + (f" ({r.error})" if r.error and r.error != r.outcome.upper() else "")


def _probe_ev(r: ProbeResult) -> dict[str, Any]:
    ev: dict[str, Any] = {"address": r.target.address, "port": r.target.port, "outcome": r.outcome,
                          "latency_seconds": round(r.latency_s, 6)}
    if r.target.name:
        ev["name"] = r.target.name
        ev["answers"] = list(r.answers)
    if r.error:
        ev["error"] = r.error
    return ev


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def closest_pods(selector: dict[str, str], pods: Sequence[PodSpec], n: int = 3) -> list[dict[str, Any]]:
    """The pods that miss the selector by the fewest labels, and which labels differ."""
    scored = []
    for p in pods:
        diff = {k: {"want": v, "has": p.labels.get(k)} for k, v in selector.items() if p.labels.get(k) != v}
        scored.append((len(diff), p.name, diff))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [{"pod": name, "differs": diff} for _, name, diff in scored[:n]]


def resolve_target_port(sp: ServicePortSpec, pods: Sequence[PodSpec]) -> dict[str, int | None]:
    """pod name -> the container port a Service port's targetPort means on that pod (None: no such
    containerPort name). A numeric (or unset) targetPort is the same number on every pod."""
    target = sp.target_port or str(sp.port)
    if target.isdigit():
        return {p.name: int(target) for p in pods}
    return {p.name: next((c.port for c in p.container_ports if c.name == target and c.protocol == sp.protocol), None)
            for p in pods}


@dataclass
class _Ctx:
    query: ServiceQuery
    snap: Snapshot
    state: ClusterState
    findings: Sequence[Finding]
    svc: ServiceSpec
    ports: list[ServicePortSpec]
    slices: list[SliceSpec]
    pods: list[PodSpec]  # the pods the selector matches
    pods_scope: str  # "namespace" | "this node"
    ns_pods: list[PodSpec]  # every pod seen in the namespace (for near misses)
    probes: ProbeSet | None
    probes_off: str
    now: float
    views: Views | None = None  # the run's derived views (None: derived from the snapshot when needed)

    @property
    def key(self) -> str:
        return f"{self.svc.namespace}/{self.svc.name}"

    def port_name(self, sp: ServicePortSpec) -> str:
        return f"{self.key}:{sp.name}" if sp.name else self.key

    def results(self, kind: str, name: str | None = None) -> list[ProbeResult]:
        if self.probes is None:
            return []
        return [r for r in self.probes.results if r.target.kind == kind and (name is None or r.target.name == name)]

    def node_findings(self, ids: Sequence[str]) -> list[Finding]:
        return [f for f in self.findings if f.id in ids]


def walk(query: ServiceQuery, snap: Snapshot, findings: Sequence[Finding], pods: Sequence[PodSpec] | None,
         probes: ProbeSet | None, *, now: float, probes_off: str = "probes are off (--no-probes)",
         views: Views | None = None) -> Explanation:
    state = snap.cluster.data if snap.cluster.ok else None
    if state is None or not state.usable:
        why = snap.cluster.error or snap.cluster.note or (state.api_error if state else None) or "no cluster state"
        raise CannotExplain(f"no usable cluster state: {why}")
    svc = next((s for s in state.services if s.namespace == query.namespace and s.name == query.name), None)
    if svc is None:
        f = finding("service.not_found", str(query), evidence={"origin": state.origin})
        missing = (_step("service", PROBLEM, f.message, {"origin": state.origin}, [f]),
                   *(_skip(sid, "the Service does not exist") for sid in ORDER[1:]))
        return Explanation(query, snap.node, now, missing, state.origin)
    ports = [p for p in svc.ports if query.port is None or query.port in (p.name, str(p.port))]
    selector = parse_selector(svc.selector)
    known = list(pods) if pods is not None else [p for p in state.pods if p.namespace == svc.namespace]
    ctx = _Ctx(query, snap, state, findings, svc, ports,
               [s for s in state.slices if s.namespace == svc.namespace and s.service == svc.name],
               [p for p in known if selector_matches(selector, p.labels)],
               "namespace" if pods is not None else "this node", known, probes, probes_off, now, views)
    first = _service(ctx)
    if first.status == PROBLEM:
        return Explanation(query, snap.node, now, (first, *(_skip(s, "no such port") for s in ORDER[1:])),
                           state.origin)
    steps = (first, _dns_service(ctx), _dns_any(ctx), _by_ip(ctx), _definition(ctx), _endpoints(ctx), _pods(ctx),
             _kube_proxy(ctx), _rules(ctx), _proxying(ctx), _hairpin(ctx))
    return Explanation(query, snap.node, now, steps, state.origin)


# 1. the Service -------------------------------------------------------------------------------------

def _service(c: _Ctx) -> Step:
    svc = c.svc
    ev = {"type": svc.type, "cluster_ips": svc.cluster_ips,
          "ports": [f"{p.name or '-'} {p.port}/{p.protocol}" for p in svc.ports], "selector": svc.selector}
    if not c.ports:
        f = finding("service.port_not_found", c.key, service=c.key,
                    evidence={"port": c.query.port, "ports": ", ".join(ev["ports"]) or "none"})
        return _step("service", PROBLEM, f.message, ev, [f])
    return _step("service", OK, f"{svc.type} Service {c.key}, ClusterIP {', '.join(svc.cluster_ips) or 'none'}, "
                 f"port(s) {', '.join(f'{p.port}/{p.protocol}' for p in c.ports)}", ev)


# 2-3. DNS -------------------------------------------------------------------------------------------

def _dns_skip_reason(c: _Ctx) -> str | None:
    if c.probes is None:
        return c.probes_off
    if not c.results(DNS):
        return "kubelet's clusterDNS is not known on this node (kubelet not found or no clusterDNS)"
    return None


def _dns_failure(r: ProbeResult, subject: str, service: str | None) -> Finding:
    if r.outcome in (TIMEOUT, REFUSED, UNREACHABLE):
        return finding("dns.server_unreachable", subject, service=service,
                       evidence={**_probe_ev(r), "server": r.target.address})
    return finding("dns.name_unresolved", subject, service=service,
                   evidence={**_probe_ev(r), "server": r.target.address})


def _dns_service(c: _Ctx) -> Step:
    why = _dns_skip_reason(c)
    if why:
        return _skip("dns_service", why)
    name = fqdn(c.svc.namespace, c.svc.name, kubelet_dns(c.snap.kubelet.data).domain)
    asked = c.results(DNS, name)
    if not asked:
        return _skip("dns_service", f"{name} was not asked (probe cap)")
    r = asked[0]
    ev = _probe_ev(r)
    if not r.ok:
        return _step("dns_service", PROBLEM, f"{name} at {r.target.address}: {_outcome(r)}", ev,
                     [_dns_failure(r, c.key, c.key)])
    want = cluster_ips(c.svc)
    if want and not set(want) & set(r.answers):
        f = finding("dns.stale_answer", c.key, service=c.key,
                    evidence={**ev, "server": r.target.address, "expected": ", ".join(want),
                              "answers_text": ", ".join(r.answers)})
        return _step("dns_service", PROBLEM, f.message, ev, [f])
    return _step("dns_service", OK, f"{name} -> {', '.join(r.answers)}", ev)


def _dns_any(c: _Ctx) -> Step:
    why = _dns_skip_reason(c)
    if why:
        return _skip("dns_any", why)
    name = fqdn("default", "kubernetes", kubelet_dns(c.snap.kubelet.data).domain)
    found: list[Finding] = []
    ev: dict[str, Any] = {}
    for r in c.results(DNS, name)[:1]:
        ev = _probe_ev(r)
        if not r.ok:
            found.append(_dns_failure(r, "default/kubernetes", None))
    assert c.probes is not None
    ev["resolv_conf"] = {"file": c.probes.resolv_conf, "nameservers": c.probes.nameservers,
                         "error": c.probes.resolv_conf_error}
    found += resolv_conf_loop(c.probes)
    if found:
        return _step("dns_any", PROBLEM, found[0].message, ev, found)
    return _step("dns_any", OK, f"{name} -> {', '.join(ev.get('answers', []))}; "
                 f"{c.probes.resolv_conf or 'no resolv.conf'} has no loopback nameserver", ev)


# 4. by IP (a symptom: says that, not where) ---------------------------------------------------------

def _verdict(c: _Ctx) -> str:
    eps = c.results(ENDPOINT)
    if not any(sl.endpoints for sl in c.slices):
        return "the Service has no endpoints (see 'Does the Service have any Endpoints?')"
    if eps and not any(r.ok for r in eps):
        return "the pods do not answer on targetPort either: the application's side"
    if any(r.ok for r in eps):
        return "the pods answer but the ClusterIP does not: kube-proxy's side"
    return "the endpoints could not be probed"


def _by_ip(c: _Ctx) -> Step:
    if not cluster_ips(c.svc):
        return _skip("by_ip", f"{c.svc.type} Service without a ClusterIP: clients reach the pods directly")
    if c.probes is None:
        return _skip("by_ip", c.probes_off)
    results = c.results(CLUSTER_IP)
    if not results:
        return _skip("by_ip", "no port of this Service can be probed (only TCP, and UDP DNS, are)")
    ev = {"probes": [_probe_ev(r) for r in results]}
    bad = [r for r in results if not r.ok]
    if not bad:
        return _step("by_ip", OK, ", ".join(f"{r.target.address}:{r.target.port} {r.outcome}" for r in results), ev)
    verdict = _verdict(c)
    found = [finding("service.not_answering", r.target.subject, service=r.target.subject,
                     evidence={**_probe_ev(r), "verdict": verdict}) for r in bad]
    return _step("by_ip", PROBLEM, found[0].message, {**ev, "verdict": verdict}, found, symptom=True)


# 5. definition --------------------------------------------------------------------------------------

def _definition(c: _Ctx) -> Step:
    svc = c.svc
    ev: dict[str, Any] = {"type": svc.type, "external_traffic_policy": svc.external_traffic_policy,
                          "internal_traffic_policy": svc.internal_traffic_policy, "ports": []}
    found: list[Finding] = []
    for sp in c.ports:
        resolved = resolve_target_port(sp, c.pods)
        declared = sorted({f"{p.name or '-'}={p.port}/{p.protocol}" for pod in c.pods for p in pod.container_ports})
        port_ev = {"name": sp.name, "port": sp.port, "protocol": sp.protocol,
                   "target_port": sp.target_port or str(sp.port), "node_port": sp.node_port,
                   "resolved": resolved, "container_ports": declared}
        ev["ports"].append(port_ev)
        named = not (sp.target_port or str(sp.port)).isdigit()
        if named and c.pods and all(v is None for v in resolved.values()):
            found.append(finding("service.target_port_unresolved", c.port_name(sp), service=c.port_name(sp),
                                 evidence={**port_ev, "pods": len(c.pods), "declared": ", ".join(declared) or
                                           "no container ports"}))
    if svc.internal_traffic_policy == "Local":
        ev["note"] = "internalTrafficPolicy Local: pods reach only endpoints on their own node"
    if found:
        return _step("definition", PROBLEM, found[0].message, ev, found)
    if not c.pods and svc.selector:
        return _step("definition", OK, "ports and protocols are consistent; named targetPorts are checked against "
                     "pods, and no pod matches the selector (next step)", ev)
    return _step("definition", OK, "; ".join(
        f"{p['port']}/{p['protocol']} -> targetPort {p['target_port']}" for p in ev["ports"]), ev)


# 6. endpoints ---------------------------------------------------------------------------------------

def _endpoint_counts(slices: list[SliceSpec]) -> dict[str, int]:
    eps = [ep for sl in slices for ep in sl.endpoints]
    return {"total": len(eps), "ready": sum(e.ready for e in eps),
            "serving": sum(e.serving for e in eps), "terminating": sum(e.terminating for e in eps)}


def _near_miss(p: dict[str, Any]) -> str:
    differs = ", ".join(f"{k}={v['has']!r} not {v['want']!r}" for k, v in p["differs"].items())
    return f"{p['pod']} ({differs})"


def _endpoints(c: _Ctx) -> Step:
    svc = c.svc
    if svc.type == "ExternalName":
        return _skip("endpoints", "ExternalName: a DNS alias, with no endpoints")
    counts = _endpoint_counts(c.slices)
    ev: dict[str, Any] = {"selector": svc.selector or None, "slices": [s.name for s in c.slices], **counts,
                          "pods_matched": len(c.pods), "pods_seen_in": c.pods_scope}
    if svc.selector and not c.pods and not counts["total"]:
        if c.pods_scope != "namespace":
            return _skip("endpoints", "the selector matches no pod on this node and the namespace's pods were not "
                         "read; the Service has no endpoints")
        closest = closest_pods(parse_selector(svc.selector), c.ns_pods)
        hint = "" if not closest else "; closest: " + "; ".join(_near_miss(p) for p in closest)
        f = finding("service.selector_matches_nothing", c.key, service=c.key,
                    evidence={"selector": svc.selector, "namespace": svc.namespace, "closest": hint,
                              "pods_in_namespace": len(c.ns_pods), "near_misses": closest})
        return _step("endpoints", PROBLEM, f.message, {**ev, "near_misses": closest}, [f])
    # ports: each slice's port for the Service port against what the pods declare
    mismatched = []
    for sp in c.ports:
        resolved = {v for v in resolve_target_port(sp, c.pods).values() if v is not None}
        for sl in c.slices:
            got = slice_port(sl, sp)
            if got is not None and resolved and got not in resolved:
                mismatched.append({"slice": sl.name, "port": sp.name or str(sp.port), "slice_port": got,
                                   "pods_target_port": sorted(resolved)})
    ev["port_mismatches"] = mismatched
    if counts["ready"] == 0:
        why = ("selectorless, and no EndpointSlice lists an endpoint: create them by hand (or with the controller "
               "that manages them)" if not svc.selector and not counts["total"] else
               f"{len(c.pods)} pod(s) match the selector, {sum(p.ready for p in c.pods)} ready; "
               f"{counts['total']} endpoint(s), {counts['serving']} serving, {counts['terminating']} terminating")
        f = finding("service.no_endpoints", c.key, service=c.key, evidence={**counts, "why": why})
        return _step("endpoints", PROBLEM, f.message, ev, [f])
    kind = "selectorless Service with its own EndpointSlices" if not svc.selector else "selector"
    return _step("endpoints", OK, f"{counts['ready']} ready of {counts['total']} endpoint(s) ({kind}), "
                 f"{counts['terminating']} terminating", ev)


# 7. pods --------------------------------------------------------------------------------------------

def _pods(c: _Ctx) -> Step:
    ev: dict[str, Any] = {"scope": c.pods_scope, "pods": [
        {"pod": p.name, "node": p.node_name, "phase": p.phase, "ready": p.ready, "restarts": p.restarts,
         "waiting": p.waiting_reason, "ips": p.ips} for p in c.pods]}
    eps = c.results(ENDPOINT)
    ev["probes"] = [_probe_ev(r) for r in eps]
    found: list[Finding] = []
    for r in eps:
        if not r.ok:
            found.append(finding("probe.endpoint_not_answering", r.target.subject, service=r.target.subject,
                                 evidence={**_probe_ev(r), "endpoint": f"{r.target.address}:{r.target.port}"}))
    restarting = [p for p in c.pods if p.waiting_reason in CRASHING or (
        p.restarts and p.last_restart is not None and c.now - p.last_restart < RECENT_RESTART_S)]
    if restarting:
        found.append(finding("service.pods_restarting", c.key, service=c.key, evidence={
            "restarting": len(restarting), "pods": len(c.pods),
            "detail": ", ".join(f"{p.name}: {p.restarts} restarts" + (f", {p.waiting_reason}" if p.waiting_reason
                                                                        else "") for p in restarting)}))
    not_ready = [p for p in c.pods if not p.ready]
    if c.pods and len(not_ready) == len(c.pods):
        found.append(finding("service.pods_not_ready", c.key, service=c.key, evidence={
            "not_ready": len(not_ready), "pods": len(c.pods),
            "detail": ", ".join(f"{p.name} {p.phase or 'unknown'}" for p in not_ready)}))
    if found:
        return _step("pods", PROBLEM, found[0].message, ev, found)
    if not c.pods and not eps:
        if not c.svc.selector:
            return _skip("pods", "selectorless: svcdoctor does not know which pods stand behind the endpoints")
        return _skip("pods", f"no pod matched (pods seen: {c.pods_scope})")
    answered = sum(r.ok for r in eps)
    probed = f", {answered} of {len(eps)} endpoint(s) answer on targetPort" if eps else (
        f" ({c.probes_off})" if c.probes is None else "")
    return _step("pods", OK, f"{sum(p.ready for p in c.pods)} of {len(c.pods)} pod(s) ready, none restarting "
                 f"recently{probed}", ev)


# 8-10. this node ------------------------------------------------------------------------------------

def _mode(c: _Ctx) -> ModeDecision:
    """The run's decision (a served snapshot keeps no rules to decide by: agent/model/report.py)."""
    return c.views.mode if c.views is not None else decide_mode(c.snap)


def _kube_proxy(c: _Ctx) -> Step:
    src = c.snap.kube_proxy
    if not src.ok:
        return _skip("kube_proxy", f"kube-proxy's process could not be read: {src.error}")
    d = _mode(c)
    ev = {"pid": src.data.pid if src.data else None, "mode": d.mode, "mode_source": d.source, "version": d.version}
    found = c.node_findings(NODE_KUBE_PROXY)
    if found:
        return _step("kube_proxy", PROBLEM, found[0].message, ev, found)
    if src.data is None:
        return _skip("kube_proxy", "kube-proxy's process was not collected")
    return _step("kube_proxy", OK, f"running (pid {src.data.pid}), mode {d.mode} ({d.source})", ev)


def _rules(c: _Ctx) -> Step:
    if not cluster_ips(c.svc):
        return _skip("rules", f"kube-proxy writes no rules for a {'headless' if c.svc.type != 'ExternalName' else ''}"
                     f"{c.svc.type} Service")
    if c.snap.kube_proxy.ok and c.snap.kube_proxy.data is None and _mode(c).mode is None:
        return _skip("rules", "kube-proxy is not running and no proxy rules were found")
    view: RulesView = service_rules(c.snap, c.views, c.state, c.svc)
    if view.unavailable:
        return _skip("rules", view.unavailable)
    names = {c.port_name(sp) for sp in c.ports}
    mine = [p for p in view.ports if p.expected.service in names]
    ev: dict[str, Any] = {"mode": view.mode, "ports": [{
        "service": p.expected.service, "family": p.expected.family,
        "expected": {f"{k} {a}": v for (k, a), v in sorted(p.expected.dispatch.items())},
        "expected_endpoints": sorted(p.expected.cluster_endpoints or []),
        "programmed": [d.evidence for d in p.programmed.dispatch] if p.programmed else [],
        "programmed_endpoints": list(p.programmed.endpoints) if p.programmed else [],
        "chains": dict(p.programmed.evidence) if p.programmed else {},
        "settling": p.settling} for p in mine]}
    found = [f for p in mine if not p.settling for f in p.differences]
    if found:
        return _step("rules", PROBLEM, found[0].message, ev, found)
    if mine and all(p.settling for p in mine if p.differences) and any(p.differences for p in mine):
        return _skip("rules", "the Service or its endpoints changed within the grace period: kube-proxy may still "
                     "be writing them")
    return _step("rules", OK, f"{view.mode}: {len(mine)} port(s) programmed as the API server says", ev)


def _mine(c: _Ctx, prefixes: tuple[str, ...]) -> list[Finding]:
    """Findings of these ids attributed to this Service (any of its ports)."""
    return [f for f in c.findings if f.id.startswith(prefixes) and f.service is not None
            and (f.service == c.key or f.service.startswith(c.key + ":"))]


def _proxying(c: _Ctx) -> Step:
    ct = c.snap.conntrack
    flows = c.snap.conntrack_flows
    stale = _mine(c, ("conntrack.stale_flows", "conntrack.blackholed_flows"))
    ev: dict[str, Any] = {"conntrack": {"entries": ct.data.count, "max": ct.data.max} if ct.ok and ct.data else None,
                          "service_entries": [f.evidence for f in stale] if flows.ok and not flows.absent
                          else f"not read ({flows.error or flows.note or 'no conntrack flows source'})",
                          "kube_proxy_log": [f.evidence for f in _mine(c, ("kube_proxy_log.",))]}
    found = c.node_findings(NODE_FORWARDING)
    if found:
        return _step("proxying", PROBLEM, found[0].message, ev, found)
    if stale:  # flows conntrack keeps sending where this Service no longer answers (kube-proxy's cleanup missed)
        return _step("proxying", PROBLEM, stale[0].message, ev, stale)
    results = c.results(CLUSTER_IP)
    if any(r.ok for r in results):
        return _step("proxying", OK, "connections to the ClusterIP are NATed to an endpoint and answered", ev)
    if results and any(r.ok for r in c.results(ENDPOINT)):
        ev["verdict"] = "the pods answer but the ClusterIP does not: kube-proxy's side"
        f = finding("service.not_answering", c.key, service=c.key, evidence={
            **_probe_ev(results[0]), "verdict": ev["verdict"]})
        return _step("proxying", PROBLEM, f.message, ev, [f], symptom=True)
    if not ct.ok:
        return _skip("proxying", f"conntrack could not be read: {ct.error}")
    return _step("proxying", OK, "conntrack is loaded and has room; forwarding prerequisites are met", ev)


def _hairpin(c: _Ctx) -> Step:
    local = {ep.address for sl in c.slices for ep in sl.endpoints if ep.node_name == c.snap.node}
    if not local:
        return _skip("hairpin", "no endpoint of this Service runs on this node")
    links = c.snap.links.data if c.snap.links.ok else None
    ports = [{"bridge": b.name, "interface": p.name, "pod_ips": p.pod_ips, "hairpin": p.hairpin,
              "bridge_promiscuous": b.promiscuous}
             for b in (links.bridges if links else []) for p in b.pod_ports() if set(p.pod_ips) & local]
    ev = {"local_endpoints": sorted(local), "bridge_ports": ports}
    found = [f for f in c.findings if f.id == "bridge.hairpin_disabled" and set(f.evidence.get("pod_ips", [])) & local]
    found += c.node_findings(NODE_HAIRPIN)
    if found:
        return _step("hairpin", PROBLEM, found[0].message, ev, found)
    if links is None:
        return _skip("hairpin", f"links could not be read: {c.snap.links.error}")
    return _step("hairpin", OK, f"{len(local)} endpoint(s) on this node; hairpin traffic can return to them", ev)
