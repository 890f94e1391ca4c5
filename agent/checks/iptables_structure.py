"""kube-proxy's fixed iptables skeleton: its chains, the jumps into them from the built-in chains,
KUBE-NODEPORTS last in nat KUBE-SERVICES, no jump to a missing chain, no leftovers of older modes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.catalogue import finding
from agent.checks.families import served_families
from agent.checks.iptables_names import service_names
from agent.checks.iptables_scope import scope
from agent.checks.programmed_iptables import reaches_node_ports
from agent.model import Finding, Snapshot
from agent.model.iptables import RuleSet, Table, jump_target

ALWAYS = (0, 0)
# (table, chain, first kube-proxy version that writes it)
CHAINS = (
    ("nat", "KUBE-SERVICES", ALWAYS), ("nat", "KUBE-NODEPORTS", ALWAYS), ("nat", "KUBE-POSTROUTING", ALWAYS),
    ("nat", "KUBE-MARK-MASQ", ALWAYS), ("filter", "KUBE-SERVICES", ALWAYS), ("filter", "KUBE-FORWARD", ALWAYS),
    ("filter", "KUBE-EXTERNAL-SERVICES", ALWAYS), ("filter", "KUBE-NODEPORTS", (1, 25)),
    ("filter", "KUBE-PROXY-FIREWALL", (1, 25)),
)
# (table, built-in chain, kube-proxy chain, since): kube-proxy's iptablesJumpChains
HOOKS = (
    ("nat", "PREROUTING", "KUBE-SERVICES", ALWAYS), ("nat", "OUTPUT", "KUBE-SERVICES", ALWAYS),
    ("nat", "POSTROUTING", "KUBE-POSTROUTING", ALWAYS),
    ("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", ALWAYS), ("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", ALWAYS),
    ("filter", "FORWARD", "KUBE-SERVICES", ALWAYS), ("filter", "OUTPUT", "KUBE-SERVICES", ALWAYS),
    ("filter", "FORWARD", "KUBE-FORWARD", ALWAYS), ("filter", "INPUT", "KUBE-NODEPORTS", (1, 25)),
    ("filter", "INPUT", "KUBE-PROXY-FIREWALL", (1, 25)), ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", (1, 25)),
    ("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", (1, 25)),
)
KUBE_PROXY_MARKERS = frozenset({"KUBE-SERVICES", "KUBE-PROXY-CANARY"})


def check(snap: Snapshot) -> Iterator[Finding]:
    sc = scope(snap)
    if sc is None:
        return
    served = served_families(snap)
    for rs in sc.state.rulesets:
        # kube-proxy writes no rules for a family the node has no address of (an IPv6-only node: no IPv4 tables)
        judged = sc.kube_proxy_iptables and (served is None or rs.family in served)
        yield from findings_of(rs, sc.state.backend, judged, sc.version, sc.version_text,
                               kubelet_running=snap.kubelet.ok and snap.kubelet.data is not None)


def findings_of(rs: RuleSet, backend: str, kube_proxy_iptables: bool, version: tuple[int, int],
                version_text: str, *, kubelet_running: bool = False) -> tuple[Finding, ...]:
    sc = Context(backend, kube_proxy_iptables, version, version_text)
    out = list(_leftovers(sc, rs))
    for jump in rs.dangling:
        out.append(finding("iptables.dangling_jump", f"{jump.table}/{jump.chain}", evidence={
            "table": jump.table, "chain": jump.chain, "target": jump.target, "rule": jump.text,
            "family": rs.family}))
    if kube_proxy_iptables and (rs.family == 4 or serves_family(rs)):
        out.extend(_skeleton(sc, rs))
        out.extend(node_wide(rs, backend, kubelet_running=kubelet_running))
    return tuple(out)


@dataclass(frozen=True)
class Context:
    """What the structure checks need to know besides the rules."""

    backend: str
    kube_proxy_iptables: bool
    version: tuple[int, int]
    version_text: str


def serves_family(rs: RuleSet) -> bool:
    """kube-proxy programs IPv6 only where the node does IPv6; kubelet writes its own KUBE-* chains in
    both families regardless, so only kube-proxy's own chains say that it serves this family."""
    return any(c in KUBE_PROXY_MARKERS for t in rs.tables.values() for c in t.chains)


def _skeleton(sc: Context, rs: RuleSet) -> Iterator[Finding]:
    common = {"family": rs.family, "backend": sc.backend}
    asked = {chain for _, chain, _ in CHAINS} | {chain for _, _, chain, _ in HOOKS}
    present = {name: asked.intersection(t.chains) for name, t in rs.tables.items()}  # no set of 60k chains
    for table, chain, since in CHAINS:
        if sc.version >= since and chain not in present.get(table, set()):
            yield finding("iptables.chain_missing", f"{table}/{chain}", evidence={
                "table": table, "chain": chain, "version": sc.version_text, **common})
    for table, builtin, chain, since in HOOKS:
        if sc.version < since or chain not in present.get(table, set()):
            continue  # a missing chain is chain_missing already
        rules = rs.table(table).plain.get(builtin, ())
        if not any(jump_target(rule) == chain for rule in rules):
            yield finding("iptables.hook_missing", f"{table}/{builtin}", evidence={
                "table": table, "builtin": builtin, "chain": chain, "rules": list(rules[:20]), **common})
    services = rs.table("nat").dispatch.get("KUBE-SERVICES")
    if "KUBE-SERVICES" in present.get("nat", set()) and "KUBE-NODEPORTS" in present.get("nat", set()):
        last = services[-1] if services else None
        if not reaches_node_ports(rs.table("nat")):
            yield _nodeports_unreached(rs, common)
        elif last is None or last.target != "KUBE-NODEPORTS":
            yield finding("iptables.nodeports_not_last", "nat/KUBE-SERVICES", evidence={
                "last_rule": last.text if last else "(the chain is empty)", "has_nodeports_jump": True, **common})
    yield from masquerade_rules(rs, present.get("nat", set()), common)


