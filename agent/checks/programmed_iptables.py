"""iptables mode -> the mode-independent view (agent/model/programmed.py): per Service port, where its
traffic enters (dispatch), which endpoints it goes to, and its session affinity. Pure.

Chains are tied to Service ports by kube-proxy's own hashing (agent.kube_hash): a service-level comment
("ns/svc:port cluster IP") only proposes a name, which counts when base32(sha256(name + protocol))
gives the chain's suffix. Per-endpoint comments are never needed (kube-proxy drops them above 1,000
endpoints); endpoints are read from the KUBE-SEP chains' DNAT targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.checks.memo import by_identity
from agent.kube_hash import EXT, FW, SVC, SVL, port_proto_hash
from agent.model.iptables import IptablesState, LadderChain, Rule, RuleSet, Table
from agent.model.programmed import (
    ACCEPT,
    CLUSTER_IP,
    DROP,
    EXTERNAL_IP,
    HEALTH_CHECK_NODE_PORT,
    LOAD_BALANCER_IP,
    NODE_PORT,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ProgrammedPort,
)

PROTOCOLS = ("tcp", "udp", "sctp")
# "ns/name" or "ns/name:port" as kube-proxy writes a ServicePortName into a comment
_SERVICE_NAME = re.compile(r"(?<![\w/.:-])([a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*(?::[-a-z0-9]+)?)(?![\w/.:-])")
_HASHED_PREFIXES = (SVC, SVL, EXT, FW)


def service_names(text: str | None) -> list[str]:
    """The ServicePortName-looking words of a comment."""
    return _SERVICE_NAME.findall(text) if text else []


@dataclass(frozen=True)
class ServicePortKey:
    service: str  # "ns/name:port" (or "ns/name" for an unnamed port)
    protocol: str


class Names:
    """Hash suffix (16 characters) -> Service port, learnt from service-level comments and verified by hash."""

    def __init__(self) -> None:
        self.by_hash: dict[str, ServicePortKey] = {}

    def of_chain(self, chain: str) -> ServicePortKey | None:
        """The Service port a KUBE-SVC/SVL/EXT/FW chain belongs to, if its name is known."""
        for prefix in _HASHED_PREFIXES:
            if chain.startswith(prefix):
                return self.by_hash.get(chain[len(prefix):])
        return None


# (comment, protocol) -> the (chain hash, Service port) pairs its names propose, kept across reads: after
# a change, the Services that did not change cost a lookup, not a regular expression and a sha256 each
# (10k of those cost a quarter of a second). Emptied when it grows past what a node can have.
_proposals: dict[tuple[str, str | None], tuple[tuple[str, ServicePortKey], ...]] = {}
MAX_REMEMBERED = 200_000


def _proposed(comment: str | None, protocol: str | None) -> tuple[tuple[str, ServicePortKey], ...]:
    if not comment:
        return ()
    have = _proposals.get((comment, protocol))
    if have is None:
        if len(_proposals) >= MAX_REMEMBERED:
            _proposals.clear()
        proto = _proto(protocol)
        have = _proposals[comment, protocol] = tuple(
            (port_proto_hash(name, p), ServicePortKey(name, p))
            for name in service_names(comment) for p in ((proto,) if proto is not None else PROTOCOLS))
    return have


@by_identity  # once per RuleSet object: the checks and the metrics share it
def learn_names(rs: RuleSet) -> Names:
    """Names of the hashed chains of a RuleSet."""
    names = Names()
    by_hash = names.by_hash
    for table in rs.tables.values():
        for rules in table.dispatch.values():
            for rule in rules:
                for pair in _proposed(rule.comment, rule.protocol):
                    by_hash.setdefault(*pair)
        for ladder in table.ladders.values():
            for pair in _proposed(ladder.comment, ladder.protocol):
                by_hash.setdefault(*pair)
    return names


def _proto(value: str | None) -> str | None:
    return value if value in PROTOCOLS else None


def _address(ip: str | None, port: str | None, family: int) -> str:
    host = ip or ""
    if family == 6 and host:
        host = f"[{host}]"
    return f"{host}:{port or ''}"


@dataclass
class _Port:
    key: ServicePortKey
    out: ProgrammedPort
    seen: set[tuple[str, str, str]] = field(default_factory=set)

    def add(self, kind: str, address: str, action: str, evidence: str) -> None:
        if (kind, address, action) not in self.seen:  # node ports have a localhost twin rule
            self.seen.add((kind, address, action))
            self.out.dispatch.append(Dispatch(kind=kind, address=address, action=action, evidence=evidence))


def _kind_of_nat(rule: Rule) -> str | None:
    comment = rule.comment or ""
    if rule.chain == "KUBE-NODEPORTS":
        return NODE_PORT
    if comment.endswith(" cluster IP"):
        return CLUSTER_IP
    if comment.endswith(" external IP"):
        return EXTERNAL_IP
    if comment.endswith(" loadbalancer IP"):
        return LOAD_BALANCER_IP
    return None


# What makes up one Service port's rules: its nat dispatch rules, filter rules, (chain, ladder, DNAT of
# each endpoint chain) per KUBE-SVC/SVL chain, and the names of its KUBE-EXT/FW chains, in rule order.
class _Filtered(NamedTuple):
    """A filter-table rule among a port's inputs (nat rules go bare)."""

    rule: Rule


