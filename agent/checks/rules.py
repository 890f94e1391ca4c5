"""Expected vs actual: does this node's proxy program every Service port the API server has, and nothing else?

The expected side comes from agent/checks/expected.py (kube-proxy's own endpoint rules), the actual side
from agent/checks/programmed.py (whatever the proxy mode). Differences younger than the grace period
(default twice kube-proxy's sync period, counted from the objects' last change) are kube-proxy catching
up, not faults, and are not reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator

from agent.catalogue import finding
from agent.checks.expected import host_of
from agent.checks.families import served_families
from agent.model import Finding, Snapshot
from agent.model.programmed import (
    DROP,
    EXTERNAL_IP,
    FIREWALL,
    LOAD_BALANCER_IP,
    NODE_PORT,
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


# the modes whose readers show the short-circuit beside a policy DROP and the source-ranges firewall
RULE_MODES = ("iptables", "nftables")


def _dispatch_by_address(prog: ProgrammedPort | None) -> dict[tuple[str, str], dict[str, Dispatch]]:
    """(kind, address) -> action -> the rule or element that shows it. One address may have several: a dispatch to
    the Service beside a "no local endpoints" DROP (traffic policy Local), or beside a source-ranges firewall."""
    have: dict[tuple[str, str], dict[str, Dispatch]] = {}
    for d in prog.dispatch if prog else []:
        have.setdefault((d.kind, d.address), {}).setdefault(d.action, d)
    return have


def compare_port(exp: ExpectedPort, prog: ProgrammedPort | None, mode: str) -> Iterator[Finding]:
    have = _dispatch_by_address(prog)
    rejected = False
    for (kind, address), want in sorted(exp.dispatch.items()):
        got = have.get((kind, address)) or have.get((_SAME_RULE.get(kind, kind), address)) or {}
        # A reject/drop is what the traffic meets first (the filter hooks), whatever order the reader listed them in.
        stop = got.get(REJECT) or got.get(DROP)
        shown = stop or got.get(TO_SERVICE)
        ev = {"mode": mode, "kind": kind, "address": address, "expected": want,
              "actual": shown.evidence if shown else None}
        if want == TO_SERVICE and shown is None:
            yield finding("rules.service_missing", exp.service, service=exp.service, evidence=ev)
        elif want == TO_SERVICE and stop is not None:
            rejected = True
            yield finding("rules.reject_stale", exp.service, service=exp.service, evidence=ev)
        elif want in (REJECT, DROP) and stop is None:
            yield finding("rules.reject_missing", exp.service, service=exp.service, evidence=ev)
        if mode not in RULE_MODES:
            continue  # IPVS keeps firewalls and policy drops in ipsets its reader does not model
        if want == DROP and (kind, address) in exp.short_circuit and TO_SERVICE not in got:
            # the DROP is for outside clients only: pods and node-local clients go on to the Service through it
            yield finding("rules.service_missing", exp.service, service=exp.service, evidence={
                **ev, "expected": TO_SERVICE, "actual": None,
                "why": "traffic policy Local without a local endpoint: node-local clients and pods use this rule"})
        if want == TO_SERVICE and kind == LOAD_BALANCER_IP and exp.source_ranges:
            yield from _firewall(exp, prog, mode, address, got)
    if prog is None:
        return
    if exp.localhost_node_port and mode == "iptables":
        yield from _localhost_twins(exp, prog)
    if rejected and not prog.endpoints and not prog.local_endpoints:
        return  # the stale reject is the one fault: kube-proxy never got these endpoints
    chains = prog.evidence
    if exp.cluster_endpoints is not None or prog.endpoints:
        yield from _compare_endpoints(exp, prog, mode, chains.get("cluster", chains.get("chain", "")),
                                      exp.cluster_endpoints, set(prog.endpoints))
    if exp.local_endpoints is not None or prog.local_endpoints:
        yield from _compare_endpoints(exp, prog, mode, chains.get("local", ""), exp.local_endpoints,
                                      set(prog.local_endpoints or []))


def _firewall(exp: ExpectedPort, prog: ProgrammedPort | None, mode: str, address: str,
              got: dict[str, Dispatch]) -> Iterator[Finding]:
    """loadBalancerSourceRanges on one LB address: the ranges let on to the Service, the others dropped."""
    ev = {"mode": mode, "address": address, "ranges": exp.source_ranges}
    allowed = prog.allowed_sources if prog is not None else None
    if allowed is not None:  # the reader shows the allow rules (iptables KUBE-FW)
        missing = [r for r in exp.source_ranges if r not in allowed]
        if missing:
            yield finding("rules.lb_source_range_missing", exp.service, service=exp.service, evidence={
                **ev, "missing": missing, "allowed": allowed,
                "chain": prog.evidence.get("fw_chain", "") if prog else ""})
    if FIREWALL not in got:
        # What the missing drop does differs by mode (measured in tests/integration/test_packets_off_node.py).
        # nftables: the firewall-ips element is the only gate, so without it every client is sent to the Service.
        # iptables: KUBE-FW-<hash> lets only the ranges on to KUBE-EXT, so outside clients are still not DNATed;
        # KUBE-PROXY-FIREWALL's DROP only stops their packets going wherever the node routes the LB address.
        gated = mode == "iptables" and allowed is not None
        effect = (f"outside clients are still kept from the Service ({prog.evidence.get('fw_chain', 'KUBE-FW')} "
                  "lets only the ranges on to it), but their packets to that address are no longer dropped here and "
                  "go wherever this node routes it" if gated and prog is not None else
                  "the ranges are not enforced: anyone who reaches this node can use the Service there")
        yield finding("rules.lb_source_ranges_not_enforced", exp.service, service=exp.service,
                      evidence={**ev, "effect": effect}, severity="info" if gated else None)


def _localhost_twins(exp: ExpectedPort, prog: ProgrammedPort) -> Iterator[Finding]:
    twins = set(prog.localhost_node_ports or [])
    for (kind, address), want in sorted(exp.dispatch.items()):
        dispatched = want == TO_SERVICE or (kind, address) in exp.short_circuit  # kube-proxy writes the nat rule
        if kind == NODE_PORT and dispatched and address not in twins \
                and any(d.kind == NODE_PORT and d.address == address for d in prog.dispatch):
            yield finding("rules.localhost_node_port_missing", exp.service, service=exp.service,
                          evidence={"address": address, "localhost": f"127.0.0.0/8{address}"})


def compare(expected: list[ExpectedPort], view: ProgrammedServices,
            settling_now: Callable[[ExpectedPort], bool] = lambda _: False,
            served: Collection[int] | None = None) -> Iterator[Finding]:
    """Every difference between the expected Service ports and the programmed ones, per IP family: a dual-stack
    Service is two comparisons, each finding saying its family. `served`: the families kube-proxy serves on this
    node (None: not known); a family it does not serve is judged neither way, whatever rules the reader saw."""
    judged = {f for f in view.families if served is None or f in served}
    actual: dict[Key, ProgrammedPort] = {(p.service, p.protocol, p.family): p for p in view.ports}
    known: set[Key] = set()
    for exp in expected:
        key = (exp.service, exp.protocol, exp.family)
        known.add(key)
        if exp.family not in judged or settling_now(exp):
            continue
        for f in compare_port(exp, actual.get(key), view.mode):
            yield _of_family(f, exp.family)
    for key, prog in sorted(actual.items()):
        if key not in known and prog.family in judged:
            yield finding("rules.service_stale", prog.service, service=prog.service, evidence={
                "mode": view.mode, "protocol": prog.protocol, "family": prog.family, "chains": prog.evidence,
                "dispatch": [d.evidence for d in prog.dispatch]})


def _of_family(f: Finding, family: int) -> Finding:
    """The IP family in the evidence: on a dual-stack node a NodePort (":30001") or a Service name alone does not
    say which of the two rule sets is at fault."""
    return dataclasses.replace(f, evidence={**f.evidence, "family": family})


def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
    view, expected, cluster = views.programmed, views.expected, snap.cluster.data
    if expected is None or cluster is None or not cluster.comparable:
        return  # nothing to compare with (agent.source_failed / api.unreachable / api.node_not_found say why)
    if view is None:
        return
    grace = grace_seconds(snap)
    read_at = view.read_at or snap.taken_at  # a paced reader may hand back rules read some time ago
    yield from compare(list(expected), view, lambda exp: settling(exp, read_at, grace), served_families(snap))
