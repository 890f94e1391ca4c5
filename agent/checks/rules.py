"""Expected vs actual: does this node's proxy program every Service port the API server has, and nothing else?

The expected side comes from agent/checks/expected.py (kube-proxy's own endpoint rules), the actual side
from agent/checks/programmed.py (whatever the proxy mode). Differences younger than the grace period
(default twice kube-proxy's sync period, counted from the objects' last change) are kube-proxy catching
up, not faults, and are not reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from agent.catalogue import finding
from agent.checks.expected import host_of
from agent.model import Finding, Snapshot
from agent.model.programmed import (
    DROP,
    EXTERNAL_IP,
    LOAD_BALANCER_IP,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ExpectedPort,
    ProgrammedPort,
    ProgrammedServices,
)
from agent.model.views import Views
from agent.settings import kube_proxy_settings

Key = tuple[str, str, int]  # (service port name, protocol, family)


def grace_seconds(snap: Snapshot) -> float:
    if snap.settings.grace_s is not None:
        return snap.settings.grace_s
    return 2 * float(kube_proxy_settings(snap.kube_proxy.data).sync_period_s.value)


def settling(exp: ExpectedPort, rules_read_at: float, grace: float) -> bool:
    """The API object changed less than `grace` before the rules were read: kube-proxy may still be on it."""
    return exp.last_change is not None and rules_read_at - exp.last_change < grace


def _compare_endpoints(exp: ExpectedPort, prog: ProgrammedPort, mode: str, chain: str,
                       want: set[str] | None, have: set[str]) -> Iterator[Finding]:
    base = {"mode": mode, "chain": chain or "no endpoint chain"}
    if exp.topology_filtered and want is not None:
        # Zone hints: kube-proxy may program any non-empty subset of the usable endpoints.
        for ep in sorted(have - exp.usable_endpoints):
            yield finding("rules.endpoint_stale", exp.service, service=exp.service,
                          evidence={**base, "endpoint": ep, "expected": sorted(exp.usable_endpoints)})
        if not have and exp.usable_endpoints:
            for ep in sorted(exp.usable_endpoints):
                yield finding("rules.endpoint_missing", exp.service, service=exp.service,
                              evidence={**base, "endpoint": ep, "actual": []})
        return
    want = want or set()
    missing, stale = want - have, have - want
    stale_by_ip = {host_of(a): a for a in stale}
    for ep in sorted(missing):
        wrong = stale_by_ip.get(host_of(ep))
        if wrong is not None:
            stale.discard(wrong)
            yield finding("rules.endpoint_port_mismatch", exp.service, service=exp.service,
                          evidence={**base, "endpoint": ep, "programmed": wrong})
        else:
            yield finding("rules.endpoint_missing", exp.service, service=exp.service,
                          evidence={**base, "endpoint": ep, "actual": sorted(have)})
    for ep in sorted(stale):
        yield finding("rules.endpoint_stale", exp.service, service=exp.service,
                      evidence={**base, "endpoint": ep, "expected": sorted(want)})


# A "has no endpoints" REJECT for an external IP and one for a load-balancer IP are the same filter rule
# ("ns/svc:port has no endpoints", -d IP): with no nat rules beside it, a reader cannot tell them apart.
_SAME_RULE = {EXTERNAL_IP: LOAD_BALANCER_IP, LOAD_BALANCER_IP: EXTERNAL_IP}


def compare_port(exp: ExpectedPort, prog: ProgrammedPort | None, mode: str) -> Iterator[Finding]:
    have: dict[tuple[str, str], Dispatch] = {}
    for d in prog.dispatch if prog else []:
        # Both a dispatch to the Service and a "no (local) endpoints" reject/drop for one address (traffic
        # policy Local without a local endpoint): the reject/drop is what the traffic meets, whatever order
        # the reader listed them in.
        if (d.kind, d.address) not in have or d.action in (REJECT, DROP):
            have[(d.kind, d.address)] = d
    rejected = False
    for (kind, address), want in sorted(exp.dispatch.items()):
        got = have.get((kind, address)) or have.get((_SAME_RULE.get(kind, kind), address))
        ev = {"mode": mode, "kind": kind, "address": address, "expected": want,
              "actual": got.evidence if got else None}
        if want == TO_SERVICE and got is None:
            yield finding("rules.service_missing", exp.service, service=exp.service, evidence=ev)
        elif want == TO_SERVICE and got is not None and got.action in (REJECT, DROP):
            rejected = True
            yield finding("rules.reject_stale", exp.service, service=exp.service, evidence=ev)
        elif want in (REJECT, DROP) and got is None:
            yield finding("rules.reject_missing", exp.service, service=exp.service, evidence=ev)
    if prog is None:
        return
    if rejected and not prog.endpoints and not prog.local_endpoints:
        return  # the stale reject is the one fault: kube-proxy never got these endpoints
    chains = prog.evidence
    if exp.cluster_endpoints is not None or prog.endpoints:
        yield from _compare_endpoints(exp, prog, mode, chains.get("cluster", chains.get("chain", "")),
                                      exp.cluster_endpoints, set(prog.endpoints))
    if exp.local_endpoints is not None or prog.local_endpoints:
        yield from _compare_endpoints(exp, prog, mode, chains.get("local", ""), exp.local_endpoints,
                                      set(prog.local_endpoints or []))


def compare(expected: list[ExpectedPort], view: ProgrammedServices,
            settling_now: Callable[[ExpectedPort], bool] = lambda _: False) -> Iterator[Finding]:
    """Every difference between the expected Service ports and the programmed ones."""
    actual: dict[Key, ProgrammedPort] = {(p.service, p.protocol, p.family): p for p in view.ports}
    known: set[Key] = set()
    for exp in expected:
        key = (exp.service, exp.protocol, exp.family)
        known.add(key)
        if exp.family not in view.families or settling_now(exp):
            continue
        yield from compare_port(exp, actual.get(key), view.mode)
    for key, prog in sorted(actual.items()):
        if key not in known and prog.family in view.families:
            yield finding("rules.service_stale", prog.service, service=prog.service, evidence={
                "mode": view.mode, "protocol": prog.protocol, "chains": prog.evidence,
                "dispatch": [d.evidence for d in prog.dispatch]})


def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
    view, expected, cluster = views.programmed, views.expected, snap.cluster.data
    if expected is None or cluster is None or not cluster.comparable:
        return  # nothing to compare with (agent.source_failed / api.unreachable / api.node_not_found say why)
    if view is None:
        return
    grace = grace_seconds(snap)
    read_at = view.read_at or snap.taken_at  # a paced reader may hand back rules read some time ago
    yield from compare(list(expected), view, lambda exp: settling(exp, read_at, grace))
