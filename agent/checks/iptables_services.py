"""Per Service port, from the rules alone: KUBE-SVC/SVL -> KUBE-SEP -> DNAT is whole, the endpoints get
equal shares, and which Services the node rejects as having no endpoints (the guide's empty-endpoints
case, as this node sees it). Chains are named after their Service by hash, not by comment."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.catalogue import finding
from agent.checks.iptables_census import census
from agent.checks.iptables_names import Names, learn_names, service_names
from agent.checks.iptables_scope import scope
from agent.checks.memo import by_identity, carried
from agent.checks.programmed_iptables import endpoint_users
from agent.iptables_parse import jump_target
from agent.model import Finding, Snapshot
from agent.model.iptables import DISPATCH_PREFIXES, LadderChain, Rule, RuleSet

TOLERANCE = 1e-6  # iptables-save prints kube-proxy's 10-digit probability back as an 11-digit one


def check(snap: Snapshot) -> Iterator[Finding]:
    sc = scope(snap)
    if sc is None or not sc.kube_proxy_iptables:
        return
    for rs in sc.state.rulesets:
        yield from findings_of(rs)


@by_identity  # the same RuleSet object comes back while the rules are unchanged (agent/iptables_reuse.py)
def findings_of(rs: RuleSet) -> tuple[Finding, ...]:
    names = learn_names(rs)
    return (*_ladders(rs, names), *_unreferenced(rs, names), *_endpoint_chains(rs, names), *_no_endpoints(rs))


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


# family -> (serial of the RuleSet last judged, its ladders that are not whole and fair, by chain): after a
# partial sync only the ladders of the chains the reader says changed are judged again.
_judged: dict[int, tuple[int, dict[str, LadderChain]]] = carried({})


def _bad_ladders(rs: RuleSet) -> dict[str, LadderChain]:
    nat = rs.table("nat")
    prior = _judged.get(rs.family)
    changes = rs.changes_since(prior[0] if prior is not None else None)
    if prior is not None and changes is not None:
        bad = dict(prior[1])
        for chain in changes.chains.get("nat", ()):
            bad.pop(chain, None)
            ladder = nat.ladders.get(chain)
            if ladder is not None and not _whole_and_fair(ladder):
                bad[chain] = ladder
    else:
        bad = {chain: ladder for chain, ladder in nat.ladders.items() if not _whole_and_fair(ladder)}
    _judged[rs.family] = (rs.serial, bad)
    return bad


def _whole_and_fair(ladder: LadderChain) -> bool:
    return bool(ladder.endpoints or ladder.affinity_endpoints) and ladder_is_fair(ladder)


def _ladders(rs: RuleSet, names: Names) -> Iterator[Finding]:
    for chain, ladder in sorted(_bad_ladders(rs).items(), key=lambda cl: cl[0]):
        subject, service = _label(names, chain)
        if not ladder.endpoints and not ladder.affinity_endpoints:
            yield finding("iptables.service_without_endpoints_chain", subject, service=service,
                          evidence={"chain": chain, "family": rs.family})
        else:
            yield finding("iptables.probability_inconsistent", subject, service=service, evidence={
                "chain": chain, "family": rs.family, "endpoints": len(ladder.endpoints),
                "endpoint_chains": ladder.endpoints, "probabilities": ladder.probabilities,
                "expected": expected_probabilities(len(ladder.endpoints))})


# where kube-proxy puts the jump to each kind of per-Service chain
_REFERRED_FROM = (
    ("KUBE-SVC-", "KUBE-SERVICES or a KUBE-EXT chain"), ("KUBE-SVL-", "KUBE-SERVICES or a KUBE-EXT chain"),
    ("KUBE-EXT-", "KUBE-SERVICES, KUBE-NODEPORTS or a KUBE-FW chain"), ("KUBE-FW-", "KUBE-SERVICES"),
)


_EXPECTED_IN = dict(_REFERRED_FROM)


@dataclass(frozen=True)
class _Unreferenced:
    """What the last look for unreferenced chains of a family worked from, and what it found."""

    serial: int
    dispatch: dict[str, list[Rule]]  # its nat dispatch and plain chains (the dicts themselves): the jumps
    plain: dict[str, list[str]]
    targets: set[str]
    by_rules: bool  # the hashed chains were those with rules (see below)
    chains: frozenset[str]  # the hashed chains no rule jumps to


# family -> the last look: after a partial sync that left the nat dispatch and plain chains alone (most of
# them: the jumps to the per-Service chains are in KUBE-SERVICES), only the chains that changed are looked at.
_unreferenced_last: dict[int, _Unreferenced] = carried({})


def _unreferenced(rs: RuleSet, names: Names) -> Iterator[Finding]:
    for chain in sorted(_unreferenced_chains(rs)):
        subject, service = _label(names, chain)
        yield finding("iptables.service_chain_unreferenced", subject, service=service, evidence={
            "chain": chain, "expected_in": _EXPECTED_IN[chain[:chain.index("-", 5) + 1]], "family": rs.family})


def _unreferenced_chains(rs: RuleSet) -> frozenset[str]:
    nat = rs.table("nat")
    # The hashed chains are those with rules (ladders, KUBE-EXT/FW dispatch chains) when as many are
    # declared: no pass over 60k chain names then.
    hashed_dispatch = [c for c in nat.dispatch if c.startswith(DISPATCH_PREFIXES)]
    by_rules = sum(census(nat).declared.values()) == len(nat.ladders) + len(hashed_dispatch)
    prior = _unreferenced_last.get(rs.family)
    changes = rs.changes_since(prior.serial if prior is not None else None)
    changed = changes.chains.get("nat", frozenset()) if changes is not None else frozenset()
    if (prior is not None and changes is not None and by_rules and prior.by_rules
            and not any(c in nat.dispatch or c in nat.plain or c in prior.dispatch or c in prior.plain
                        for c in changed)):
        targets = prior.targets  # the same jumps: only the changed chains can have come or gone
        chains = frozenset(c for c in prior.chains if c not in changed).union(
            c for c in changed if c in nat.ladders and c not in targets)
    else:
        targets = {r.target for rules in nat.dispatch.values() for r in rules}
        targets.update(jump_target(text) for rules in nat.plain.values() for text in rules)
        hashed = [*nat.ladders, *hashed_dispatch] if by_rules else \
            [c for c in nat.chains if c.startswith(tuple(_EXPECTED_IN))]
        chains = frozenset(c for c in hashed if c not in targets)
    _unreferenced_last[rs.family] = _Unreferenced(rs.serial, nat.dispatch, nat.plain, targets, by_rules, chains)
    return chains


# family -> serial of the RuleSet last looked at, when none of its endpoint chains lacked a DNAT (None: some
# did): then only a chain changed since can lack one (50k values not scanned again after a partial sync)
_dnat_complete: dict[int, int | None] = carried({})


def _some_endpoint_chain_lacks_dnat(rs: RuleSet) -> bool:
    dnat = rs.table("nat").endpoint_dnat
    changes = rs.changes_since(_dnat_complete.get(rs.family))
    if changes is not None:
        lacking = any(dnat.get(chain) == "" for chain in changes.chains.get("nat", ()))
    else:
        lacking = "" in dnat.values()  # seen in C
    _dnat_complete[rs.family] = None if lacking else rs.serial
    return lacking


def _endpoint_chains(rs: RuleSet, names: Names) -> Iterator[Finding]:
    nat = rs.table("nat")
    if not _some_endpoint_chain_lacks_dnat(rs):  # the usual case
        return
    broken = sorted(chain for chain, dnat in nat.endpoint_dnat.items() if not dnat)
    users = endpoint_users(nat) if broken else {}
    for chain in broken:
        used_by = sorted(users.get(chain, []))
        subject, service = _label(names, used_by[0]) if used_by else (chain, None)
        yield finding("iptables.endpoint_chain_broken", subject, service=service, evidence={
            "chain": chain, "used_by": ", ".join(used_by) or "no chain", "family": rs.family})


# family -> (serial of the RuleSet last looked at, its no-endpoints findings): kept while its filter
# dispatch chains do not change (a cluster may have thousands of Services without endpoints)
_rejecting: dict[int, tuple[int, tuple[Finding, ...]]] = carried({})
REJECT_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES")


def _no_endpoints(rs: RuleSet) -> tuple[Finding, ...]:
    prior = _rejecting.get(rs.family)
    changes = rs.changes_since(prior[0] if prior is not None else None)
    if prior is not None and changes is not None and not changes.chains.get("filter", frozenset()).intersection(
            REJECT_CHAINS):
        found = prior[1]
    else:
        found = tuple(_rejected(rs))
    _rejecting[rs.family] = (rs.serial, found)
    return found


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
