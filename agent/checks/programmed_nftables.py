"""What kube-proxy's nftables mode programmed, per Service port, in the mode-independent form of
agent/model/programmed.py.

Dispatch comes from the verdict maps: `service-ips` (ClusterIP, externalIP, LoadBalancer IP ->
service-/local-/external- chain), `service-nodeports` (NodePort -> external- chain), and the
"no endpoints" handling in `no-endpoint-services` / `no-endpoint-nodeports` (goto reject-chain =
REJECT, drop = DROP "no local endpoints"). Endpoints come from the service chain's
`numgen random mod N vmap { i : goto endpoint-... }` and each endpoint chain's `dnat to`.

A Service port appears only if a map dispatches to it: chains nothing dispatches to are flushed
leftovers that kube-proxy deletes a second later, not programmed Services.
"""

from __future__ import annotations

from agent.model.cluster import ClusterState
from agent.model.nftables import (
    CLUSTER_IPS,
    FIREWALL_IPS,
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Chain,
    KubeProxyTable,
    NftablesState,
    VerdictElement,
    name_hash,
    parse_chain_name,
)
from agent.model.programmed import (
    CLUSTER_IP,
    DROP,
    EXTERNAL_IP,
    FIREWALL,
    LOAD_BALANCER_IP,
    NODE_PORT,
    REJECT,
    TO_SERVICE,
    Dispatch,
    ProgrammedPort,
    ProgrammedServices,
)

REJECT_CHAIN = "reject-chain"


def programmed_ports(state: NftablesState, cluster: ClusterState | None = None) -> list[ProgrammedPort]:
    """Every dispatched Service port of every kube-proxy table. `cluster`, when given, only names the
    kind of an external address (externalIP or LoadBalancer IP): the node cannot tell them apart
    unless the address has a loadBalancerSourceRanges firewall entry."""
    lb_ips = lb_ips_of(cluster)
    ports: list[ProgrammedPort] = []
    for table in state.tables:
        ports.extend(_TableReader(table, lb_ips).read())
    return ports


def programmed_services(state: NftablesState, cluster: ClusterState | None = None) -> ProgrammedServices:
    """programmed_ports with the families this reader looked at (a table per family)."""
    return ProgrammedServices("nftables", programmed_ports(state, cluster),
                              families=sorted({t.ip_family for t in state.tables}) or [4],
                              read_at=state.read_at or None)


def lb_ips_of(cluster: ClusterState | None) -> dict[str, set[str]]:
    """Service -> its LoadBalancer IPs: all programmed_ports takes of the cluster state."""
    out: dict[str, set[str]] = {}
    for svc in cluster.services if cluster else []:
        out.setdefault(f"{svc.namespace}/{svc.name}", set()).update(svc.load_balancer_ips)
    return out


def _address(ip: str, port: str, family: int) -> str:
    return f"[{ip}]:{port}" if family == 6 else f"{ip}:{port}"