class _Ladder(NamedTuple):
    chain: str  # KUBE-SVC-... or KUBE-SVL-...
    ladder: LadderChain
    dnats: tuple[str | None, ...]  # the DNAT of each endpoint chain it jumps to


_Inputs = list[Rule | _Filtered | _Ladder | str]  # str: a KUBE-EXT/FW chain's name

# family -> Service port -> (its inputs, its ProgrammedPort) from the last derivation. A port whose inputs
# are equal to last time's (the same objects, mostly: agent/iptables_reuse.py hands back unchanged
# chains' parses) is the same ProgrammedPort, not built again: after a partial sync only the Services it
# touched cost anything.
_previous: dict[int, dict[ServicePortKey, tuple[tuple[object, ...], ProgrammedPort | None]]] = {}


@by_identity  # the same RuleSet object comes back while the rules are unchanged (agent/iptables_reuse.py)
def programmed_ports_of(rs: RuleSet) -> list[ProgrammedPort]:
    """One RuleSet (one IP family) -> its programmed Service ports."""
    names = learn_names(rs)
    nat, filt = rs.table("nat"), rs.table("filter")
    inputs: dict[ServicePortKey, _Inputs] = {}
    for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        for rule in nat.dispatch.get(chain, []):
            key = names.of_chain(rule.target)
            if key is not None:
                inputs.setdefault(key, []).append(rule)
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"):
        for rule in filt.dispatch.get(chain, []):
            words = service_names(rule.comment)
            if words:  # no chain to hash here: the comment names the Service port (never dropped)
                key = ServicePortKey(words[0], _proto(rule.protocol) or "tcp")
                inputs.setdefault(key, []).append(_Filtered(rule))
    dnat = nat.endpoint_dnat.get
    for chain, ladder in nat.ladders.items():
        key = names.of_chain(chain)
        if key is not None:
            dnats = tuple(map(dnat, ladder.endpoints + ladder.affinity_endpoints))
            inputs.setdefault(key, []).append(_Ladder(chain, ladder, dnats))
    for chain in nat.dispatch:
        key = names.of_chain(chain)
        if key is not None:
            inputs.setdefault(key, []).append(chain)
    before = _previous.get(rs.family, {})
    now: dict[ServicePortKey, tuple[tuple[object, ...], ProgrammedPort | None]] = {}
    for key, items in inputs.items():
        fingerprint = tuple(items)
        hit = before.get(key)
        port = hit[1] if hit is not None and hit[0] == fingerprint else _port(key, items, rs.family)
        now[key] = (fingerprint, port)
    _previous[rs.family] = now
    return [port for key, (_, port) in sorted(now.items(), key=lambda kv: (kv[0].service, kv[0].protocol))
            if port is not None]


