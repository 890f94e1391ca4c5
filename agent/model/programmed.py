"""What the node's proxy rules do, per Service port, whatever the proxy mode.

This is the contract between the mode readers (iptables, nftables, IPVS: each turns its own snapshot
data into a list of ProgrammedPort in agent/checks/programmed_<mode>.py) and the expected-vs-actual
comparison (agent/checks/rules_*.py), which only ever sees this view. Keep it mode-independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Dispatch kinds: how traffic enters a Service port on this node.
CLUSTER_IP = "cluster_ip"
EXTERNAL_IP = "external_ip"
LOAD_BALANCER_IP = "load_balancer_ip"
NODE_PORT = "node_port"
HEALTH_CHECK_NODE_PORT = "health_check_node_port"

# What the dispatch does with the traffic.
TO_SERVICE = "service"  # on to the endpoint choice (KUBE-SVC/KUBE-EXT/KUBE-FW chain, vmap, virtual server)
REJECT = "reject"  # "has no endpoints"
DROP = "drop"  # "has no local endpoints" (traffic policy Local) or firewall
ACCEPT = "accept"  # health check node port opened in the filter table
# loadBalancerSourceRanges: traffic to this LB address from outside the ranges is dropped (KUBE-PROXY-FIREWALL's
# DROP, nftables mode's `firewall-ips` element). Not a way in: it stands beside the address's TO_SERVICE.
FIREWALL = "firewall"


@dataclass(slots=True)  # one per dispatch rule: many at 10k Services
class Dispatch:
    kind: str  # one of the dispatch kinds above
    address: str  # "172.30.0.41:80", "[fd00::1]:80"; node ports as ":3001"
    action: str  # TO_SERVICE | REJECT | DROP | ACCEPT
    evidence: str  # the rule or map element that showed it, verbatim


@dataclass(slots=True)  # one per Service port: many at 10k Services
class ProgrammedPort:
    service: str  # kube-proxy's ServicePortName: "ns/name:portname", or "ns/name" for an unnamed port
    protocol: str  # "tcp" | "udp" | "sctp"
    family: int  # 4 | 6
    dispatch: list[Dispatch] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)  # "ip:port" DNAT targets for cluster-wide traffic
    local_endpoints: list[str] | None = None  # DNAT targets of the traffic-policy-Local chain, if one exists
    affinity_seconds: int | None = None  # ClientIP session affinity timeout, when programmed
    evidence: dict[str, str] = field(default_factory=dict)  # chain / map names that hold the above
    # loadBalancerSourceRanges the firewall chain lets on to the Service (iptables KUBE-FW `-s range`); None: the
    # port has no such chain, or the mode's reader does not show its ranges (nftables: a drop of the others)
    allowed_sources: list[str] | None = None
    localhost_node_ports: list[str] | None = None  # ":3001" per node port with its `-d 127.0.0.0/8` twin (iptables)


@dataclass
class ProgrammedServices:
    mode: str  # "iptables" | "nftables" | "ipvs"
    ports: list[ProgrammedPort] = field(default_factory=list)
    families: list[int] = field(default_factory=lambda: [4])  # the IP families the reader looked at
    read_at: float | None = None  # when the rules were read, if earlier than the snapshot (a paced read)


@dataclass
class ExpectedPort:
    """What kube-proxy on this node should have programmed for one Service port and IP family
    (agent/checks/expected.py)."""

    service: str  # kube-proxy's ServicePortName: "ns/name:port" ("ns/name" for an unnamed port)
    namespace: str
    name: str
    port_name: str
    protocol: str  # lower case, as the rule readers give it
    family: int
    dispatch: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, address) -> action
    cluster_endpoints: set[str] | None = None  # None: the Service uses no cluster-wide endpoint chain
    local_endpoints: set[str] | None = None  # None: no traffic-policy-Local chain
    usable_endpoints: set[str] = field(default_factory=set)  # every endpoint kube-proxy could pick
    topology_filtered: bool = False  # zone hints may make kube-proxy program a subset of usable endpoints
    affinity_seconds: int | None = None
    last_change: float | None = None
    # traffic policy Local without a local endpoint: the DROP for outside clients stands beside a dispatch to the
    # Service, which node-local clients and pods take (kube-proxy's KUBE-EXT short-circuits): (kind, address)
    short_circuit: set[tuple[str, str]] = field(default_factory=set)
    # loadBalancerSourceRanges of this family (normalised networks), when kube-proxy firewalls the LB addresses
    source_ranges: list[str] = field(default_factory=list)
    localhost_node_port: bool = False  # kube-proxy writes the `-d 127.0.0.0/8` twin of the NodePort rule
