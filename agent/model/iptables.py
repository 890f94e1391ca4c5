"""Snapshot data for the iptables source (filled by agent/collect/iptables.py). Immutable.

Only what the checks need is kept, so a node with 10k Services (170k rules) stays small in memory:
per-endpoint KUBE-SEP chains become one DNAT string each, KUBE-SVC/KUBE-SVL chains their endpoint
ladder, and only the dispatch rules (which say where traffic enters a Service) keep their parsed
parts and text. Everything else kube-proxy did not hash (built-in chains, KUBE-POSTROUTING, other
components' chains) keeps its rule text.

Every class is a frozen dataclass holding tuples and read-only mappings: a read is handed out whole
and nobody changes it afterwards (the reader may hand the same object back while the rules are
unchanged). The snapshot still round-trips through JSON (agent/serial.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

# Chains whose rules are dispatch rules: they send a Service address or port somewhere.
DISPATCH_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL")
DISPATCH_PREFIXES = ("KUBE-EXT-", "KUBE-FW-")
LADDER_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-")
ENDPOINT_PREFIX = "KUBE-SEP-"
HASHED_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-")
USERSPACE_CHAINS = ("KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST")
LEGACY_PREFIXES = ("KUBE-XLB-",)  # kube-proxy before 1.24


def frozen_map(value: Mapping[Any, Any] | None = None) -> Mapping[Any, Any]:
    """A read-only view of `value` (taken over, not copied: the caller gives up its dict)."""
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(value if isinstance(value, dict) else dict(value or {}))


def _freeze(obj: object, **fields: str) -> None:
    """Make a frozen dataclass's list/dict fields tuples/read-only mappings (constructors may be given
    plain lists and dicts: tests, the JSON loader)."""
    for name, kind in fields.items():
        value = getattr(obj, name)
        if kind == "map" and not isinstance(value, MappingProxyType):
            object.__setattr__(obj, name, frozen_map(value))
        elif kind == "tuple" and not isinstance(value, tuple):
            object.__setattr__(obj, name, tuple(value))


def jump_target(rule_text: str) -> str:
    """The -j/-g target: the last one on the line (a comment cannot follow the target); "" when none."""
    at = max(rule_text.rfind(" -j "), rule_text.rfind(" -g "))
    if at < 0:
        return ""
    start = at + 4
    end = rule_text.find(" ", start)
    return rule_text[start:] if end < 0 else rule_text[start:end]



@dataclass(frozen=True, slots=True)  # many of them: no per-object __dict__
class Rule:
    """One dispatch rule, parsed. Negated matches keep a leading "!" ("!10.0.0.0/8")."""

    chain: str
    target: str  # "" for a rule without -j (kube-proxy's KUBE-FW "will be dropped" comment rule)
    text: str  # the rule as read, for evidence
    comment: str | None = None
    source: str | None = None
    destination: str | None = None  # host addresses without /32 or /128
    protocol: str | None = None
    dport: str | None = None
    src_type: str | None = None  # -m addrtype --src-type
    dst_type: str | None = None  # -m addrtype --dst-type
    goto: bool = False  # -g instead of -j


@dataclass(frozen=True, slots=True)
class LadderChain:
    """A KUBE-SVC-/KUBE-SVL- chain: how it picks one KUBE-SEP chain."""

    endpoints: tuple[str, ...] = ()  # KUBE-SEP targets of the load-balancing rules, in order
    probabilities: tuple[float | None, ...] = ()  # parallel to endpoints; None: unconditional
    affinity_seconds: int | None = None  # `-m recent --rcheck --seconds N`: ClientIP session affinity
    affinity_endpoints: tuple[str, ...] = ()  # KUBE-SEP targets of the affinity rules
    comment: str | None = None  # the first service-level comment ("ns/svc:port cluster IP")
    protocol: str | None = None  # -p of the first rule that names one


@dataclass(frozen=True, slots=True)
class Jump:
    table: str
    chain: str
    target: str
    text: str


@dataclass(frozen=True)
class Census:
    """Counts and rare kinds of a table's chains (several checks ask these of 60k names)."""

    declared: Mapping[str, int]  # KUBE-SVC- / KUBE-SVL- / KUBE-EXT- / KUBE-FW- -> chains declared with it
    kube: int  # every KUBE-* chain
    userspace: tuple[str, ...]  # userspace mode's chains, sorted
    legacy: tuple[str, ...]  # chains of kube-proxy before 1.24 (KUBE-XLB-*), sorted