# Canary chains: empty chains whose disappearance tells their owner that something flushed the tables
# (kube-proxy's iptables proxier: mangle, nat, filter; kubelet: mangle, where its hint chain lives).
CANARIES = (("KUBE-PROXY-CANARY", "kube-proxy", ("mangle", "nat", "filter")),
            ("KUBE-KUBELET-CANARY", "kubelet", ("mangle",)))
# kube-proxy's KUBE-FORWARD accepts, which a FORWARD policy of DROP needs (pkg/proxy/iptables/proxier.go)
FORWARD_ACCEPTS = (("marked Service traffic", ("-m mark --mark ", "-j ACCEPT")),
                   ("its replies", ("RELATED,ESTABLISHED", "-j ACCEPT")))


def node_wide(rs: RuleSet, backend: str, *, kubelet_running: bool) -> Iterator[Finding]:
    """kube-proxy's and kubelet's node-wide chains: the canaries, the FORWARD accepts, the localnet block."""
    common = {"family": rs.family, "backend": backend}
    for chain, owner, tables in CANARIES:
        if owner == "kubelet" and not kubelet_running:
            continue
        for table in tables:
            if table in rs.tables and chain not in rs.tables[table].chains:
                yield finding("iptables.canary_missing", f"{table}/{chain}", evidence={
                    "table": table, "chain": chain, "owner": owner, **common})
    filt = rs.tables.get("filter")
    if filt is None:
        return
    yield from forward_accepts(filt, common)
    if rs.family == 4 and "KUBE-FIREWALL" in filt.chains:
        rules = filt.plain.get("KUBE-FIREWALL", ())
        if not any("-d 127.0.0.0/8" in rule and "-j DROP" in rule for rule in rules):
            yield finding("iptables.localnet_block_missing", "filter/KUBE-FIREWALL", evidence={
                "rules": list(rules[:10]), **common})


def forward_accepts(filt: Table, common: dict[str, object]) -> Iterator[Finding]:
    """KUBE-FORWARD's accepts, which matter only under a FORWARD policy of DROP (iptables and IPVS mode alike)."""
    forward = filt.plain.get("KUBE-FORWARD", ())
    if filt.policies.get("FORWARD") == "DROP" and "KUBE-FORWARD" in filt.chains:
        missing = [what for what, needles in FORWARD_ACCEPTS
                   if not any(all(n in rule for n in needles) for rule in forward)]
        if missing:
            yield finding("iptables.forward_accept_missing", "filter/FORWARD", evidence={
                "missing": " and ".join(missing), "rules": list(forward[:10]), **common})


def _nodeports_unreached(rs: RuleSet, common: dict[str, object]) -> Finding:
    """No jump to KUBE-NODEPORTS: every NodePort rule is dead. Named by the rules' own comments."""
    rules = [r for r in rs.table("nat").dispatch.get("KUBE-NODEPORTS", ()) if r.destination is None and r.dport]
    ports = sorted({f"{(service_names(r.comment) or ['?'])[0]} :{r.dport}" for r in rules})
    return finding("iptables.nodeports_jump_missing", "nat/KUBE-SERVICES", evidence={
        "count": len(ports), "node_ports": ", ".join(ports) or "none yet", **common},
        severity=None if ports else "warning")


# kube-proxy's masquerade pair: the mark (iptables-save prints `--or-mark 0x4000` as `--set-xmark 0x4000/0x4000`)
# and the MASQUERADE of marked packets
_MASQUERADE = (("KUBE-MARK-MASQ", "MARK --or-mark / --set-xmark", (" --or-mark ", " --set-xmark ")),
               ("KUBE-POSTROUTING", "MASQUERADE", (" -j MASQUERADE",)))


def masquerade_rules(rs: RuleSet, nat_chains: set[str], common: dict[str, object]) -> Iterator[Finding]:
    plain = rs.table("nat").plain
    for chain, what, needles in _MASQUERADE:
        if chain not in nat_chains:
            continue  # chain_missing says so
        rules = plain.get(chain, ())
        # IPVS mode's hairpin MASQUERADE (`--match-set KUBE-LOOP-BACK`) is not the masquerade of marked packets
        if not any(n in rule and "--match-set" not in rule for rule in rules for n in needles):
            yield finding("iptables.masquerade_missing", f"nat/{chain}", evidence={
                "chain": chain, "missing": what, "rules": list(rules[:10]), **common})


def _leftovers(sc: Context, rs: RuleSet) -> Iterator[Finding]:
    common = {"family": rs.family, "backend": sc.backend}
    for table in rs.tables.values():
        userspace = list(table.census.userspace)
        if userspace:
            yield finding("iptables.userspace_rules_present", f"{table.name}/{','.join(userspace)}",
                          evidence={"table": table.name, "chains": userspace, **common})
        legacy = list(table.census.legacy)
        if legacy:
            wanted = set(legacy)
            referenced = sorted({t for rules in table.plain.values() for t in map(jump_target, rules) if t in wanted}
                                | {r.target for rules in table.dispatch.values() for r in rules if r.target in wanted})
            yield finding("iptables.legacy_chains_present", f"{table.name}/{legacy[0]}", evidence={
                "table": table.name, "chains": legacy, "referenced": len(referenced),
                "referenced_chains": referenced, **common}, severity="warning" if referenced else None)
