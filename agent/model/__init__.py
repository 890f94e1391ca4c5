"""The data that flows collect -> snapshot -> check -> report.

Everything here is a plain dataclass so a snapshot can be saved as JSON and replayed (`check --from`).
Collectors fill `Source`s; checks read the `Snapshot` and yield `Finding`s; reporters render a `Report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from agent.model.cluster import ClusterState
from agent.model.cni import CniState
from agent.model.conntrack_table import ConntrackFlows, ConntrackStats
from agent.model.iptables import IptablesState
from agent.model.ipvs import IpvsState
from agent.model.kube_proxy_signals import KubeProxyLog, KubeProxyMetrics
from agent.model.kubelet_log import KubeletLog
from agent.model.links import Bridge, BridgePort, Links
from agent.model.nftables import NftablesState
from agent.model.probes import ProbeSet
from agent.serial import SchemaError, load_strict, to_jsonable

__all__ = ["Bridge", "BridgePort", "ClusterState", "CniState", "IptablesState", "IpvsState", "Links",
           "NftablesState"]

T = TypeVar("T")

SNAPSHOT_SCHEMA = 1  # bumped when a saved snapshot's meaning changes; older ones still load, newer ones do not

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")


@dataclass
class Source(Generic[T]):
    """What one collector saw: its data, or why it has none.

    `absent` (the thing is not there: module not loaded, binary missing, process not running) is kept
    apart from `error` (we could not look): only an error makes `agent.source_failed`, and a failed
    read never turns into "rules missing".
    """

    name: str
    ok: bool = False
    absent: bool = False
    error: str | None = None
    duration_s: float = 0.0
    data: T | None = None
    note: str | None = None  # why it is absent, in a sentence
    # What a failed read could still establish about its own failure (nothing it would judge), for the
    # checks that judge the failure itself: e.g. which tables iptables-nft-save cannot show
    detail: dict[str, Any] | None = None


@dataclass
class ProcessInfo:
    """A kube-proxy or kubelet process as /proc shows it."""

    pid: int
    comm: str
    argv: list[str]
    flags: dict[str, str]  # last value wins, as Go's flag package does
    root: str  # /proc/<pid>/root: the process's own filesystem view
    env_path: list[str]  # PATH from /proc/<pid>/environ (for binaries it shells out to)
    config_path: str | None = None
    config: dict[str, Any] | None = None  # the known fields of its --config (never the file's text)
    config_error: str | None = None  # why no source gave the config (each source tried, in order)
    exe: str | None = None  # /proc/<pid>/exe; None when the agent may not read it (no CAP_SYS_PTRACE)
    identity: str = ""  # why this process is taken for the real one (owner, PID namespace, executable)
    config_source: str | None = None  # where `config` came from: a file, kube-proxy's /configz, a ConfigMap


@dataclass
class KubeProxyHTTP:
    """kube-proxy's own endpoints: /healthz (10256), /proxyMode and /metrics (10249)."""

    healthz_url: str | None = None
    healthz_status: int | None = None
    healthz_body: dict[str, Any] | None = None
    healthz_error: str | None = None
    proxy_mode: str | None = None  # body of /proxyMode
    proxy_mode_error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # the few series the checks use
    version: str | None = None  # kubernetes_build_info{git_version}
    metrics_error: str | None = None
    signals: KubeProxyMetrics | None = None  # failure counters and their rises (agent/collect/kubeproxy_metrics.py)


@dataclass
class ConntrackInfo:
    module_loaded: bool
    count: int | None = None
    max: int | None = None
    host_binary: str | None = None  # path of `conntrack` on the host PATH, if any
    kube_proxy_binary: str | None = None  # path inside kube-proxy's filesystem, if any
    kube_proxy_binary_searched: list[str] = field(default_factory=list)
    kube_proxy_binary_unknown: str | None = None  # why kube-proxy's filesystem could not be searched
    stats: ConntrackStats | None = None  # /proc/net/stat/nf_conntrack: drops, insert failures (rates)
    stats_error: str | None = None  # why that file could not be read