@dataclass(frozen=True)
class Table:
    name: str
    chains: tuple[str, ...] = ()  # every chain, built-in ones included, in save order
    rule_count: int = 0
    plain: Mapping[str, tuple[str, ...]] = field(default_factory=frozen_map)  # chain -> rule texts (not below)
    dispatch: Mapping[str, tuple[Rule, ...]] = field(default_factory=frozen_map)  # DISPATCH_CHAINS, KUBE-EXT/FW-
    ladders: Mapping[str, LadderChain] = field(default_factory=frozen_map)  # KUBE-SVC-/KUBE-SVL- chains
    endpoint_dnat: Mapping[str, str] = field(default_factory=frozen_map)  # KUBE-SEP chain -> "ip:port" ("": none)
    policies: Mapping[str, str] = field(default_factory=frozen_map)  # built-in chain -> ACCEPT | DROP, as saved

    def __post_init__(self) -> None:
        _freeze(self, chains="tuple", plain="map", dispatch="map", ladders="map", endpoint_dnat="map",
                policies="map")

    @cached_property  # a pure function of this immutable table, worked out once, when first asked
    def census(self) -> Census:
        text = "\n" + "\n".join(self.chains) + "\n"  # counted and searched in C, not a loop over 60k names
        legacy = tuple(sorted(c for c in self.chains if c.startswith(LEGACY_PREFIXES))) \
            if any(f"\n{p}" in text for p in LEGACY_PREFIXES) else ()
        return Census(declared=frozen_map({p: text.count("\n" + p) for p in HASHED_PREFIXES}),
                      kube=text.count("\nKUBE-"),
                      userspace=tuple(sorted(c for c in USERSPACE_CHAINS if f"\n{c}\n" in text)), legacy=legacy)


@dataclass(frozen=True)
class RuleSet:
    """What one `ip(6)tables-<backend>-save` showed."""

    family: int  # 4 | 6
    tables: Mapping[str, Table] = field(default_factory=frozen_map)
    dangling: tuple[Jump, ...] = ()  # jumps to a KUBE-* chain that is not declared
    unparsed: tuple[str, ...] = ()  # lines the parser did not understand (the first 50)
    unparsed_count: int = 0

    def __post_init__(self) -> None:
        _freeze(self, tables="map", dangling="tuple", unparsed="tuple")

    def table(self, name: str) -> Table:
        return self.tables.get(name) or Table(name)

    def rule_counts(self) -> RuleSet:
        """Each table's name and rule count, nothing else (see IptablesState.rule_counts)."""
        return RuleSet(self.family, frozen_map({n: Table(n, rule_count=t.rule_count) for n, t in self.tables.items()}),
                       unparsed_count=self.unparsed_count)

    def kube_chain_count(self) -> int:
        return sum(t.census.kube for t in self.tables.values())


@dataclass(frozen=True)
class IptablesState:
    backend: str  # "legacy" | "nft": the one kube-proxy writes through (whose rules are judged)
    backend_reason: str  # how it was decided (iptables-wrappers' order), for evidence
    rulesets: tuple[RuleSet, ...] = ()  # IPv4 first, then IPv6 when that has kube-proxy chains
    kube_chains: Mapping[str, int] = field(default_factory=frozen_map)  # backend -> KUBE-* chains seen there
    read_at: float = 0.0  # unix time of the read (older than the snapshot when the read was spaced out)
    # The other backend's rule sets, per family, where kube-proxy's chains are there too: the kernel runs the
    # hooks of both (legacy x_tables and nf_tables), so a Service either programs is programmed.
    other_rulesets: tuple[RuleSet, ...] = ()
    # the backend kubelet's hint (or, without one, the rule counts) chose, when kube-proxy's chains are not
    # there but only in `backend` ("": the same one)
    hinted: str = ""
    # the families whose save of `backend` was read whole, kube-proxy's chains in it or not: an IPv6 save without
    # them is read but not kept in `rulesets`, and on a node that serves IPv6 that is itself worth saying
    families_read: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self, rulesets="tuple", kube_chains="map", other_rulesets="tuple", families_read="tuple")

    def rule_counts(self) -> IptablesState:
        """This state without its rules: each RuleSet cut to its tables' names and rule counts (what the
        reporters show of it). For a served report (agent/model/report.py), which no check reads."""
        return replace(self, rulesets=tuple(rs.rule_counts() for rs in self.rulesets),
                       other_rulesets=tuple(rs.rule_counts() for rs in self.other_rulesets))

    @property
    def other_backend(self) -> str:
        return "nft" if self.backend == "legacy" else "legacy"

    def ruleset(self, family: int) -> RuleSet | None:
        return next((r for r in self.rulesets if r.family == family), None)
