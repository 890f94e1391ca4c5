"""The one derivation step of a run: the views several checks and reporters share, computed once from
the Snapshot (by the Runner, before the checks) and carried in the Report. The same snapshot gives the
same views, whatever ran before.

`previous`, the views of the runner's last run, only saves work: an iptables view derived from the very
RuleSet object the reader handed back again (it does while the rules are unchanged; RuleSets are
immutable) is that view, so it is taken as it is (at 10k Services deriving it costs about 0.3 s); so is
the expected state derived from the very ClusterState object the API provider hands back while no watch
event arrived (the provider replaces, never changes, it); so are the nftables ports (given the same
LoadBalancer IPs) and structure findings of the very KubeProxyTable objects the nftables reader hands back
while the nf_tables generation stands (deriving them costs about a second at 10k Services). A view names
its rules by weak reference: the views outlive a run (served, and kept for the next), the rules must not.
"""

from __future__ import annotations

import weakref
from dataclasses import replace

from agent.checks import iptables_services, programmed_nftables
from agent.checks.expected import expected_ports
from agent.checks.iptables_names import learn_names
from agent.checks.localhost_nodeports import serves_localhost_nodeports
from agent.checks.mode import decide_mode
from agent.checks.nftables import check_table
from agent.checks.programmed import programmed
from agent.checks.programmed_iptables import programmed_ports_of, union_ports
from agent.model import Snapshot
from agent.model.iptables import RuleSet
from agent.model.programmed import ProgrammedServices
from agent.model.views import IptablesView, Views


def derive(snap: Snapshot, previous: Views | None = None) -> Views:
    mode = decide_mode(snap)
    iptables: tuple[IptablesView, ...] = ()
    if snap.iptables.ok and snap.iptables.data is not None:
        state = snap.iptables.data
        iptables = tuple(_iptables_view(rs, _other(state.other_rulesets, rs.family), previous)
                         for rs in state.rulesets)
    cluster = snap.cluster.data if snap.cluster.ok else None
    nft = snap.nftables.data if snap.nftables.ok else None
    usable = cluster is not None and cluster.usable
    localhost = serves_localhost_nodeports(snap, mode.mode)  # what kube-proxy's settings add to the expected
    source = (cluster, localhost)
    expected = None
    if (usable and previous is not None and isinstance(previous.expected_source, tuple)
            and previous.expected_source[0] is cluster and previous.expected_source[1] == localhost
            and previous.expected is not None):
        expected = previous.expected
    elif cluster is not None and usable:
        expected = tuple(expected_ports(cluster, snap.node, localhost_nodeports=localhost))
    tables = tuple(nft.tables) if nft is not None else ()
    lb_ips = programmed_nftables.lb_ips_of(cluster)
    before = previous.nftables_source if previous is not None else None
    same_tables = isinstance(before, tuple) and bool(tables) and _same(before[0], tables)
    nftables_ports = structure = None
    if nft is not None and tables:
        if same_tables and previous is not None:
            nftables_ports, structure = previous.nftables_ports, previous.nftables_structure
        else:
            nftables_ports = tuple(programmed_nftables.programmed_ports(nft))
            structure = tuple((table.ip_family, tuple(check_table(table))) for table in tables)
    prog = None
    if (mode.mode == "nftables" and nft is not None and same_tables and previous is not None
            and isinstance(before, tuple) and before[1] == lb_ips
            and previous.programmed is not None and previous.programmed.mode == "nftables"):
        prog = replace(previous.programmed, read_at=nft.read_at or None)  # the same tables, named the same
    elif mode.mode == "nftables" and nft is not None and nftables_ports is not None and not any(lb_ips.values()):
        # the cluster names no LoadBalancer IP, all programmed_ports takes of it: the same ports, derived once
        prog = ProgrammedServices("nftables", list(nftables_ports), families=sorted({t.ip_family for t in tables}),
                                  read_at=nft.read_at or None)
    return Views(
        mode=mode, iptables=iptables, expected=expected, expected_source=source if usable else None,
        programmed=prog or programmed(snap, mode, iptables), nftables_ports=nftables_ports,
        nftables_structure=structure,
        nftables_source=(tuple(weakref.ref(t) for t in tables), lb_ips) if tables else None)


def _other(others: tuple[RuleSet, ...], family: int) -> RuleSet | None:
    return next((o for o in others if o.family == family), None)


def _iptables_view(rs: RuleSet, other: RuleSet | None, previous: Views | None) -> IptablesView:
    """One family's view; with kube-proxy's rules in both backends, the ports either programs (the kernel runs
    both backends' hooks), named by the judged backend's chains."""
    source = (rs,) if other is None else (rs, other)
    view = previous.iptables_view(rs.family) if previous is not None else None
    if view is not None and _same(view.source, source):
        return view
    names = learn_names(rs)
    ports = programmed_ports_of(rs, names)
    if other is not None:
        ports = union_ports(ports, programmed_ports_of(other, learn_names(other)))
    return IptablesView(rs.family, names, ports, service_findings=iptables_services.findings_of(rs, names),
                        source=tuple(weakref.ref(r) for r in source))


def _same(refs: object, rules: tuple[object, ...]) -> bool:
    """The very rule objects a view was derived from (handed out, never changed: the same objects, the same
    view; a reference whose object is gone matches nothing)."""
    return (isinstance(refs, tuple) and len(refs) == len(rules)
            and all(isinstance(r, weakref.ref) and r() is x for r, x in zip(refs, rules, strict=True)))
