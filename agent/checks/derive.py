"""The one derivation step of a run: the views several checks and reporters share, computed once from
the Snapshot (by the Runner, before the checks) and carried in the Report. Pure: the same snapshot gives
the same views, whatever ran before.
"""

from __future__ import annotations

from agent.checks import programmed_nftables
from agent.checks.expected import expected_ports
from agent.checks.iptables_names import learn_names
from agent.checks.mode import decide_mode
from agent.checks.programmed import programmed
from agent.checks.programmed_iptables import programmed_ports_of
from agent.model import Snapshot
from agent.model.views import IptablesView, Views


def derive(snap: Snapshot) -> Views:
    mode = decide_mode(snap)
    iptables: tuple[IptablesView, ...] = ()
    if snap.iptables.ok and snap.iptables.data is not None:
        iptables = tuple(IptablesView(rs.family, names, programmed_ports_of(rs, names))
                         for rs in snap.iptables.data.rulesets for names in (learn_names(rs),))
    cluster = snap.cluster.data if snap.cluster.ok else None
    nft = snap.nftables.data if snap.nftables.ok else None
    return Views(
        mode=mode, iptables=iptables,
        expected=tuple(expected_ports(cluster, snap.node)) if cluster is not None and cluster.usable else None,
        programmed=programmed(snap, mode, iptables),
        nftables_ports=tuple(programmed_nftables.programmed_ports(nft)) if nft is not None and nft.tables else None)