def _port(key: ServicePortKey, items: _Inputs, family: int) -> ProgrammedPort | None:
    """One Service port from its inputs, in order (None when none of them programs anything)."""
    p = _Port(key, ProgrammedPort(service=key.service, protocol=key.protocol, family=family))
    used = False
    kinds: dict[str, str] = {}  # address -> kind, from the nat rules (they come first)
    for item in items:
        if isinstance(item, Rule):
            used = _nat_dispatch(p, item, kinds, family) or used
        elif isinstance(item, str):
            p.out.evidence["ext_chain" if item.startswith(EXT) else "fw_chain"] = item
            used = True
        elif isinstance(item, _Filtered):
            used = _filter_dispatch(p, item.rule, kinds, family) or used
        else:
            chain, ladder, dnats = item
            endpoints = _endpoints(dnats)
            if chain.startswith(SVC):
                p.out.endpoints = endpoints
            else:
                p.out.local_endpoints = endpoints
            if ladder.affinity_seconds is not None:
                p.out.affinity_seconds = ladder.affinity_seconds
            p.out.evidence["svc_chain" if chain.startswith(SVC) else "svl_chain"] = chain
            used = True
    return p.out if used else None


def _endpoints(dnats: tuple[str | None, ...]) -> list[str]:
    """DNAT targets ("ip:port") of a ladder's endpoint chains, in ladder order, without repeats."""
    out: list[str] = []
    for dnat in dnats:
        # the DNAT string itself when it is one (the usual case): 50k endpoints need no copies
        for dest in (dnat,) if dnat and "," not in dnat else filter(None, (dnat or "").split(",")):
            if dest not in out:
                out.append(dest)
    return out


def _nat_dispatch(p: _Port, rule: Rule, kinds: dict[str, str], family: int) -> bool:
    kind = _kind_of_nat(rule)
    if kind is None or rule.dport is None:
        return False
    if kind == NODE_PORT and rule.destination is not None:
        return False  # the localhost twin of a node port (-d 127.0.0.0/8), same port
    address = _address(None if kind == NODE_PORT else rule.destination, rule.dport, family)
    kinds[address] = kind
    p.add(kind, address, TO_SERVICE, rule.text)
    return True


def _filter_dispatch(p: _Port, rule: Rule, kinds: dict[str, str], family: int) -> bool:
    """filter-table rules: "has no endpoints" REJECT, "has no local endpoints" DROP, health check ACCEPT."""
    comment = rule.comment or ""
    if rule.dport is None:
        return False
    if comment.endswith(" health check node port") and rule.target == "ACCEPT":
        kind, action, ip = HEALTH_CHECK_NODE_PORT, ACCEPT, None
    elif comment.endswith(" has no endpoints") or comment.endswith(" has no local endpoints"):
        action = REJECT if rule.target == "REJECT" else DROP
        if rule.destination is None:  # -m addrtype --dst-type LOCAL --dport N: a node port
            kind, ip = NODE_PORT, None
        else:
            ip = rule.destination
            if rule.chain == "KUBE-SERVICES":
                kind = CLUSTER_IP
            else:  # external or load balancer IP: the nat rule for the same address says which, if any
                kind = kinds.get(_address(ip, rule.dport, family), EXTERNAL_IP)
    else:
        return False
    p.add(kind, _address(ip, rule.dport, family), action, rule.text)
    return True


def programmed_ports(state: IptablesState) -> list[ProgrammedPort]:
    """Every IP family's programmed Service ports (IPv4 first)."""
    out: list[ProgrammedPort] = []
    for rs in state.rulesets:
        out.extend(programmed_ports_of(rs))
    return out


def endpoint_users(table: Table) -> dict[str, list[str]]:
    """KUBE-SEP chain -> the KUBE-SVC/SVL chains that jump to it."""
    users: dict[str, list[str]] = {}
    for chain, ladder in table.ladders.items():
        for sep in {*ladder.endpoints, *ladder.affinity_endpoints}:
            users.setdefault(sep, []).append(chain)
    return users

