"""iptables mode -> the mode-independent view (agent/model/programmed.py): per Service port, where its
traffic enters (dispatch), which endpoints it goes to, and its session affinity. Pure.

Chains are tied to Service ports by kube-proxy's own hashing (agent/checks/iptables_names.py);
endpoints are read from the KUBE-SEP chains' DNAT targets.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.checks.iptables_names import learn_names, proto, service_names
from agent.kube_hash import EXT, FW, SVC
from agent.model.iptables import IptablesState, LadderChain, Rule, RuleSet, Table
from agent.model.programmed import (
    ACCEPT,
    CLUSTER_IP,
    DROP,
    EXTERNAL_IP,
    FIREWALL,
    HEALTH_CHECK_NODE_PORT,
    LOAD_BALANCER_IP,
    NODE_PORT,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ProgrammedPort,
)
from agent.model.views import Names, ServicePortKey

_TARGET = operator.attrgetter("target")


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
# each endpoint chain) per KUBE-SVC/SVL chain, and the names of its KUBE-EXT/FW chains; rules in rule
# order (the nat rules first: the filter rules' kind depends on them).
class _Filtered(NamedTuple):
    """A filter-table rule among a port's inputs (nat rules go bare)."""

    rule: Rule


class _Ladder(NamedTuple):
    chain: str  # KUBE-SVC-... or KUBE-SVL-...
    ladder: LadderChain
    # the DNAT of each endpoint chain its probability ladder jumps to. Only the ladder chooses for a new client:
    # an endpoint left only behind an affinity `--rcheck` rule serves the clients it already had, no new one.
    dnats: tuple[str | None, ...]


class _Firewall(NamedTuple):
    chain: str  # KUBE-FW-...
    sources: tuple[str, ...]  # the `-s range` of the rules that let traffic on to the Service


_Inputs = list[Rule | _Filtered | _Ladder | _Firewall | str]  # str: a KUBE-EXT chain's name

FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")
NAT_CHAINS = ("KUBE-SERVICES", "KUBE-NODEPORTS")
ONWARD = ("KUBE-EXT-", "KUBE-SVC-", "KUBE-SVL-")  # where a KUBE-FW allow rule sends traffic
LOCALHOST = "127.0.0.0/8"


def reaches_node_ports(nat: Table) -> bool:
    """kube-proxy's last KUBE-SERVICES rule jumps to KUBE-NODEPORTS: without it no NodePort rule is ever reached."""
    return any(r.target == "KUBE-NODEPORTS" for r in nat.dispatch.get("KUBE-SERVICES", ()))


def programmed_ports_of(rs: RuleSet, names: Names) -> tuple[ProgrammedPort, ...]:
    """One RuleSet (one IP family) -> its programmed Service ports, sorted by (service, protocol)."""
    inputs = _all_inputs(rs, names)
    built = (_port(key, inputs[key], rs.family) for key in sorted(inputs))
    return tuple(p for p in built if p is not None)  # (None: a port whose inputs program nothing)


def programmed_ports(state: IptablesState) -> list[ProgrammedPort]:
    """Every IP family's programmed Service ports (IPv4 first), both backends' where kube-proxy's rules are in both."""
    out: list[ProgrammedPort] = []
    for rs in state.rulesets:
        ports = programmed_ports_of(rs, learn_names(rs))
        for other in (o for o in state.other_rulesets if o.family == rs.family):
            ports = union_ports(ports, programmed_ports_of(other, learn_names(other)))
        out.extend(ports)
    return out


def union_ports(judged: tuple[ProgrammedPort, ...], other: tuple[ProgrammedPort, ...]) -> tuple[ProgrammedPort, ...]:
    """The Service ports either backend programs: the kernel runs the hooks of both (legacy x_tables and
    nf_tables), so a packet is sent on by whichever has its rule. Where both program a port the judged
    backend's port stands, with the ways in only the other backend has added (new objects: none is changed)."""
    if not other:
        return judged
    mine = {(p.service, p.protocol): p for p in judged}
    out = dict(mine)
    for port in other:
        key = (port.service, port.protocol)
        have = mine.get(key)
        if have is None:
            out[key] = port
            continue
        seen = {(d.kind, d.address, d.action) for d in have.dispatch}
        extra = [d for d in port.dispatch if (d.kind, d.address, d.action) not in seen]
        if extra:
            out[key] = dataclasses.replace(have, dispatch=[*have.dispatch, *extra])
    return tuple(out[k] for k in sorted(out))


