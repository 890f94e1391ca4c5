"""Is kube-proxy's nftables table whole? (nftables mode: the guide's "Is kube-proxy writing rules?")

From the node alone: the table exists when kube-proxy runs in nftables mode, its base chains are hooked
and jump to kube-proxy's dispatch chains, the dispatch maps exist, every map element and vmap entry
points to a chain that exists, every Service chain a map dispatches to has endpoints (a full numgen
ladder) whose chains DNAT, and no address is both dispatched and rejected as "no endpoints".

kube-proxy writes each sync as one atomic transaction, so none of these is a transient state. Chains
that nothing dispatches to are flushed leftovers kube-proxy deletes a second later: never judged here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain as chained
from operator import attrgetter

from agent.catalogue import finding
from agent.checks.families import served_families
from agent.model import Finding, Snapshot
from agent.model.nftables import (
    FIREWALL_IPS,
    MAPS,
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Chain,
    KubeProxyTable,
    VerdictElement,
    parse_chain_name,
)
from agent.model.views import Views

REJECT_CHAIN = "reject-chain"
DSTNAT, SRCNAT = -100, 100


@dataclass(frozen=True)
class Hook:
    """A netfilter hook kube-proxy must be attached to, and what its base chain must jump to.
    Names and priorities differ between releases; any chain of this type on this hook will do."""

    type: str
    hook: str
    jumps_to: tuple[str, ...]  # any of these (release variants)
    priority_ok: tuple[int, ...]  # accepted priorities across releases


HOOKS = (
    Hook("nat", "prerouting", ("services",), (DSTNAT,)),
    Hook("nat", "output", ("services",), (DSTNAT,)),
    Hook("nat", "postrouting", ("masquerading",), (SRCNAT,)),
    # LoadBalancerSourceRanges must be judged on the pre-DNAT destination: before dstnat.
    Hook("filter", "prerouting", ("firewall-check",), (DSTNAT - 10,)),
    Hook("filter", "output", ("firewall-check",), (DSTNAT - 10,)),
    # v1.29-1.30: one "endpoints-check" at dstnat-10; v1.31+: service-/nodeport-endpoints-check at filter (0).
    Hook("filter", "input", ("endpoints-check", "nodeport-endpoints-check", "service-endpoints-check"),
         (DSTNAT - 10, 0)),
    Hook("filter", "forward", ("endpoints-check", "service-endpoints-check"), (DSTNAT - 10, 0)),
    Hook("filter", "output", ("endpoints-check", "service-endpoints-check"), (DSTNAT - 10, 0)),
)

# Chains that must dispatch through a map, or kube-proxy's maps are never consulted.
MAP_USERS = ((SERVICE_IPS, "services"), (SERVICE_NODEPORTS, "services"))


def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
    src = snap.nftables
    if not src.ok:  # agent.source_failed says so
        return
    tables = src.data.tables if src.data is not None else []
    served = served_families(snap)
    other = ", ".join(src.data.other_tables) if src.data else ""
    mode = views.mode.mode
    if mode == "nftables" and not tables:
        yield finding("nftables.table_missing", snap.node, evidence={
            "family": "ip6" if served == frozenset({6}) else "ip",
            "why": src.note or "no `table ip kube-proxy` or `table ip6 kube-proxy` on this node",
            "other_tables": other})
    elif mode == "nftables" and served is not None:
        # kube-proxy runs a proxier, and writes a table, for every family the node has an address of
        have = {t.ip_family for t in tables}
        for family in sorted(served - have):
            name = "ip6" if family == 6 else "ip"
            yield finding("nftables.table_missing", snap.node, evidence={
                "family": name, "why": f"no `table {name} kube-proxy` on this node, which has an IPv{family} address",
                "other_tables": other})
    # check_table's findings per table, derived once with the tables' ports; a family kube-proxy does not
    # serve here is not judged
    for family, found in views.nftables_structure or ():
        if served is None or family in served:
            yield from found


def check_table(table: KubeProxyTable) -> Iterator[Finding]:
    yield from _hooks(table)
    yield from _masquerade(table)
    yield from _maps(table)
    yield from _dangling(table)
    yield from _service_chains(table)
    yield from _reject_shadows(table)


def _subject(table: KubeProxyTable, what: str) -> str:
    return f"table {table.family} kube-proxy: {what}"


def _hooks(table: KubeProxyTable) -> Iterator[Finding]:
    hooked = [c for c in table.chains.values() if c.hook is not None]  # one pass over 60k chains, not one per hook
    for want in HOOKS:
        base = [c for c in hooked if c.type == want.type and c.hook == want.hook]
        good = [c for c in base if c.priority in want.priority_ok and any(t in c.targets for t in want.jumps_to)]
        if good or not all(c.rules_read for c in base):
            continue
        problem = ("no base chain on this hook" if not base else
                   "; ".join(f"{c.name} (priority {c.priority}) jumps to {', '.join(c.targets) or 'nothing'}"
                             for c in base))
        yield finding("nftables.hook_missing", _subject(table, f"{want.type} {want.hook}"), evidence={
            "family": table.family, "type": want.type, "hook": want.hook, "expected_jump": " or ".join(want.jumps_to),
            "expected_priority": " or ".join(str(p) for p in want.priority_ok), "found": problem})
    for map_name, user in MAP_USERS:
        chain = table.chains.get(user)
        if chain is not None and chain.rules_read and map_name not in (chain.vmap_maps or []):
            yield finding("nftables.hook_missing", _subject(table, f"{user} -> @{map_name}"), evidence={
                "family": table.family, "type": "chain", "hook": user, "expected_jump": f"vmap @{map_name}",
                "expected_priority": "-", "found": f"{user} dispatches through {chain.vmap_maps or 'no map'}"})


# kube-proxy's masquerade chains and their rules (pkg/proxy/nftables/proxier.go). The reader keeps a chain's rule
# count, not these statements, so a count short of kube-proxy's says one is gone, without saying which.
_MASQUERADE = (
    ("mark-for-masquerade", 1, "mark set mark or 0x4000", "not marked for masquerading"),
    ("masquerading", 3, "return unmarked packets; mark set mark xor 0x4000; masquerade",
     "not masqueraded (or, with the return gone, everything is)"),
)


def _masquerade(table: KubeProxyTable) -> Iterator[Finding]:
    for name, expected, what, effect in _MASQUERADE:
        chain = table.chains.get(name)
        if chain is None or not chain.rules_read or chain.rule_count >= expected:
            continue  # a missing chain leaves a dangling jump or an unhooked postrouting: reported there
        yield finding("nftables.masquerade_missing", _subject(table, name), evidence={
            "family": table.family, "chain": name, "rules": chain.rule_count, "expected": expected, "what": what,
            "effect": effect})


def _maps(table: KubeProxyTable) -> Iterator[Finding]:
    for name in MAPS:
        if name not in table.maps:
            yield finding("nftables.map_missing", _subject(table, name), evidence={
                "family": table.family, "map": name})


def _service_of(chain_or_comment: str | None) -> str | None:
    if not chain_or_comment:
        return None
    name = parse_chain_name(chain_or_comment)
    return name.service_port if name else None


def _dangling(table: KubeProxyTable) -> Iterator[Finding]:
    for map_name, elements in sorted(table.maps.items()):
        for e in elements:
            if e.target is not None and e.target not in table.chains:
                service = e.comment or _service_of(e.target)
                yield finding("nftables.dangling_goto", service or _subject(table, map_name), service=service,
                              evidence={"family": table.family, "where": f"map {map_name}", "element": e.text(),
                                        "missing_chain": e.target})
    chains = table.chains
    # Every jump and vmap target at once, in C; the chains are walked only when one of them is missing
    jumped = set(chained.from_iterable(map(attrgetter("targets"), chains.values())))
    jumped.update(chained.from_iterable(m.values() for m in map(attrgetter("vmap"), chains.values()) if m))
    if jumped <= chains.keys():
        return
    for chain in chains.values():
        targets = chain.targets if not chain.vmap else [*chain.targets, *chain.vmap.values()]
        for target in targets:
            if target not in chains:
                service = _service_of(chain.name) or _service_of(target)
                yield finding("nftables.dangling_goto", service or _subject(table, chain.name), service=service,
                              evidence={"family": table.family, "where": f"chain {chain.name}",
                                        "element": f"goto {target}", "missing_chain": target})


def _dispatched_policy_chains(table: KubeProxyTable) -> dict[str, tuple[str, VerdictElement, str]]:
    """service-/local- chains that traffic reaches from the dispatch maps (directly, or through an
    external- chain), with the map element that leads there (map, element, external- chain or "")."""
    out: dict[str, tuple[str, VerdictElement, str]] = {}
    for map_name in (SERVICE_IPS, SERVICE_NODEPORTS, FIREWALL_IPS):
        for e in table.maps.get(map_name, []):
            chain = table.chains.get(e.target or "")
            if chain is None:
                continue
            if chain.name.startswith(("service-", "local-")):
                out.setdefault(chain.name, (map_name, e, ""))
            elif chain.name.startswith("external-"):
                for t in chain.targets:
                    if t.startswith(("service-", "local-")):
                        out.setdefault(t, (map_name, e, chain.name))
    return out


def _via(map_name: str, e: VerdictElement, external: str) -> str:
    return f"{map_name}: {e.text()}" + (f" -> {external}" if external else "")


def _service_chains(table: KubeProxyTable) -> Iterator[Finding]:
    # Names are taken apart (a hash each) only for what is reported: 10k Service chains every run at 10k
    chains = table.chains
    endpoints = set(chained.from_iterable(m.values() for m in map(attrgetter("vmap"), chains.values()) if m))
    without_dnat = {t for t in endpoints if (ep := chains.get(t)) is not None and ep.rules_read and not ep.dnat}
    for name, via in sorted(_dispatched_policy_chains(table).items()):
        chain = chains.get(name)
        if chain is None or not chain.rules_read:
            continue
        if not chain.vmap:
            service = _service_of(name) or name
            yield finding("nftables.service_without_endpoints", service, service=service, evidence={
                "family": table.family, "chain": name, "dispatched_by": _via(*via), "rules": chain.rule_count})
            continue
        yield from _numgen(table, chain)
        if not without_dnat or without_dnat.isdisjoint(chain.vmap.values()):
            continue
        for target in sorted(without_dnat.intersection(chain.vmap.values())):
            service = _service_of(name) or name
            ep_name = parse_chain_name(target)
            yield finding("nftables.endpoint_chain_broken", service, service=service, evidence={
                "family": table.family, "chain": target, "service_chain": name,
                "endpoint": (ep_name.endpoint if ep_name else None) or "?",
                "rules": table.chains[target].rule_count})


def _numgen(table: KubeProxyTable, chain: Chain) -> Iterator[Finding]:
    """`numgen random mod N vmap { 0 : ..., N-1 : ... }`: a missing index sends 1/N of new
    connections nowhere (they fall out of the chain un-DNATed)."""
    mod = chain.numgen_mod or 0
    want = _INDEXES[mod] if mod < len(_INDEXES) else {str(i) for i in range(mod)}
    if chain.vmap is not None and chain.vmap.keys() == want:
        return
    have = set(chain.vmap or {})
    service = _service_of(chain.name) or chain.name
    if chain.vmap_by_reference:  # only how many endpoint chains the vmap holds is known
        missing = f"{mod - len(have)} of {mod}" if len(have) < mod else "none"
        extra = f"{len(have) - mod} beyond {mod}" if len(have) > mod else "none"
    else:
        missing = ", ".join(sorted(want - have, key=int)) or "none"
        extra = ", ".join(sorted(have - want)) or "none"
    yield finding("nftables.numgen_gap", service, service=service, evidence={
        "family": table.family, "chain": chain.name, "mod": mod, "missing_indexes": missing,
        "extra_indexes": extra})


_INDEXES = tuple(frozenset(str(i) for i in range(n)) for n in range(64))  # numgen's indexes, per mod


def _reject_shadows(table: KubeProxyTable) -> Iterator[Finding]:
    """The same address both dispatched to a Service chain and rejected as "has no endpoints": the
    filter hooks reject before the nat dispatch runs, so the Service's endpoints are never reached.
    (A drop for externalTrafficPolicy Local without local endpoints sits beside a dispatch by design.)"""
    for dispatch, no_ep in ((SERVICE_IPS, NO_ENDPOINT_SERVICES), (SERVICE_NODEPORTS, NO_ENDPOINT_NODEPORTS)):
        dispatched = {tuple(e.key): e for e in table.maps.get(dispatch, [])}
        for e in table.maps.get(no_ep, []):
            if e.target != REJECT_CHAIN and e.verdict != "reject":
                continue
            hit = dispatched.get(tuple(e.key))
            if hit is not None:
                service = e.comment or _service_of(hit.target) or " . ".join(e.key)
                yield finding("nftables.reject_shadows_service", service, service=service, evidence={
                    "family": table.family, "reject": f"{no_ep}: {e.text()}", "dispatch": f"{dispatch}: {hit.text()}"})