class _TableReader:
    def __init__(self, table: KubeProxyTable, lb_ips: dict[str, set[str]]) -> None:
        self.table = table
        self.family = table.ip_family
        self.lb_ips = lb_ips
        self.cluster_ips = set(table.sets.get(CLUSTER_IPS, []))
        self.firewalled = {tuple(e.key) for e in table.maps.get(FIREWALL_IPS, [])}
        self.ports: dict[tuple[str, str], ProgrammedPort] = {}

    def read(self) -> list[ProgrammedPort]:
        for e in self.table.maps.get(SERVICE_IPS, []):
            self._service_ip(e)
        for e in self.table.maps.get(SERVICE_NODEPORTS, []):
            self._node_port(e)
        for e in self.table.maps.get(NO_ENDPOINT_SERVICES, []):
            self._no_endpoint(e, nodeport=False)
        for e in self.table.maps.get(NO_ENDPOINT_NODEPORTS, []):
            self._no_endpoint(e, nodeport=True)
        for e in self.table.maps.get(FIREWALL_IPS, []):
            self._firewall(e)
        for port in self.ports.values():
            self._endpoints(port)
        return list(self.ports.values())

    # dispatch -------------------------------------------------------------------------------------
    def _port(self, service: str, protocol: str) -> ProgrammedPort:
        key = (service, protocol)
        if key not in self.ports:
            self.ports[key] = ProgrammedPort(service=service, protocol=protocol, family=self.family)
        return self.ports[key]

    def _external_kind(self, service: str, key: list[str]) -> str:
        ns_name = service.split(":", 1)[0]
        if key[0] in self.lb_ips.get(ns_name, set()) or tuple(key) in self.firewalled:
            return LOAD_BALANCER_IP
        return EXTERNAL_IP

    def _service_ip(self, e: VerdictElement) -> None:
        name = parse_chain_name(e.target or "")
        if name is None or len(e.key) != 3:
            return  # a goto to a chain that is not a Service's: the structure check reports it
        port = self._port(name.service_port, e.key[1])
        if name.prefix == "external":
            kind = self._external_kind(name.service_port, e.key)
            port.evidence.setdefault("external_chain", e.target or "")
        else:
            kind = CLUSTER_IP
            port.evidence.setdefault("internal_chain", e.target or "")
        port.dispatch.append(Dispatch(kind, _address(e.key[0], e.key[2], self.family), TO_SERVICE,
                                      f"{SERVICE_IPS}: {e.text()}"))

    def _node_port(self, e: VerdictElement) -> None:
        name = parse_chain_name(e.target or "")
        if name is None or len(e.key) != 2:
            return
        port = self._port(name.service_port, e.key[0])
        port.evidence.setdefault("external_chain", e.target or "")
        port.dispatch.append(Dispatch(NODE_PORT, f":{e.key[1]}", TO_SERVICE, f"{SERVICE_NODEPORTS}: {e.text()}"))

    def _no_endpoint(self, e: VerdictElement, *, nodeport: bool) -> None:
        if not e.comment:
            return  # kube-proxy always names the Service port; without it there is nothing to tie to
        if e.verdict == "drop":
            action = DROP
        elif e.target == REJECT_CHAIN or e.verdict == "reject":
            action = REJECT
        else:
            return
        source = NO_ENDPOINT_NODEPORTS if nodeport else NO_ENDPOINT_SERVICES
        if nodeport and len(e.key) == 2:
            port = self._port(e.comment, e.key[0])
            port.dispatch.append(Dispatch(NODE_PORT, f":{e.key[1]}", action, f"{source}: {e.text()}"))
        elif not nodeport and len(e.key) == 3:
            port = self._port(e.comment, e.key[1])
            kind = CLUSTER_IP if e.key[0] in self.cluster_ips else self._external_kind(e.comment, e.key)
            port.dispatch.append(Dispatch(kind, _address(e.key[0], e.key[2], self.family), action,
                                          f"{source}: {e.text()}"))

    def _firewall(self, e: VerdictElement) -> None:
        """`firewall-ips` element -> the Service's firewall-<hash> chain, whose rule drops sources outside the
        loadBalancerSourceRanges. An emptied chain drops nothing."""
        name = parse_chain_name(e.target or "")
        chain = self.table.chains.get(e.target or "")
        if name is None or len(e.key) != 3 or chain is None or (chain.rules_read and chain.rule_count == 0):
            return
        port = self._port(name.service_port, e.key[1])
        port.dispatch.append(Dispatch(LOAD_BALANCER_IP, _address(e.key[0], e.key[2], self.family), FIREWALL,
                                      f"{FIREWALL_IPS}: {e.text()}"))

    # endpoints ------------------------------------------------------------------------------------
    def _policy_chain(self, port: ProgrammedPort, prefix: str) -> Chain | None:
        """service-<hash>-ns/svc/proto/port (or local-...): found by name, as kube-proxy derives it."""
        if not any(d.action == TO_SERVICE for d in port.dispatch):
            return None
        return self.table.chains.get(prefix + _chain_base(port))

    def _endpoints(self, port: ProgrammedPort) -> None:
        cluster = self._policy_chain(port, "service-")
        local = self._policy_chain(port, "local-")
        if cluster is not None:
            port.evidence["service_chain"] = cluster.name
            port.endpoints = self._dnat_targets(cluster)
            port.affinity_seconds = self._affinity(cluster)
        if local is not None:
            port.evidence["local_chain"] = local.name
            port.local_endpoints = self._dnat_targets(local)
            if port.affinity_seconds is None:
                port.affinity_seconds = self._affinity(local)

    def _dnat_targets(self, chain: Chain) -> list[str]:
        out: list[str] = []
        for target in (chain.vmap or {}).values():
            ep = self.table.chains.get(target)
            if ep is not None:
                out.extend(t for t in ep.dnat if t not in out)
        return sorted(out)

    def _affinity(self, chain: Chain) -> int | None:
        known = self.table.affinity_timeouts
        timeouts = [known[s] for s in chain.affinity_sets or [] if s in known]
        return max(timeouts) if timeouts else None


def _chain_base(port: ProgrammedPort) -> str:
    """The `<hash>-ns/svc/proto/port` part shared by a Service port's chains: from a chain a map
    dispatches to, else rebuilt from the Service port name as kube-proxy derives it."""
    for chain in port.evidence.values():
        if parse_chain_name(chain) is not None:
            return chain.split("-", 1)[1]
    ns_svc, _, port_name = port.service.partition(":")
    body = f"{ns_svc}/{port.protocol}/{port_name}"
    return f"{name_hash(body)}-{body}"