def _all_inputs(rs: RuleSet, names: Names) -> dict[ServicePortKey, _Inputs]:
    """Every Service port's inputs, in rule order."""
    nat, filt = rs.table("nat"), rs.table("filter")
    inputs = _dispatch_inputs(nat, filt, names.of_chain)
    for chain, ladder in nat.ladders.items():
        key = names.of_chain(chain)
        if key is not None:
            inputs.setdefault(key, []).append(_ladder(nat, chain, ladder))
    for chain, rules in nat.dispatch.items():
        key = names.of_chain(chain)
        if key is None:
            continue
        if chain.startswith(FW):
            sources = tuple(r.source for r in rules if r.source and not r.source.startswith("!")
                            and r.target.startswith(ONWARD))
            inputs.setdefault(key, []).append(_Firewall(chain, sources))
        else:
            inputs.setdefault(key, []).append(chain)
    return inputs


def _ladder(nat: Table, chain: str, ladder: LadderChain) -> _Ladder:
    return _Ladder(chain, ladder, tuple(map(nat.endpoint_dnat.get, ladder.endpoints)))


def _dispatch_inputs(nat: Table, filt: Table, key_of_target: Callable[[str], ServicePortKey | None]
                     ) -> dict[ServicePortKey, _Inputs]:
    """The dispatch rules of the Service ports, in rule order, nat before filter."""
    inputs: dict[ServicePortKey, _Inputs] = {}
    for chain in NAT_CHAINS if reaches_node_ports(nat) else NAT_CHAINS[:1]:
        rules = nat.dispatch.get(chain, ())
        keys = list(map(key_of_target, map(_TARGET, rules)))  # (in C: KUBE-SERVICES has a rule per Service port)
        for key, rule in zip(filter(None, keys), itertools.compress(rules, keys), strict=True):
            inputs.setdefault(key, []).append(rule)
    for chain in FILTER_CHAINS:
        for rule in filt.dispatch.get(chain, []):
            filter_key = _filter_key(rule)
            if filter_key is not None:
                inputs.setdefault(filter_key, []).append(_Filtered(rule))
    return inputs


def _filter_key(rule: Rule) -> ServicePortKey | None:
    """A filter rule names its Service port in its comment (no chain to hash there; never dropped)."""
    words = service_names(rule.comment)
    return ServicePortKey(words[0], proto(rule.protocol) or "tcp") if words else None


def _port(key: ServicePortKey, items: _Inputs, family: int) -> ProgrammedPort | None:
    """One Service port from its inputs, in order (None when none of them programs anything)."""
    p = _Port(key, ProgrammedPort(service=key.service, protocol=key.protocol, family=family))
    used = False
    kinds: dict[str, str] = {}  # address -> kind, from the nat rules (they come first)
    affinity: dict[bool, int | None] = {}  # is the KUBE-SVC chain -> its affinity
    for item in items:
        if isinstance(item, Rule):
            used = _nat_dispatch(p, item, kinds, family) or used
        elif isinstance(item, str):
            p.out.evidence["ext_chain" if item.startswith(EXT) else "fw_chain"] = item
            used = True
        elif isinstance(item, _Firewall):
            p.out.evidence["fw_chain"] = item.chain
            p.out.allowed_sources = sorted(set(item.sources))
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
            affinity[chain.startswith(SVC)] = ladder.affinity_seconds
            p.out.evidence["svc_chain" if chain.startswith(SVC) else "svl_chain"] = chain
            used = True
    # the cluster-wide chain's affinity, else the local one's: whichever order the chains came in
    p.out.affinity_seconds = next((a for a in (affinity.get(True), affinity.get(False)) if a is not None), None)
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
        # the localhost twin of a node port (-d 127.0.0.0/8, same port): only 127.0.0.1's counter, not a way in
        if rule.destination == LOCALHOST:
            twins = p.out.localhost_node_ports = p.out.localhost_node_ports or []
            twins.append(f":{rule.dport}")
        return False
    address = _address(None if kind == NODE_PORT else rule.destination, rule.dport, family)
    kinds[address] = kind
    p.add(kind, address, TO_SERVICE, rule.text)
    return True


def _filter_dispatch(p: _Port, rule: Rule, kinds: dict[str, str], family: int) -> bool:
    """filter-table rules: "has no endpoints" REJECT, "has no local endpoints" DROP, health check ACCEPT."""
    comment = rule.comment or ""
    if rule.dport is None:
        return False
    if rule.chain == "KUBE-PROXY-FIREWALL" and " traffic not accepted by " in comment and rule.target == "DROP":
        p.add(LOAD_BALANCER_IP, _address(rule.destination, rule.dport, family), FIREWALL, rule.text)
        return True
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


def endpoint_users(table: Table) -> dict[str, list[str]]:
    """KUBE-SEP chain -> the KUBE-SVC/SVL chains that jump to it."""
    users: dict[str, list[str]] = {}
    for chain, ladder in table.ladders.items():
        for sep in {*ladder.endpoints, *ladder.affinity_endpoints}:
            users.setdefault(sep, []).append(chain)
    return users

