"""Which iptables backend holds kube-proxy's rules, and what the parser could not read."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.iptables_scope import scope
from agent.model import Finding, Snapshot


def check(snap: Snapshot) -> Iterator[Finding]:
    sc = scope(snap)
    if sc is None:
        return
    state = sc.state
    counts = state.kube_chains
    if counts.get("legacy", 0) > 0 and counts.get("nft", 0) > 0:
        yield finding("iptables.backend_mismatch", snap.node, evidence={
            "backend": state.backend, "reason": state.backend_reason,
            "legacy": counts["legacy"], "nft": counts["nft"]})
    for rs in state.rulesets:
        if rs.unparsed_count:
            yield finding("iptables.rules_unparsed", snap.node, evidence={
                "backend": state.backend, "family": rs.family, "count": rs.unparsed_count,
                "first": rs.unparsed[0] if rs.unparsed else "", "lines": rs.unparsed})