@dataclass
class Sysctls:
    """Values under /proc/sys that the guide's prerequisites depend on; None = file absent."""

    values: dict[str, str | None] = field(default_factory=dict)


@dataclass
class CheckSettings:
    """Settings that change what the checks conclude; saved in the snapshot so a replay judges the same."""

    grace_s: float | None = None  # rules.* differences younger than this are not reported; None: 2x sync period


@dataclass
class Snapshot:
    """Everything collected on one node at one time. Checks read only this."""

    node: str
    taken_at: float  # unix seconds
    agent_version: str
    kube_proxy: Source[ProcessInfo]
    kubelet: Source[ProcessInfo]
    kube_proxy_http: Source[KubeProxyHTTP]
    conntrack: Source[ConntrackInfo]
    sysctl: Source[Sysctls]
    links: Source[Links]
    # Areas added later default to "not collected" so older saved snapshots still load.
    iptables: Source[IptablesState] = field(default_factory=lambda: Source("iptables", ok=True, absent=True))
    nftables: Source[NftablesState] = field(default_factory=lambda: Source("nftables", ok=True, absent=True))
    ipvs: Source[IpvsState] = field(default_factory=lambda: Source("ipvs", ok=True, absent=True))
    cni: Source[CniState] = field(default_factory=lambda: Source("cni", ok=True, absent=True))
    cluster: Source[ClusterState] = field(default_factory=lambda: Source("cluster", ok=True, absent=True))
    kubelet_log: Source[KubeletLog] = field(default_factory=lambda: Source("kubelet_log", ok=True, absent=True))
    settings: CheckSettings = field(default_factory=CheckSettings)
    schema_version: int = SNAPSHOT_SCHEMA  # older snapshots, written before it existed, are version 1
    probes: Source[ProbeSet] = field(default_factory=lambda: Source("probes", ok=True, absent=True))
    # kube-proxy's log and the conntrack flows toward Services (issue 19)
    kube_proxy_log: Source[KubeProxyLog] = field(default_factory=lambda: Source("kube_proxy_log", ok=True, absent=True))
    conntrack_flows: Source[ConntrackFlows] = field(
        default_factory=lambda: Source("conntrack_flows", ok=True, absent=True))

    def sources(self) -> list[Source[Any]]:
        return [v for v in vars(self).values() if isinstance(v, Source)]

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        """A saved snapshot, checked against this version's types: raises SchemaError (a ValueError)
        with one line saying where it is wrong."""
        try:
            raw = json.loads(text)
        except RecursionError:
            raise SchemaError("snapshot: nested too deeply to be a snapshot") from None
        except ValueError as exc:
            raise SchemaError(f"snapshot: not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise SchemaError("snapshot: expected an object")
        version = raw.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SNAPSHOT_SCHEMA:
            raise SchemaError(f"snapshot: schema_version {version!r} is not one this svcdoctor reads "
                              f"(1 to {SNAPSHOT_SCHEMA})")
        try:
            snap: Snapshot = load_strict(cls, raw, "snapshot", may_omit=frozenset({cls}))
        except RecursionError:
            raise SchemaError("snapshot: nested too deeply to be a snapshot") from None
        except TypeError as exc:  # a dataclass refusing what the hints allowed: still the file's fault
            raise SchemaError(f"snapshot: {exc}") from None
        return snap


@dataclass(frozen=True)
class Finding:
    id: str  # stable, dotted: area.condition; never renamed or reused
    severity: Severity
    subject: str  # node, ns/svc:port, interface, source name
    service: str | None  # ns/name:port when the finding is about a Service port
    title: str
    message: str
    remedy: str
    evidence: dict[str, Any]
    doc: str = ""

    def sort_key(self) -> tuple[int, str, str]:
        return (SEVERITIES.index(self.severity), self.id, self.subject)
