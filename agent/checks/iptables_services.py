"""Per Service port, from the rules alone: KUBE-SVC/SVL -> KUBE-SEP -> DNAT is whole, the endpoints get
equal shares, and which Services the node rejects as having no endpoints (the guide's empty-endpoints
case, as this node sees it). Chains are named after their Service by hash, not by comment."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.checks.iptables_names import learn_names, service_names
from agent.checks.iptables_scope import scope
from agent.checks.programmed_iptables import endpoint_users
from agent.model import Finding, Snapshot
from agent.model.iptables import LADDER_PREFIXES, LadderChain, RuleSet, jump_target
from agent.model.views import Names, Views

TOLERANCE = 1e-6  # iptables-save prints kube-proxy's 10-digit probability back as an 11-digit one


def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
    sc = scope(snap)
    if sc is None or not sc.kube_proxy_iptables:
        return
    for rs in sc.state.rulesets:
        view = views.iptables_view(rs.family)
        if view is not None and view.service_findings is not None:  # derived once per RuleSet (derive.py)
            yield from view.service_findings
        else:
            yield from findings_of(rs, view.names if view is not None else learn_names(rs))


def findings_of(rs: RuleSet, names: Names) -> tuple[Finding, ...]:
    return (*_ladders(rs, names), *_unreferenced(rs, names), *_endpoint_chains(rs, names), *_rejected(rs))


def _label(names: Names, chain: str) -> tuple[str, str | None]:
    """(subject, service) for a hashed chain: its Service port when known, else the chain itself."""
    key = names.of_chain(chain)
    return (key.service, key.service) if key else (chain, None)


def expected_probabilities(n: int) -> list[float | None]:
    """kube-proxy's ladder: the i-th of n endpoints matches with 1/(n-i), the last one always."""
    return [1.0 / (n - i) for i in range(n - 1)] + ([None] if n else [])


def ladder_is_fair(ladder: LadderChain) -> bool:
    want = expected_probabilities(len(ladder.endpoints))
    for got, exp in zip(ladder.probabilities, want, strict=True):
        if (got is None) != (exp is None):
            return False
        if got is not None and exp is not None and abs(got - exp) > TOLERANCE:
            return False
    return True


def _ladders(rs: RuleSet, names: Names) -> Iterator[Finding]:
    nat = rs.table("nat")
    # Most ladders share a few shapes (n endpoints, the same probabilities): each shape is judged once
    fair: dict[tuple[int, tuple[float | None, ...]], bool] = {}
    bad = {}
    for chain, ladder in nat.ladders.items():
        shape = (len(ladder.endpoints), ladder.probabilities)
        ok = fair.get(shape)
        if ok is None:
            ok = fair[shape] = ladder_is_fair(ladder)
        if not ok or not (ladder.endpoints or ladder.affinity_endpoints):
            bad[chain] = ladder
    # a flushed KUBE-SVC/SVL chain has no rule at all, so no ladder: judged when something still jumps to it
    if nat.census.declared.get("KUBE-SVC-", 0) + nat.census.declared.get("KUBE-SVL-", 0) > len(nat.ladders):
        jumped = _jump_targets(rs)
        bad.update((c, LadderChain()) for c in nat.chains
                   if c.startswith(LADDER_PREFIXES) and c not in nat.ladders and c in jumped)
    for chain, ladder in sorted(bad.items(), key=lambda cl: cl[0]):
        subject, service = _label(names, chain)
        if not ladder.endpoints and not ladder.affinity_endpoints:
            yield finding("iptables.service_without_endpoints_chain", subject, service=service,
                          evidence={"chain": chain, "family": rs.family})
        elif not ladder_is_fair(ladder):
            yield finding("iptables.probability_inconsistent", subject, service=service, evidence={
                "chain": chain, "family": rs.family, "endpoints": len(ladder.endpoints),
                "endpoint_chains": list(ladder.endpoints), "probabilities": list(ladder.probabilities),
                "expected": expected_probabilities(len(ladder.endpoints))})
    affinity = sorted((c, lad) for c, lad in nat.ladders.items() if lad.affinity_endpoints)  # few have it
    for chain, ladder in affinity:
        behind = sorted(set(ladder.affinity_endpoints) - set(ladder.endpoints))
        if behind:  # ClientIP affinity: every endpoint has an `--rcheck` rule and a rung of the ladder
            subject, service = _label(names, chain)
            yield finding("iptables.affinity_without_ladder", subject, service=service, evidence={
                "chain": chain, "family": rs.family, "endpoints": ", ".join(behind), "ladder": len(ladder.endpoints)},
                severity=None if not ladder.endpoints else "warning")


