"""Collectors: the only code that touches the host, each read-only and bounded in time.

Phase 1 finds kube-proxy and kubelet; phase 2 collectors receive those results (kube-proxy's flags
say where its endpoints listen and which filesystem holds its conntrack binary). The `name` of a
collector is the Snapshot field it fills and the `source` label of its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agent.collect import (
    cluster,
    cni,
    conntrack,
    iptables,
    ipvs,
    kubelet_log,
    kubeproxy_http,
    links,
    nftables,
    process,
    sysctl,
)
from agent.collect.base import CollectContext, Paced


@dataclass(frozen=True)
class Collector:
    name: str
    func: Callable[[CollectContext], Any]  # a function, or a reader object (a callable) of one runner
    phase: int = 2
    timeout_s: float | None = None  # None: the config's source_timeout_s
    # A reader that remembers between reads: each runner makes its own (for_runner), so what it
    # remembers lives as long as that runner and no longer; `func` reads afresh without it.
    new_reader: Callable[[], Callable[[CollectContext], Any]] | None = None

    def for_runner(self) -> Collector:
        return replace(self, func=self.new_reader(), new_reader=None) if self.new_reader else self


def _nftables_reader() -> Paced[Any]:
    # reading 10k Services x 5 endpoints takes ~6 s (bench/bench_nftables.py) when anything changed:
    # paced to ~5% of a core; an unchanged nf_tables generation costs one netlink request
    return Paced(nftables.NftablesReader())


COLLECTORS: tuple[Collector, ...] = (
    Collector("kube_proxy", process.collect_kube_proxy, phase=1),
    Collector("kubelet", process.collect_kubelet, phase=1),
    Collector("kube_proxy_http", kubeproxy_http.collect, timeout_s=10.0),
    Collector("conntrack", conntrack.collect),
    Collector("sysctl", sysctl.collect),
    Collector("links", links.collect),
    # a save of 170k rules takes seconds (a minute on some nft hosts); reads are paced, see iptables.py
    Collector("iptables", iptables.collect, timeout_s=90.0),
    Collector("nftables", nftables.collect, new_reader=_nftables_reader),  # --source-timeout
    Collector("ipvs", ipvs.collect),
    Collector("cni", cni.collect),
    Collector("kubelet_log", kubelet_log.collect),
    Collector("cluster", cluster.collect),
)
