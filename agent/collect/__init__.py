"""Collectors: the only code that touches the host, each read-only and bounded in time.

Phase 1 finds kube-proxy and kubelet; phase 2 collectors receive those results (kube-proxy's flags
say where its endpoints listen and which filesystem holds its conntrack binary). The `name` of a
collector is the Snapshot field it fills and the `source` label of its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.collect import (
    cluster,
    cni,
    conntrack,
    conntrack_flows,
    iptables,
    ipvs,
    kubelet_log,
    kubeproxy_http,
    kubeproxy_log,
    links,
    nftables,
    probes,
    process,
    sysctl,
)
from agent.collect.base import CollectContext, Paced


@dataclass(frozen=True)
class Collector:
    name: str
    func: Callable[[CollectContext], Any] | None  # a read that remembers nothing (None: see `reader`)
    phase: int = 2
    timeout_s: float | None = None  # None: the config's source_timeout_s
    # A reader that remembers something between reads: each Runner makes its own with this, so what it
    # remembers belongs to that runner (and is gone with it), never to the module
    reader: Callable[[], Callable[[CollectContext], Any]] | None = None

    def make(self) -> Callable[[CollectContext], Any]:
        if self.reader is not None:
            return self.reader()
        assert self.func is not None, self.name
        return self.func


def _nftables_reader() -> Paced[Any]:
    # reading 10k Services x 5 endpoints takes ~6 s (bench/bench_nftables.py) when anything changed:
    # paced to ~5% of a core; an unchanged nf_tables generation costs one netlink request
    return Paced(nftables.NftablesReader())


COLLECTORS: tuple[Collector, ...] = (
    Collector("kube_proxy", process.collect_kube_proxy, phase=1),
    Collector("kubelet", process.collect_kubelet, phase=1),
    Collector("kube_proxy_http", kubeproxy_http.KubeProxyHTTPReader(), timeout_s=10.0),
    Collector("conntrack", conntrack.ConntrackReader()),
    Collector("sysctl", sysctl.collect),
    Collector("links", links.collect),
    # a save of 170k rules takes seconds; reads are paced and skipped when nothing changed, see iptables.py
    Collector("iptables", None, reader=iptables.IptablesReader),
    Collector("nftables", None, reader=_nftables_reader),  # obeys --source-timeout
    Collector("ipvs", ipvs.collect),
    Collector("cni", cni.collect),
    Collector("kubelet_log", kubelet_log.collect),
    Collector("kube_proxy_log", kubeproxy_log.KubeProxyLogReader()),
    Collector("cluster", cluster.collect),
    # serve's own traffic (off with --no-probes, never in `check`): bounded by probes.Limits
    Collector("probes", probes.collect, timeout_s=30.0),
    # a million entries take ~7 s of a core to stream (bench/bench_conntrack.py): paced to ~5% of a core;
    # the check skips Services that changed after the read it judges
    Collector("conntrack_flows", Paced(conntrack_flows.collect), timeout_s=120.0),
)
