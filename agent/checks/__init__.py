"""Checks: pure functions from a Snapshot (and the run's derived Views) to Findings. No I/O, no
logging, no try/except, no state kept between runs.

Every module in this package that defines `check` is listed here explicitly (a test fails if one is
missing), in the order of the guide: is kube-proxy there, is the node able to forward, ... A check that
needs only the snapshot is written `check(snap)` and listed through `snapshot_only`; one that uses the
views the runner derived once (agent/checks/derive.py) is written `check(snap, views)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

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
    ipvs_iptables,
    kube_proxy,
    kube_proxy_log,
    kube_proxy_metrics,
    kubelet,
    mode,
    nftables,
    node,
    probes,
    rules,
)
from agent.model import Finding, Snapshot
from agent.model.views import Views

CheckFunc = Callable[[Snapshot, Views], Iterable[Finding]]


def snapshot_only(fn: Callable[[Snapshot], Iterator[Finding]]) -> CheckFunc:
    """A check of the snapshot alone, called as every check is."""

    @functools.wraps(fn)
    def check(snap: Snapshot, views: Views) -> Iterator[Finding]:
        return fn(snap)

    return check


CHECKS: tuple[CheckFunc, ...] = (
    snapshot_only(agent_sources.check),
    snapshot_only(api.check),
    snapshot_only(kube_proxy.check),
    snapshot_only(kube_proxy_metrics.check),
    snapshot_only(kube_proxy_log.check),
    snapshot_only(mode.check),
    snapshot_only(kubelet.check),
    snapshot_only(conntrack.check),
    snapshot_only(conntrack_flows.check),
    snapshot_only(node.check),
    snapshot_only(iptables_backend.check),
    snapshot_only(iptables_structure.check),
    iptables_services.check,
    rules.check,
    nftables.check,
    snapshot_only(ipvs.check),
    snapshot_only(ipvs_iptables.check),
    hairpin.check,
    snapshot_only(probes.check),
)