# where kube-proxy puts the jump to each kind of per-Service chain
_REFERRED_FROM = (
    ("KUBE-SVC-", "KUBE-SERVICES or a KUBE-EXT chain"), ("KUBE-SVL-", "KUBE-SERVICES or a KUBE-EXT chain"),
    ("KUBE-EXT-", "KUBE-SERVICES, KUBE-NODEPORTS or a KUBE-FW chain"), ("KUBE-FW-", "KUBE-SERVICES"),
)


_EXPECTED_IN = dict(_REFERRED_FROM)
_PREFIXES = tuple(_EXPECTED_IN)


def _unreferenced(rs: RuleSet, names: Names) -> Iterator[Finding]:
    for chain in sorted(_unreferenced_chains(rs)):
        subject, service = _label(names, chain)
        yield finding("iptables.service_chain_unreferenced", subject, service=service, evidence={
            "chain": chain, "expected_in": _EXPECTED_IN[chain[:chain.index("-", 5) + 1]], "family": rs.family})


def _jump_targets(rs: RuleSet) -> set[str]:
    """Every chain a dispatch or plain rule of the nat table jumps to (ladders jump only to KUBE-SEP chains)."""
    nat = rs.table("nat")
    targets = {r.target for rules in nat.dispatch.values() for r in rules}
    targets.update(jump_target(text) for rules in nat.plain.values() for text in rules)
    return targets


def _unreferenced_chains(rs: RuleSet) -> list[str]:
    """The hashed chains no rule of the nat table jumps to."""
    targets = _jump_targets(rs)
    return [c for c in rs.table("nat").chains if c.startswith(_PREFIXES) and c not in targets]


def _endpoint_chains(rs: RuleSet, names: Names) -> Iterator[Finding]:
    nat = rs.table("nat")
    if "" not in nat.endpoint_dnat.values():  # the usual case (seen in C)
        return
    broken = sorted(chain for chain, dnat in nat.endpoint_dnat.items() if not dnat)
    users = endpoint_users(nat) if broken else {}
    for chain in broken:
        used_by = sorted(users.get(chain, []))
        subject, service = _label(names, used_by[0]) if used_by else (chain, None)
        yield finding("iptables.endpoint_chain_broken", subject, service=service, evidence={
            "chain": chain, "used_by": ", ".join(used_by) or "no chain", "family": rs.family})


REJECT_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES")


def _rejected(rs: RuleSet) -> Iterator[Finding]:
    rejected: dict[str, list[str]] = {}
    rules: dict[str, list[str]] = {}
    filt = rs.table("filter")
    for chain in REJECT_CHAINS:
        for rule in filt.dispatch.get(chain, []):
            comment = rule.comment or ""
            words = service_names(comment)
            if not comment.endswith(" has no endpoints") or rule.target != "REJECT" or not words:
                continue
            address = f"{rule.destination or '(node ports)'}:{rule.dport or ''}"
            rejected.setdefault(words[0], []).append(address)
            rules.setdefault(words[0], []).append(rule.text)
    for service, addresses in sorted(rejected.items()):
        yield finding("iptables.service_has_no_endpoints", service, service=service, evidence={
            "addresses": ", ".join(addresses), "rules": rules[service], "family": rs.family})
