"""Checks: pure functions from a Snapshot to Findings. No I/O, no logging, no try/except.

Every module in this package that defines `check` is listed here explicitly (a test fails if one is
missing), in the order of the guide: is kube-proxy there, is the node able to forward, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from agent.checks import (
    agent_sources,
    api,
    conntrack,
    conntrack_flows,
    hairpin,
    iptables_backend,
    iptables_services,
    iptables_structure,
    ipvs,
    kube_proxy,
    kube_proxy_log,
    kube_proxy_metrics,
    kubelet,
    mode,
    nftables,
    node,
    rules,
)
from agent.model import Finding, Snapshot

CheckFunc = Callable[[Snapshot], Iterator[Finding]]

CHECKS: tuple[CheckFunc, ...] = (
    agent_sources.check,
    api.check,
    kube_proxy.check,
    kube_proxy_metrics.check,
    kube_proxy_log.check,
    mode.check,
    kubelet.check,
    conntrack.check,
    conntrack_flows.check,
    node.check,
    iptables_backend.check,
    iptables_structure.check,
    iptables_services.check,
    rules.check,
    nftables.check,
    ipvs.check,
    hairpin.check,
)
