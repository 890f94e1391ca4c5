"""Which Service port each hashed chain (KUBE-SVC/SVL/EXT/FW-<hash>) belongs to. Pure.

A service-level comment ("ns/svc:port cluster IP") only proposes a name, which counts when
base32(sha256(name + protocol)) gives a chain's suffix, so a name is never taken on trust from a comment.
Per-endpoint comments are never needed (kube-proxy drops them above 1,000 endpoints).
"""

from __future__ import annotations

import re

from agent.kube_hash import port_proto_hash
from agent.model.iptables import LadderChain, Rule, RuleSet
from agent.model.views import Names, ServicePortKey

PROTOCOLS = ("tcp", "udp", "sctp")
# "ns/name" or "ns/name:port" as kube-proxy writes a ServicePortName into a comment
_SERVICE_NAME = re.compile(r"(?<![\w/.:-])([a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*(?::[-a-z0-9]+)?)(?![\w/.:-])")


def service_names(text: str | None) -> list[str]:
    """The ServicePortName-looking words of a comment."""
    return _SERVICE_NAME.findall(text) if text else []


def proto(value: str | None) -> str | None:
    return value if value in PROTOCOLS else None


def learn_names(rs: RuleSet) -> Names:
    """Names of the hashed chains of a RuleSet, from the comments of its dispatch rules and ladders."""
    by_hash: dict[str, ServicePortKey] = {}
    seen: set[tuple[str, str | None]] = set()  # a dispatch rule and its ladder share their comment: hashed once
    for table in rs.tables.values():
        sources: list[Rule | LadderChain] = [*(r for rules in table.dispatch.values() for r in rules),
                                             *table.ladders.values()]
        for source in sources:
            comment, protocol = source.comment, source.protocol
            if not comment or (comment, protocol) in seen:
                continue
            seen.add((comment, protocol))
            p = proto(protocol)
            for name in service_names(comment):
                for q in (p,) if p is not None else PROTOCOLS:
                    by_hash.setdefault(port_proto_hash(name, q), ServicePortKey(name, q))
    return Names(by_hash)
