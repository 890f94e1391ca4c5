"""The one adapter between explain and the node-wide derivations (expected ports, programmed ports, their
comparison in agent/checks/rules.py). The programmed view is the run's own (Report.views), derived afresh
only for a snapshot that comes without one."""

from __future__ import annotations

from dataclasses import dataclass

from agent.checks.derive import derive
from agent.checks.expected import expected_ports
from agent.checks.rules import compare_port, grace_seconds, settling
from agent.model import Finding, Snapshot
from agent.model.cluster import ClusterState, ServiceSpec
from agent.model.programmed import ExpectedPort, ProgrammedPort
from agent.model.views import Views


@dataclass(frozen=True)
class PortRules:
    expected: ExpectedPort
    programmed: ProgrammedPort | None
    differences: tuple[Finding, ...]
    settling: bool  # the API objects changed within the grace period: kube-proxy may still be on it


@dataclass(frozen=True)
class RulesView:
    mode: str | None
    ports: tuple[PortRules, ...]
    unavailable: str | None = None  # why the node's rules could not be compared


def service_rules(snap: Snapshot, views: Views | None, state: ClusterState, svc: ServiceSpec) -> RulesView:
    """This Service's expected and programmed rules on this node, and how they differ."""
    view = (views if views is not None else derive(snap)).programmed
    if view is None:
        return RulesView(None, (), "the rules of kube-proxy's mode were not read on this node (see the sources)")
    # Only this Service's objects: expected_ports is cheap for one Service and exact for it.
    mine = ClusterState(origin=state.origin, fetched_at=state.fetched_at, services=[svc],
                        slices=[s for s in state.slices if s.namespace == svc.namespace and s.service == svc.name],
                        node=state.node)
    actual = {(p.service, p.protocol, p.family): p for p in view.ports if p.service.startswith(
        f"{svc.namespace}/{svc.name}")}
    grace = grace_seconds(snap)
    read_at = view.read_at or snap.taken_at
    out = []
    for exp in expected_ports(mine, snap.node):
        if exp.family not in view.families:
            continue
        prog = actual.get((exp.service, exp.protocol, exp.family))
        out.append(PortRules(exp, prog, tuple(compare_port(exp, prog, view.mode)), settling(exp, read_at, grace)))
    return RulesView(view.mode, tuple(out))
