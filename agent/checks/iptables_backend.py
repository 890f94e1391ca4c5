"""Which iptables backend holds kube-proxy's rules, what the parser could not read, and a table the
iptables tools cannot show at all (judged from the failed read's own account of its failure)."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.iptables_scope import scope
from agent.model import Finding, Snapshot


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
            "legacy": counts["legacy"], "nft": counts["nft"]})
    for rs in state.rulesets:  # (a read with many such lines failed instead: agent.source_failed)
        if rs.unparsed_count:
            yield finding("iptables.rules_unparsed", snap.node, evidence={
                "backend": state.backend, "family": rs.family, "count": rs.unparsed_count,
                "first": rs.unparsed[0] if rs.unparsed else "", "lines": rs.unparsed})


def _incompatible(snap: Snapshot) -> Iterator[Finding]:
    src = snap.iptables
    for table in (src.detail or {}).get("incompatible", []) if not src.ok else []:
        foreign = table.get("foreign_chains")
        yield finding("iptables.table_incompatible", f"{table['table']}/IPv{table['family']}", evidence={
            **table, "foreign": ", ".join(foreign) if foreign else "not known",
            "nft_family": "ip6" if table["family"] == 6 else "ip"})
