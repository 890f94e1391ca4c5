"""IPVS mode's iptables rules: the node-wide `-m set` rules kube-proxy writes around its ipsets (the list and
where each comes from: agent/checks/ipvs_iptables_rules.py), compared with what iptables-save shows.

IPVS itself only balances; whether a packet to a Service VIP is let in (filter KUBE-IPVS-FILTER), masqueraded
(nat KUBE-SERVICES, KUBE-NODE-PORT, KUBE-LOAD-BALANCER) or held to loadBalancerSourceRanges (filter
KUBE-PROXY-FIREWALL) is decided by these rules. They are per set, not per Service: findings name the node's
chain and the set. Judged only in IPVS mode, and only from two whole reads: the iptables rules and `ipset save`
(which says which sets exist and which have members, so which rules kube-proxy writes). A failed `ipset save`
is agent.source_failed; a node without kube-proxy's sets (IPVS mode never set up) is judged by ipvs.py, not here.
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.families import served_families
from agent.checks.iptables_structure import forward_accepts, masquerade_rules
from agent.checks.ipvs_iptables_rules import INFO, JUDGED_WHEN_PRESENT, RULES, SetRule, set_name
from agent.checks.mode import decide_mode
from agent.model import Finding, Severity, Snapshot
from agent.model.iptables import RuleSet, Table, jump_target
from agent.model.ipvs import CLUSTER_IP_SET, IpvsState


def check(snap: Snapshot) -> Iterator[Finding]:
    decision = decide_mode(snap)
    if decision.mode != "ipvs" or not snap.ipvs.ok or snap.ipvs.data is None:
        return
    state = snap.ipvs.data
    if state.ipset_error is not None:
        yield finding("agent.source_failed", "ipset", evidence={"source": "ipset", "error": state.ipset_error})
        return
    if not snap.iptables.ok or snap.iptables.data is None:
        return  # agent.source_failed says so
    served = served_families(snap)
    for rs in snap.iptables.data.rulesets:
        if set_name(CLUSTER_IP_SET, rs.family) not in state.ipsets or (served is not None and rs.family not in served):
            continue  # kube-proxy's IPVS proxier never ran for this family: nothing of it to compare
        yield from judge(rs, state, snap.iptables.data.backend, decision.version or "(version unknown)")


def chain_rules(table: Table, chain: str) -> tuple[str, ...]:
    """A chain's rule texts, whether the reader kept them plain or parsed them as dispatch rules."""
    if chain in table.plain:
        return table.plain[chain]
    return tuple(r.text for r in table.dispatch.get(chain, ()))


def _present(rule: SetRule, rules: tuple[str, ...], family: int) -> int | None:
    """Index of the first saved rule that is this one, else None."""
    needles = rule.needles_for(family)
    for i, text in enumerate(rules):
        if jump_target(text) == rule.target and all(n in text for n in needles):
            return i
    return None


def _expected(rule: SetRule, state: IpvsState, family: int) -> bool:
    if rule.set and set_name(rule.set, family) not in state.ipsets:
        return False  # kube-proxy cannot have written a rule on a set that does not exist
    return not rule.written_if_members or bool(state.ipsets.get(set_name(rule.written_if_members, family)))


def _severity(rule: SetRule, state: IpvsState, family: int) -> Severity:
    """The rule's own severity, or info when every set it serves is empty (no address or port loses anything)."""
    if rule.serves and not any(state.ipsets.get(set_name(s, family)) for s in rule.serves):
        return INFO
    return rule.severity


def _absent_chains(rs: RuleSet, state: IpvsState, common: dict[str, object], version: str
                   ) -> tuple[set[tuple[str, str]], list[Finding]]:
    """The chains of RULES this ruleset lacks, and what to say of them. A chain newer than IPVS mode itself may be
    absent (an older kube-proxy); any other absent chain is iptables.chain_missing, once, instead of a finding per
    rule, and only while IPVS works: without it kube-proxy's IPVS proxier cannot run at all and
    ipvs.kernel_unavailable is the cause."""
    absent = {(r.table, r.chain) for r in RULES if r.chain not in rs.table(r.table).chains}
    said = [finding("iptables.chain_missing", f"{table}/{chain}", evidence={
        "table": table, "chain": chain, "version": version, **common})
        for table, chain in sorted(absent - JUDGED_WHEN_PRESENT) if state.kernel_available]
    return absent, said


def judge(rs: RuleSet, state: IpvsState, backend: str, version: str) -> Iterator[Finding]:
    common = {"family": rs.family, "backend": backend}
    absent, said = _absent_chains(rs, state, common, version)
    yield from said
    reject = next(r for r in RULES if r.chain == "KUBE-IPVS-FILTER" and r.target == "REJECT")
    for rule in RULES:
        if (rule.table, rule.chain) in absent or not _expected(rule, state, rs.family):
            continue
        rules = chain_rules(rs.table(rule.table), rule.chain)
        at = _present(rule, rules, rs.family)
        if at is not None and rule.chain == "KUBE-IPVS-FILTER" and rule.target == "RETURN":
            # the RETURNs let Service traffic past the REJECT only from above it
            rejected_at = _present(reject, rules, rs.family)
            at = None if rejected_at is not None and rejected_at < at else at
        if at is not None:
            continue
        the_set = set_name(rule.set, rs.family) if rule.set else ""
        subject = f"{rule.table}/{rule.chain}/{set_name(rule.key, rs.family)}"
        evidence = {"table": rule.table, "chain": rule.chain, "set": the_set or "(none)",
                    "set_members": len(state.ipsets.get(the_set, [])) if the_set else 0,
                    "rule": expected_text(rule, rs.family), "effect": rule.effect, "rules": list(rules[:12]), **common}
        severity = _severity(rule, state, rs.family)
        if rule.rejects:
            yield finding("ipvs.service_ips_rejected", subject, evidence=evidence, severity=severity)
        else:
            yield finding("ipvs.iptables_rule_missing", subject, evidence=evidence, severity=severity)
    nat_chains = set(rs.table("nat").chains)
    yield from masquerade_rules(rs, nat_chains, common)
    if "filter" in rs.tables:
        yield from forward_accepts(rs.tables["filter"], common)


def expected_text(rule: SetRule, family: int) -> str:
    """The rule as kube-proxy writes it, for the evidence (shortened: comments left out)."""
    parts = [f"-A {rule.chain}", *rule.needles_for(family), f"-j {rule.target}"]
    return " ".join(p.strip() for p in parts)
