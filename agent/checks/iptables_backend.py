"""Which iptables backend holds kube-proxy's rules, what the parser could not read, and a table the
iptables tools cannot show at all (judged from the failed read's own account of its failure)."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.iptables_names import service_names
from agent.checks.iptables_scope import scope
from agent.model import Finding, Snapshot
from agent.model.iptables import IptablesState, RuleSet


def check(snap: Snapshot) -> Iterator[Finding]:
    yield from _incompatible(snap)
    sc = scope(snap)
    if sc is None:
        return
    state = sc.state
    counts = state.kube_chains
    if counts.get("legacy", 0) > 0 and counts.get("nft", 0) > 0:
        yield finding("iptables.backend_mismatch", snap.node, evidence={
            "backend": state.backend, "reason": state.backend_reason,
            "legacy": counts["legacy"], "nft": counts["nft"], **_split(state)})
    for rs in state.rulesets:  # (a read with many such lines failed instead: agent.source_failed)
        if rs.unparsed_count:
            yield finding("iptables.rules_unparsed", snap.node, evidence={
                "backend": state.backend, "family": rs.family, "count": rs.unparsed_count,
                "first": rs.unparsed[0] if rs.unparsed else "", "lines": rs.unparsed})


MAX_NAMED = 50  # Services named per backend in the evidence (the counts are whole)


def _split(state: IptablesState) -> dict[str, object]:
    """Which backend holds which Services' rules, and what is judged: with kube-proxy's rules in both, the
    Services either backend programs (the kernel runs the hooks of both), the structure of `backend`."""
    if not state.other_rulesets:
        return {"judged": f"the rules in {state.backend}"}
    mine, theirs = _services(state.rulesets), _services(state.other_rulesets)
    other = state.other_backend
    return {"judged": f"the Service rules of both backends together (the kernel runs both), the chains of "
                      f"{state.backend}",
            f"services_only_in_{state.backend}": sorted(mine - theirs)[:MAX_NAMED],
            f"services_only_in_{other}": sorted(theirs - mine)[:MAX_NAMED],
            "services_in_both": len(mine & theirs),
            f"services_{state.backend}": len(mine), f"services_{other}": len(theirs)}


def _services(rulesets: tuple[RuleSet, ...]) -> set[str]:
    """The Service ports whose dispatch rules (nat KUBE-SERVICES / KUBE-NODEPORTS) a backend holds."""
    return {name for rs in rulesets for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS")
            for rule in rs.table("nat").dispatch.get(chain, ()) for name in service_names(rule.comment)[:1]}


def _incompatible(snap: Snapshot) -> Iterator[Finding]:
    src = snap.iptables
    for table in (src.detail or {}).get("incompatible", []) if not src.ok else []:
        foreign = table.get("foreign_chains")
        yield finding("iptables.table_incompatible", f"{table['table']}/IPv{table['family']}", evidence={
            **table, "foreign": ", ".join(foreign) if foreign else "not known",
            "nft_family": "ip6" if table["family"] == 6 else "ip"})
