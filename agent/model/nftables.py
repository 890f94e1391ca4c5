"""Snapshot data for the nftables source (filled by agent/collect/nftables.py).

What kube-proxy's nftables mode programmed in `table ip kube-proxy` / `table ip6 kube-proxy`, kept to
what the checks use: the dispatch maps and sets element by element, every chain's name and hook, and
for the chains whose rules were read, the few facts a rule carries for Services (jumps, the numgen
vmap to endpoint chains, DNAT targets, affinity). Plain dataclasses: the snapshot round-trips as JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar, overload

from agent.kube_hash import nft_hash

TABLE = "kube-proxy"

# Maps and sets kube-proxy keeps in its table (v1.29+); read element by element.
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
FIREWALL_IPS = "firewall-ips"
MAPS = (SERVICE_IPS, SERVICE_NODEPORTS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, FIREWALL_IPS)
CLUSTER_IPS = "cluster-ips"
NODEPORT_IPS = "nodeport-ips"
SETS = (CLUSTER_IPS, NODEPORT_IPS)

# Per-Service chain prefixes (kube-proxy pkg/proxy/nftables: servicePort*ChainNamePrefix).
SERVICE_PREFIXES = ("service-", "local-", "external-", "firewall-", "endpoint-")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
T = TypeVar("T")


@dataclass(slots=True)  # slots: ~60k chains at 10k Services
class VerdictElement:
    """One element of a verdict map: `172.30.0.41 . tcp . 80 : goto service-...`."""

    key: list[str]  # the concatenated key, each part as text: ["172.30.0.41", "tcp", "80"]
    verdict: str  # "goto" | "jump" | "drop" | "accept" | "return" | "continue"
    target: str | None = None  # the chain for goto/jump
    comment: str | None = None  # kube-proxy puts the ServicePortName on no-endpoint-* elements

    def text(self) -> str:
        value = f"{self.verdict} {self.target}" if self.target else self.verdict
        comment = f' comment "{self.comment}"' if self.comment else ""
        return f"{' . '.join(self.key)}{comment} : {value}"


@dataclass(slots=True)
class ChainDetails:
    """What few chains have: a hook (the base chains), a numgen vmap (the Service chains), the odd rule.
    Kept apart, so each of the ~60k chains at 10k Services has one slot for it rather than nine (152 -> 88
    bytes a chain; less the ~10k Service chains' own 104-byte records, ~2.7 MiB of a read); read and set
    through Chain's attributes of the same names."""

    type: str | None = None  # base chains only: "filter" | "nat"
    hook: str | None = None
    priority: int | None = None
    numgen_mod: int | None = None
    # True: the vmap's endpoint chains were inferred from the kernel's reference counts, not read, so
    # its keys are 0..n-1 in name order rather than the real numgen indexes (see nftables_netlink.py).
    vmap_by_reference: bool = False
    affinity_sets: list[str] | None = None  # @affinity-* sets the chain reads (ip saddr @set)
    vmap_maps: list[str] | None = None  # named verdict maps its rules dispatch through (@service-ips)
    rejects: bool = False  # a rule ends in reject
    unparsed: list[str] | None = None  # statements this reader does not model, for evidence


_NO_DETAILS = ChainDetails()


class _Detail(Generic[T]):
    """Chain.<name>: its ChainDetails' <name>, the default while the chain has none."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, chain: None, owner: type) -> _Detail[T]: ...
    @overload
    def __get__(self, chain: Chain, owner: type) -> T: ...
    def __get__(self, chain: Chain | None, owner: type) -> T | _Detail[T]:
        if chain is None:
            return self
        value: T = getattr(chain.details or _NO_DETAILS, self.name)
        return value

    def __set__(self, chain: Chain, value: T) -> None:
        if chain.details is None:
            if value == getattr(_NO_DETAILS, self.name):
                return  # a chain without details has the defaults already
            chain.details = ChainDetails()
        setattr(chain.details, self.name, value)


@dataclass(slots=True)
class Chain:
    name: str
    rules_read: bool = False  # False: only the name was listed, so the fields below say nothing
    rule_count: int = 0
    # Tuples, not lists: most chains have one target and one DNAT or none, and ~60k chains at 10k Services
    # held two lists each (an empty list is 56 bytes, the empty tuple is shared): about 8 MiB of a read.
    targets: tuple[str, ...] = ()  # jump/goto targets outside a vmap, in rule order
    vmap: dict[str, str] | None = None  # numgen index -> endpoint chain ("0" -> "endpoint-..."); None: no vmap
    dnat: tuple[str, ...] = ()  # "10.180.0.1:80", "[fd00::1]:80"
    details: ChainDetails | None = None  # None: all of ChainDetails' defaults

    # ChainDetails' fields, as attributes of the chain (not dataclass fields: no annotation)
    type = _Detail[str | None]()
    hook = _Detail[str | None]()
    priority = _Detail[int | None]()
    numgen_mod = _Detail[int | None]()
    vmap_by_reference = _Detail[bool]()
    affinity_sets = _Detail[list[str] | None]()
    vmap_maps = _Detail[list[str] | None]()
    rejects = _Detail[bool]()
    unparsed = _Detail[list[str] | None]()


@dataclass
class KubeProxyTable:
    family: str  # "ip" | "ip6"
    chains: dict[str, Chain] = field(default_factory=dict)
    maps: dict[str, list[VerdictElement]] = field(default_factory=dict)  # absent map: no key
    sets: dict[str, list[str]] = field(default_factory=dict)  # cluster-ips, nodeport-ips; absent set: no key
    affinity_timeouts: dict[str, int] = field(default_factory=dict)  # affinity-* set -> timeout seconds
    # set only in a served report (agent/model/report.py): how many chains the table had, its contents dropped
    served_chain_count: int | None = None

    def chain_count(self) -> int:
        return len(self.chains) if self.served_chain_count is None else self.served_chain_count

    def counts_only(self) -> KubeProxyTable:
        """The table without its chains, maps and sets: its family and chain count (what reporters show)."""
        return KubeProxyTable(self.family, served_chain_count=self.chain_count())

    @property
    def ip_family(self) -> int:
        return 6 if self.family == "ip6" else 4


@dataclass
class NftablesState:
    nft_version: str = ""
    tables: list[KubeProxyTable] = field(default_factory=list)  # only the kube-proxy tables that exist
    other_tables: list[str] = field(default_factory=list)  # "inet filter" ...: context for evidence
    read_mode: str = ""  # how the chains' rules were read ("full table" | "per chain"), for the benchmark
    read_at: float = 0.0  # unix time of the read (older than the snapshot when reads are paced)

    def counts_only(self) -> NftablesState:
        return replace(self, tables=[t.counts_only() for t in self.tables])

    def table(self, family: str) -> KubeProxyTable | None:
        return next((t for t in self.tables if t.family == family), None)


# Chain names -----------------------------------------------------------------------------------------

def name_hash(name: str) -> str:
    """kube-proxy's hashAndTruncate prefix: base32(sha256(name))[:8] (agent/kube_hash.py: without the
    standard library's pure-Python base32, 70k names a run in nftables mode at 10k Services)."""
    return nft_hash(name)


@dataclass(frozen=True)
class ChainName:
    """A per-Service chain name taken apart:
    `<prefix>-<hash>-<ns>/<svc>/<proto>/<port>[__<ip>/<port>]`."""

    prefix: str  # "service" | "local" | "external" | "firewall" | "endpoint" | "affinity"
    namespace: str
    service: str
    protocol: str
    port_name: str
    endpoint: str | None  # "10.180.0.1:80" / "[fd00::1]:80" for endpoint chains
    hash_ok: bool  # the hash matches the rest of the name (else the name was edited or truncated)

    @property
    def service_port(self) -> str:
        """kube-proxy's ServicePortName string: "ns/svc:port", or "ns/svc" for an unnamed port."""
        base = f"{self.namespace}/{self.service}"
        return f"{base}:{self.port_name}" if self.port_name else base


def parse_chain_name(name: str) -> ChainName | None:
    """None for a name that is not a per-Service chain (base chains, helpers, foreign chains)."""
    prefix, sep, rest = name.partition("-")
    if not sep or prefix + "-" not in (*SERVICE_PREFIXES, "affinity-") or "/" not in rest:
        return None
    digest, sep, body = rest.partition("-")
    if not sep or len(digest) != 8:
        return None
    svc_part, _, ep_part = body.partition("__")
    parts = svc_part.split("/")
    if len(parts) != 4:
        return None
    endpoint = None
    if ep_part:
        ip, _, port = ep_part.rpartition("/")
        ipv6 = not _IPV4.fullmatch(ip)  # kube-proxy writes an IPv6 address's ":" as "."
        endpoint = f"[{ip.replace('.', ':')}]:{port}" if ipv6 else f"{ip}:{port}"
    return ChainName(prefix=prefix, namespace=parts[0], service=parts[1], protocol=parts[2], port_name=parts[3],
                     endpoint=endpoint, hash_ok=name_hash(body) == digest)
