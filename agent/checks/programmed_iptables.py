"""iptables mode -> the mode-independent view (agent/model/programmed.py): per Service port, where its
traffic enters (dispatch), which endpoints it goes to, and its session affinity. Pure.

Chains are tied to Service ports by kube-proxy's own hashing (agent.kube_hash): a service-level comment
("ns/svc:port cluster IP") only proposes a name, which counts when base32(sha256(name + protocol))
gives the chain's suffix. Per-endpoint comments are never needed (kube-proxy drops them above 1,000
endpoints); endpoints are read from the KUBE-SEP chains' DNAT targets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.checks.memo import by_identity
from agent.kube_hash import EXT, FW, SVC, SVL, port_proto_hash
from agent.model.iptables import IptablesState, Rule, RuleSet, Table
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
        self._tried: set[tuple[str, str]] = set()

    def propose(self, name: str, protocol: str | None) -> None:
        for proto in (protocol,) if protocol in PROTOCOLS else PROTOCOLS:
            assert proto is not None
            if (name, proto) in self._tried:
                continue
            self._tried.add((name, proto))
            self.by_hash.setdefault(port_proto_hash(name, proto), ServicePortKey(name, proto))

    def of_chain(self, chain: str) -> ServicePortKey | None:
        """The Service port a KUBE-SVC/SVL/EXT/FW chain belongs to, if its name is known."""
        for prefix in _HASHED_PREFIXES:
            if chain.startswith(prefix):
                return self.by_hash.get(chain[len(prefix):])
        return None


@by_identity  # once per RuleSet object: the checks and the metrics share it
def learn_names(rs: RuleSet) -> Names:
    """Names of the hashed chains of a RuleSet."""
    names = Names()
    for table in rs.tables.values():
        for rules in table.dispatch.values():
            for rule in rules:
                for name in service_names(rule.comment):
                    names.propose(name, _proto(rule.protocol))
        for ladder in table.ladders.values():
            for name in service_names(ladder.comment):
                names.propose(name, _proto(ladder.protocol))
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


def endpoints_of(table: Table, chain: str) -> list[str]:
    """DNAT targets ("ip:port") of a KUBE-SVC/SVL chain's endpoint ladder, in ladder order, without repeats."""
    ladder = table.ladders.get(chain)
    if ladder is None:
        return []
    out: list[str] = []
    for sep in [*ladder.endpoints, *ladder.affinity_endpoints]:
        for dest in filter(None, table.endpoint_dnat.get(sep, "").split(",")):
            if dest not in out:
                out.append(dest)
    return out


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


@by_identity  # the same RuleSet object comes back while the rules are unchanged (agent/iptables_reuse.py)
def programmed_ports_of(rs: RuleSet) -> list[ProgrammedPort]:
    """One RuleSet (one IP family) -> its programmed Service ports."""
    names = learn_names(rs)
    nat, filt = rs.table("nat"), rs.table("filter")
    ports: dict[ServicePortKey, _Port] = {}

    def port(key: ServicePortKey) -> _Port:
        p = ports.get(key)
        if p is None:
            p = ports[key] = _Port(key, ProgrammedPort(service=key.service, protocol=key.protocol, family=rs.family))
        return p

    kinds: dict[tuple[ServicePortKey, str], str] = {}  # (port, address) -> kind, from nat rules with comments
    for chain in ("KUBE-SERVICES", "KUBE-NODEPORTS"):
        for rule in nat.dispatch.get(chain, []):
            key = names.of_chain(rule.target)
            kind = _kind_of_nat(rule)
            if key is None or kind is None or rule.dport is None:
                continue
            if kind == NODE_PORT and rule.destination is not None:
                continue  # the localhost twin of a node port (-d 127.0.0.0/8), same port
            ip = None if kind == NODE_PORT else rule.destination
            address = _address(ip, rule.dport, rs.family)
            kinds[key, address] = kind
            port(key).add(kind, address, TO_SERVICE, rule.text)
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"):
        for rule in filt.dispatch.get(chain, []):
            _filter_dispatch(rs, rule, names, kinds, port)
    for chain in nat.ladders:
        key = names.of_chain(chain)
        if key is None:
            continue
        p = port(key)
        ladder = nat.ladders[chain]
        if chain.startswith(SVC):
            p.out.endpoints = endpoints_of(nat, chain)
        else:
            p.out.local_endpoints = endpoints_of(nat, chain)
        if ladder.affinity_seconds is not None:
            p.out.affinity_seconds = ladder.affinity_seconds
        p.out.evidence["svc_chain" if chain.startswith(SVC) else "svl_chain"] = chain
    for chain in nat.dispatch:
        key = names.of_chain(chain)
        if key is not None:
            port(key).out.evidence["ext_chain" if chain.startswith(EXT) else "fw_chain"] = chain
    return [p.out for _, p in sorted(ports.items(), key=lambda kv: (kv[0].service, kv[0].protocol))]


def _filter_dispatch(rs: RuleSet, rule: Rule, names: Names, kinds: dict[tuple[ServicePortKey, str], str],
                     port: Callable[[ServicePortKey], _Port]) -> None:
    """filter-table rules: "has no endpoints" REJECT, "has no local endpoints" DROP, health check ACCEPT.
    No chain to hash here, so the comment names the Service port (these comments are never dropped)."""
    comment = rule.comment or ""
    words = service_names(comment)
    if not words or rule.dport is None:
        return
    name, proto = words[0], _proto(rule.protocol) or "tcp"
    key = ServicePortKey(name, proto)
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
                kind = kinds.get((key, _address(ip, rule.dport, rs.family)), EXTERNAL_IP)
    else:
        return
    port(key).add(kind, _address(ip, rule.dport, rs.family), action, rule.text)


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

