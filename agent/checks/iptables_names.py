"""Which Service port each hashed chain (KUBE-SVC/SVL/EXT/FW-<hash>) belongs to. Pure.

A service-level comment ("ns/svc:port cluster IP") only proposes a name, which counts when
base32(sha256(name + protocol)) gives a chain's suffix, so a name is never taken on trust from a comment.
Per-endpoint comments are never needed (kube-proxy drops them above 1,000 endpoints).

After a partial sync the names are brought up to date from the chains the reader says changed
(RuleSet.changes): each hash keeps a count of the comments proposing it, so a name goes exactly when
its last proposer does, and the result equals learning everything afresh.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from agent.checks.memo import by_identity, carried
from agent.kube_hash import EXT, FW, SVC, SVL, port_proto_hash
from agent.model.iptables import ChainChanges, LadderChain, Rule, RuleSet

PROTOCOLS = ("tcp", "udp", "sctp")
# "ns/name" or "ns/name:port" as kube-proxy writes a ServicePortName into a comment
_SERVICE_NAME = re.compile(r"(?<![\w/.:-])([a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*(?::[-a-z0-9]+)?)(?![\w/.:-])")
HASHED_PREFIXES = (SVC, SVL, EXT, FW)
T = TypeVar("T")


def service_names(text: str | None) -> list[str]:
    """The ServicePortName-looking words of a comment."""
    return _SERVICE_NAME.findall(text) if text else []


def proto(value: str | None) -> str | None:
    return value if value in PROTOCOLS else None


class ServicePortKey(NamedTuple):  # a tuple: hashed in C (10k of them are looked up per read)
    service: str  # "ns/name:port" (or "ns/name" for an unnamed port)
    protocol: str


def hash_of(chain: str) -> str | None:
    """The hash part of a KUBE-SVC/SVL/EXT/FW chain's name."""
    for prefix in HASHED_PREFIXES:
        if chain.startswith(prefix):
            return chain[len(prefix):]
    return None


class Names:
    """Hash suffix (16 characters) -> Service port, learnt from service-level comments and verified by hash.
    `since` is the serial of the RuleSet these were brought up to date from (None: learnt afresh), and
    `changed` the hashes that came or went then."""

    def __init__(self, by_hash: dict[str, ServicePortKey] | None = None, since: int | None = None,
                 changed: frozenset[str] = frozenset()) -> None:
        self.by_hash: dict[str, ServicePortKey] = by_hash if by_hash is not None else {}
        self.since = since
        self.changed = changed

    def of_chain(self, chain: str) -> ServicePortKey | None:
        """The Service port a KUBE-SVC/SVL/EXT/FW chain belongs to, if its name is known."""
        suffix = hash_of(chain)
        return None if suffix is None else self.by_hash.get(suffix)


Proposals = tuple[tuple[str, ServicePortKey], ...]  # (chain hash, Service port) pairs


def proposed(comment: str | None, protocol: str | None) -> Proposals:
    """The (hash, Service port) pairs a comment's names propose."""
    if not comment:
        return ()
    p = proto(protocol)
    return tuple((port_proto_hash(name, q), ServicePortKey(name, q))
                 for name in service_names(comment) for q in ((p,) if p is not None else PROTOCOLS))


def list_changes(before: list[T], now: list[T]) -> tuple[list[T], list[T]]:
    """(removed, added) between two lists of objects, by identity (the reader hands back an unchanged
    rule as the same object), as multisets."""
    objects = {id(x): x for x in before}
    objects.update((id(x), x) for x in now)
    was, cur = Counter(map(id, before)), Counter(map(id, now))
    return ([objects[i] for i, n in (was - cur).items() for _ in range(n)],
            [objects[i] for i, n in (cur - was).items() for _ in range(n)])


@dataclass
class _Learnt:
    """What names were last learnt from: to bring them up to date from the next RuleSet's changes."""

    serial: int
    names: Names
    counts: dict[str, int]  # hash -> how many comments propose it
    sources: dict[str, tuple[dict[str, list[Rule]], dict[str, LadderChain]]]  # table -> (dispatch, ladders)


_learnt: dict[int, _Learnt] = carried({})  # family -> the last learnt


@by_identity  # once per RuleSet object: the checks and the metrics share it
def learn_names(rs: RuleSet) -> Names:
    """Names of the hashed chains of a RuleSet."""
    prior = _learnt.get(rs.family)
    changes = rs.changes_since(prior.serial if prior is not None else None)
    if prior is not None and changes is not None:
        names, counts = _update(rs, changes, prior)
    else:  # a dispatch rule and its ladder share their comment: each is hashed once (not kept: 5 MB at 10k)
        names, counts = Names(), {}
        seen: dict[tuple[str | None, str | None], Proposals] = {}
        for table in rs.tables.values():
            for rules in table.dispatch.values():
                _count(names, counts, rules, 1, memo=seen)
            _count(names, counts, table.ladders.values(), 1, memo=seen)
    _learnt[rs.family] = _Learnt(rs.serial, names, counts,
                                 {name: (t.dispatch, t.ladders) for name, t in rs.tables.items()})
    return names


def _count(names: Names, counts: dict[str, int], sources: Iterable[Rule | LadderChain], step: int,
           changed: set[str] | None = None, memo: dict[tuple[str | None, str | None], Proposals] | None = None) -> None:
    by_hash = names.by_hash
    for source in sources:
        if memo is None:
            pairs = proposed(source.comment, source.protocol)
        else:
            pairs = memo.get((source.comment, source.protocol)) or ()
            if not pairs and source.comment:
                pairs = memo[source.comment, source.protocol] = proposed(source.comment, source.protocol)
        for digest, key in pairs:
            n = counts.get(digest, 0) + step
            if n > 0:
                counts[digest] = n
                if n == step:  # first proposer
                    by_hash[digest] = key
                    if changed is not None:
                        changed.add(digest)
            else:  # the last proposer gone
                counts.pop(digest, None)
                by_hash.pop(digest, None)
                if changed is not None:
                    changed.add(digest)


def _update(rs: RuleSet, changes: ChainChanges, prior: _Learnt) -> tuple[Names, dict[str, int]]:
    names = Names(dict(prior.names.by_hash), since=prior.serial)  # copies: the earlier Names stays as it was
    counts = dict(prior.counts)
    changed: set[str] = set()
    for table_name, chains in changes.chains.items():
        table = rs.table(table_name)
        dispatch, ladders = prior.sources.get(table_name, ({}, {}))
        for chain in chains:
            before, now = dispatch.get(chain), table.dispatch.get(chain)
            if before is not now:
                removed, added = list_changes(before or [], now or [])
                _count(names, counts, removed, -1, changed)
                _count(names, counts, added, 1, changed)
            ladder_before, ladder_now = ladders.get(chain), table.ladders.get(chain)
            if ladder_before is not ladder_now:
                _count(names, counts, [ladder_before] if ladder_before else [], -1, changed)
                _count(names, counts, [ladder_now] if ladder_now else [], 1, changed)
    names.changed = frozenset(changed)
    return names, counts
