"""Snapshots built in memory for offline check tests: a healthy node by default, parts replaced per test."""

from __future__ import annotations

import time
from typing import Any

from agent.model import ConntrackInfo, KubeProxyHTTP, ProcessInfo, Snapshot, Source, Sysctls
from agent.model.links import Links

NOW = 1_750_000_000.0


def kube_proxy_process(*argv: str, config: dict[str, Any] | None = None) -> ProcessInfo:
    from agent.collect.process import parse_flags

    full = ["/usr/local/bin/kube-proxy", *argv]
    return ProcessInfo(pid=100, comm="kube-proxy", argv=full, flags=parse_flags(full), root="/proc/100/root",
                       env_path=["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"],
                       config_path="/var/lib/kube-proxy/config.conf" if config is not None else None, config=config)


def kubelet_process(*argv: str) -> ProcessInfo:
    from agent.collect.process import parse_flags

    full = ["/usr/bin/kubelet", *argv]
    return ProcessInfo(pid=200, comm="kubelet", argv=full, flags=parse_flags(full), root="/proc/200/root",
                       env_path=[])


def healthy(**replace: Any) -> Snapshot:
    """A node where kube-proxy (v1.31, iptables), kubelet and the prerequisites are all fine."""
    sources: dict[str, Any] = {
        "kube_proxy": Source("kube_proxy", ok=True, data=kube_proxy_process("--hostname-override=test-node")),
        "kubelet": Source("kubelet", ok=True, data=kubelet_process()),
        "kube_proxy_http": Source("kube_proxy_http", ok=True, data=KubeProxyHTTP(
            healthz_url="http://127.0.0.1:10256/healthz", healthz_status=200,
            healthz_body={"lastUpdated": "x", "currentTime": "y", "nodeEligible": True}, proxy_mode="iptables",
            metrics={"kubeproxy_sync_proxy_rules_last_timestamp_seconds": NOW - 5,
                     "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": NOW - 6},
            version="v1.31.2")),
        "conntrack": Source("conntrack", ok=True, data=ConntrackInfo(
            module_loaded=True, count=100, max=262144, host_binary="/usr/sbin/conntrack",
            kube_proxy_binary="/usr/sbin/conntrack")),
        "sysctl": Source("sysctl", ok=True, data=Sysctls(values={
            "net/ipv4/ip_forward": "1", "net/ipv4/conf/all/route_localnet": "1",
            "net/bridge/bridge-nf-call-iptables": "1"})),
        "links": Source("links", ok=True, data=Links()),
    }
    for name, value in replace.items():
        sources[name] = value if isinstance(value, Source) else Source(name, ok=True, data=value)
    return Snapshot(node="test-node", taken_at=NOW, agent_version="test", **sources)


def failed(name: str, error: str = "boom") -> Source[Any]:
    return Source(name, ok=False, error=error)


def absent(name: str) -> Source[Any]:
    return Source(name, ok=True, absent=True, note=f"{name} not there")


def now() -> float:
    return time.time()
