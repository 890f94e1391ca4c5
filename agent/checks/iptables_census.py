"""Counts and rare kinds of a table's chains, found without a Python-level pass over them. Pure.

A nat table at 10k Services declares 60k chains, and several checks ask the same few questions of them
(how many KUBE-SVC chains, any userspace or pre-1.24 leftovers). A loop over 60k names costs several
milliseconds each time; joined into one string they are counted and searched in C, once per Table.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.memo import by_identity
from agent.kube_hash import EXT, FW, SVC, SVL
from agent.model.iptables import Table

USERSPACE_CHAINS = ("KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST")
LEGACY_PREFIXES = ("KUBE-XLB-",)


@dataclass(frozen=True)
class Census:
    declared: dict[str, int]  # KUBE-SVC- / KUBE-SVL- / KUBE-EXT- / KUBE-FW- -> chains declared with it
    userspace: tuple[str, ...]  # userspace mode's chains, sorted
    legacy: tuple[str, ...]  # chains of kube-proxy before 1.24 (KUBE-XLB-*), sorted


@by_identity  # the reader hands back unchanged tables as the same objects
def census(table: Table) -> Census:
    counted = table.prefixes
    if counted is not None:  # counted by the parser while it declared them: no pass over the names
        userspace = () if not counted["KUBE-PORTALS-"] + counted["KUBE-NODEPORT-"] else tuple(
            sorted(set(USERSPACE_CHAINS).intersection(table.chains)))
        legacy = () if not counted["KUBE-XLB-"] else _with_prefix(table, LEGACY_PREFIXES)
        return Census({prefix: counted[prefix] for prefix in (SVC, SVL, EXT, FW)}, userspace, legacy)
    text = "\n" + "\n".join(table.chains) + "\n"
    return Census(declared={prefix: text.count(f"\n{prefix}") for prefix in (SVC, SVL, EXT, FW)},
                  userspace=tuple(sorted(c for c in USERSPACE_CHAINS if f"\n{c}\n" in text)),
                  legacy=_with_prefix(table, LEGACY_PREFIXES) if any(f"\n{p}" in text for p in LEGACY_PREFIXES)
                  else ())


def _with_prefix(table: Table, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(c for c in table.chains if c.startswith(prefixes)))
