"""What the agent's probes saw: the guide's `nslookup` and `wget`/`curl` steps, run from the node.

Targets are only addresses the API server names (ClusterIPs, endpoint IPs) and the cluster DNS Service
IP from kubelet's clusterDNS; agent/explain/plan.py chooses them, agent/collect/probes.py sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What a probe is for (also the `kind` label of the probe metrics: a handful of values, never an address).
CLUSTER_IP = "cluster_ip"  # a Service by ClusterIP:port (TCP connect)
ENDPOINT = "endpoint"  # a pod directly by IP:targetPort (TCP connect)
DNS = "dns"  # a name resolved by the cluster DNS Service (UDP query)
KUBERNETES = "kubernetes"  # kubernetes.default by ClusterIP:443 (TCP connect)
KINDS = (CLUSTER_IP, ENDPOINT, DNS, KUBERNETES)

# Outcomes. Only OK outcomes count as success.
CONNECTED = "connected"  # TCP handshake completed
ANSWERED = "answered"  # DNS answer with at least one address
REFUSED = "refused"  # TCP RST / ICMP port unreachable: nothing listens there
TIMEOUT = "timeout"  # no answer within the probe's timeout
UNREACHABLE = "unreachable"  # no route / host unreachable
NXDOMAIN = "nxdomain"  # the DNS server says the name does not exist
NO_ADDRESS = "no_address"  # the DNS server answered, with no address for the name
DNS_ERROR = "dns_error"  # SERVFAIL, REFUSED, or an answer that does not parse
NOT_ALLOWED = "not_allowed"  # the address is not one the API names: never sent
OVER_LIMIT = "over_limit"  # past the per-run target cap: never sent
OK_OUTCOMES = frozenset({CONNECTED, ANSWERED})


@dataclass(frozen=True)
class Target:
    kind: str  # one of KINDS
    address: str  # the IP sent to
    port: int
    subject: str = ""  # "ns/svc:port" the probe is about, or "ns/pod" for an endpoint
    name: str = ""  # for DNS: the name asked for
    qtype: str = "A"  # for DNS: "A" or "AAAA"


@dataclass
class ProbeResult:
    target: Target
    outcome: str
    latency_s: float = 0.0
    answers: list[str] = field(default_factory=list)  # DNS: the addresses in the answer
    error: str | None = None  # the OS error or DNS rcode, in a few words

    @property
    def ok(self) -> bool:
        return self.outcome in OK_OUTCOMES


@dataclass
class LatencyHistogram:
    """Cumulative since the agent started (a Prometheus histogram): counts per upper bound."""

    buckets: list[float]
    counts: list[int]  # cumulative count per bucket, same length as buckets
    count: int = 0
    sum_s: float = 0.0


@dataclass
class ProbeSet:
    """One run's probes (the continuous set in `serve`, or one Service's in `explain`)."""

    results: list[ProbeResult] = field(default_factory=list)
    planned: int = 0  # targets asked for, before the cap
    resolv_conf: str | None = None  # the file kubelet hands to pods with dnsPolicy Default (host path)
    nameservers: list[str] = field(default_factory=list)  # its nameserver lines (addresses only)
    resolv_conf_error: str | None = None
    latency: dict[str, LatencyHistogram] = field(default_factory=dict)  # kind -> histogram, since start
    totals: dict[str, list[int]] = field(default_factory=dict)  # kind -> [successes, failures] since start
