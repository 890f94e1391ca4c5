"""The API server's view, kept compact: only the fields the checks use.

Filled by agent/collect/cluster.py from a live list/watch or from `kubectl get ... -o json` output.
At 10k Services the whole API objects cost hundreds of MB; this keeps a few strings per object.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServicePortSpec:
    name: str
    protocol: str  # "TCP" | "UDP" | "SCTP"
    port: int
    node_port: int | None = None
    target_port: str = ""  # "8080" or a containerPort name ("http"); "" when unset (= port)


@dataclass
class ServiceSpec:
    namespace: str
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: list[str] = field(default_factory=list)  # "None" for headless
    ports: list[ServicePortSpec] = field(default_factory=list)
    external_ips: list[str] = field(default_factory=list)
    load_balancer_ips: list[str] = field(default_factory=list)  # status.loadBalancer.ingress[].ip (ipMode VIP)
    load_balancer_source_ranges: list[str] = field(default_factory=list)
    session_affinity_seconds: int | None = None  # set when sessionAffinity is ClientIP
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    topology_aware: bool = False  # topology-mode annotation or trafficDistribution: kube-proxy may filter by zone
    last_change: float | None = None  # unix seconds: newest of creation and managedFields times
    # spec.selector as one label-selector string ("app=web,tier=fe", keys sorted): one str per Service
    # instead of a dict at 10k Services. "" is selectorless (endpoints managed by hand or another controller).
    selector: str = ""


@dataclass
class EndpointSpec:
    address: str
    ready: bool = True  # nil Ready means ready (EndpointConditions docs)
    serving: bool = True  # nil Serving means the value of Ready
    terminating: bool = False
    node_name: str | None = None
    zone: str | None = None
    hint_zones: list[str] = field(default_factory=list)


@dataclass
class SlicePort:
    name: str
    port: int
    protocol: str


@dataclass
class SliceSpec:
    namespace: str
    name: str
    service: str  # label kubernetes.io/service-name
    address_type: str  # IPv4 | IPv6 | FQDN
    ports: list[SlicePort] = field(default_factory=list)
    endpoints: list[EndpointSpec] = field(default_factory=list)
    last_change: float | None = None  # endpoints.kubernetes.io/last-change-trigger-time, else managedFields


@dataclass
class NodeSpec:
    name: str
    zone: str | None = None
    addresses: list[str] = field(default_factory=list)


@dataclass
class ContainerPort:
    name: str
    port: int
    protocol: str


@dataclass
class PodSpec:
    namespace: str
    name: str
    ips: list[str] = field(default_factory=list)
    host_network: bool = False
    # For `svcdoctor explain` (the guide's "Are the Pods working?"): a handful of values per pod.
    labels: dict[str, str] = field(default_factory=dict)
    container_ports: list[ContainerPort] = field(default_factory=list)
    node_name: str | None = None
    phase: str = ""  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool = False  # the Ready condition
    restarts: int = 0  # summed over the containers
    last_restart: float | None = None  # unix seconds: newest lastState.terminated.finishedAt
    waiting_reason: str | None = None  # e.g. CrashLoopBackOff, ImagePullBackOff (first waiting container)


@dataclass
class ClusterState:
    origin: str  # "api https://10.96.0.1:443" or "file /path/cluster.json"
    fetched_at: float  # unix seconds of the newest data in this state
    services: list[ServiceSpec] = field(default_factory=list)
    slices: list[SliceSpec] = field(default_factory=list)
    node: NodeSpec | None = None
    pods: list[PodSpec] = field(default_factory=list)  # pods on this node only
    stale_seconds: float = 0.0  # >0 when the API is unreachable and this is the last good state
    api_error: str | None = None  # why the API could not be reached (then stale_seconds says how old this is)
    usable: bool = True  # False when there is no state, or the last good one is older than the allowed age
    node_names: list[str] = field(default_factory=list)  # Nodes the source named (a file: all; at most 50 kept)

    @property
    def comparable(self) -> bool:
        """Rules may be compared with this state: it is fresh enough and has this node's Node object. Without
        it nothing says which endpoints are local (traffic policy Local), so a comparison would invent faults."""
        return self.usable and self.node is not None
