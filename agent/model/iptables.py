"""Snapshot data for the iptables source (filled by agent/collect/iptables.py).

Only what the checks need is kept, so a node with 10k Services (170k rules) stays small in memory:
per-endpoint KUBE-SEP chains become one DNAT string each, KUBE-SVC/KUBE-SVL chains their endpoint
ladder, and only the dispatch rules (which say where traffic enters a Service) keep their parsed
parts and text. Everything else kube-proxy did not hash (built-in chains, KUBE-POSTROUTING, other
components' chains) keeps its rule text. Plain dataclasses only: the snapshot round-trips through JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

# Chains whose rules are dispatch rules: they send a Service address or port somewhere.
DISPATCH_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-PROXY-FIREWALL")
DISPATCH_PREFIXES = ("KUBE-EXT-", "KUBE-FW-")
LADDER_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-")
ENDPOINT_PREFIX = "KUBE-SEP-"
# Chain name prefixes the parser counts while declaring: kube-proxy's hashed chains, pre-1.24 KUBE-XLB-,
# and userspace mode's KUBE-PORTALS-* / KUBE-NODEPORT-* (not KUBE-NODEPORTS)
COUNTED_PREFIXES = ("KUBE-SEP-", "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-", "KUBE-PORTALS-",
                    "KUBE-NODEPORT-")
KUBE_PREFIX = "KUBE-"
# What the parser counts: those, and every KUBE-* chain (kube_chain_count), last
COUNTED = (*COUNTED_PREFIXES, KUBE_PREFIX)
# Not part of a saved snapshot (agent/serial.py skips it): it only relates objects of one process.
TRANSIENT = {"transient": True}


@dataclass(slots=True)  # many of them: no per-object __dict__
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


@dataclass(slots=True)  # many of them: no per-object __dict__
class LadderChain:
    """A KUBE-SVC-/KUBE-SVL- chain: how it picks one KUBE-SEP chain."""

    endpoints: list[str] = field(default_factory=list)  # KUBE-SEP targets of the load-balancing rules, in order
    probabilities: list[float | None] = field(default_factory=list)  # parallel to endpoints; None: unconditional
    affinity_seconds: int | None = None  # `-m recent --rcheck --seconds N`: ClientIP session affinity
    affinity_endpoints: list[str] = field(default_factory=list)  # KUBE-SEP targets of the affinity rules
    comment: str | None = None  # the first service-level comment ("ns/svc:port cluster IP")
    protocol: str | None = None  # -p of the first rule that names one


@dataclass(slots=True)  # many of them: no per-object __dict__
class Jump:
    table: str
    chain: str
    target: str
    text: str


@dataclass
class Table:
    name: str
    chains: list[str] = field(default_factory=list)  # every chain, built-in ones included, in save order
    rule_count: int = 0
    plain: dict[str, list[str]] = field(default_factory=dict)  # chain -> rule texts, for chains not modelled below
    dispatch: dict[str, list[Rule]] = field(default_factory=dict)  # DISPATCH_CHAINS, KUBE-EXT-/KUBE-FW- chains
    ladders: dict[str, LadderChain] = field(default_factory=dict)  # KUBE-SVC-/KUBE-SVL- chains
    endpoint_dnat: dict[str, str] = field(default_factory=dict)  # KUBE-SEP chain -> "ip:port" ("" when none)
    # COUNTED -> how many chains are declared with it, when the parser counted them as it declared
    # them (None: count `chains`); 60k names at 10k Services are not scanned again by every check
    prefixes: dict[str, int] | None = field(default=None, compare=False, metadata=TRANSIENT)


_serials = itertools.count(1)


@dataclass(frozen=True)
class ChainChanges:
    """How a RuleSet differs from the one read just before it from the same backend and family (set by
    agent/iptables_reuse.py): per table, every chain whose entry in plain, dispatch, ladders or
    endpoint_dnat may differ (added, removed or changed). Chain lists and counts are not covered. A view
    derived from the RuleSet whose serial is `since` may be brought up to date from these chains alone."""

    since: int
    chains: dict[str, frozenset[str]]


@dataclass
class RuleSet:
    """What one `ip(6)tables-<backend>-save` showed. Never changed once the parser hands it out: the reader
    returns the same object while the rules are unchanged, and checks memoise their results on it."""

    family: int  # 4 | 6
    tables: dict[str, Table] = field(default_factory=dict)
    dangling: list[Jump] = field(default_factory=list)  # jumps to a KUBE-* chain that is not declared
    unparsed: list[str] = field(default_factory=list)  # lines the parser did not understand (first 50)
    unparsed_count: int = 0
    # unique in this process: what ChainChanges.since refers to
    serial: int = field(default_factory=lambda: next(_serials), compare=False, repr=False, metadata=TRANSIENT)
    changes: ChainChanges | None = field(default=None, compare=False, repr=False, metadata=TRANSIENT)

    def table(self, name: str) -> Table:
        return self.tables.get(name) or Table(name)

    def changes_since(self, serial: int | None) -> ChainChanges | None:
        """The chains changed since the RuleSet with this serial, if that is the one read just before."""
        return self.changes if self.changes is not None and self.changes.since == serial else None

    def kube_chain_count(self) -> int:
        """KUBE-* chains in all tables (the parser's count where it has one: 60k names at 10k Services)."""
        return sum(t.prefixes[KUBE_PREFIX] if t.prefixes is not None else
                   sum(1 for c in t.chains if c.startswith(KUBE_PREFIX)) for t in self.tables.values())


@dataclass
class IptablesState:
    backend: str  # "legacy" | "nft": the one kube-proxy writes through
    backend_reason: str  # how it was decided (iptables-wrappers' order), for evidence
    rulesets: list[RuleSet] = field(default_factory=list)  # IPv4 first, then IPv6 when that has tables
    kube_chains: dict[str, int] = field(default_factory=dict)  # backend -> KUBE-* chains seen there
    read_at: float = 0.0  # unix time of the read (older than the snapshot when the read was spaced out)

    def ruleset(self, family: int) -> RuleSet | None:
        return next((r for r in self.rulesets if r.family == family), None)
