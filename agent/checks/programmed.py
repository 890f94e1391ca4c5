"""The node's programmed Services in the mode-independent view, from whichever proxy mode is active.

Each mode's reader (agent/checks/programmed_<mode>.py) turns its own snapshot data into ProgrammedPorts;
this picks the one that matches the decided mode. None when that mode's data is not available (the
source failed or is absent): the comparison is then skipped, never turned into "rules missing".
"""

from __future__ import annotations

import dataclasses

from agent.checks import programmed_ipvs, programmed_nftables
from agent.checks.families import served_families
from agent.model import Snapshot
from agent.model.programmed import ProgrammedServices
from agent.model.views import IptablesView, ModeDecision


def programmed(snap: Snapshot, mode: ModeDecision, iptables: tuple[IptablesView, ...]) -> ProgrammedServices | None:
    """`iptables`: the iptables views of this snapshot (agent/checks/derive.py)."""
    served = served_families(snap) or frozenset()
    if mode.mode == "iptables" and snap.iptables.ok and snap.iptables.data is not None:
        ipt = snap.iptables.data
        # A family read whole without kube-proxy's chains counts as looked at on a node that serves it (a
        # dual-stack node whose IPv6 proxier wrote nothing): its Services are then missing, not unjudged.
        kept = {rs.family for rs in ipt.rulesets} | (set(ipt.families_read) & served)
        return ProgrammedServices("iptables", [p for view in iptables for p in view.ports],
                                  families=sorted(kept) or [4], read_at=ipt.read_at or None)
    # nftables and IPVS need the API's view to name what they show: IPVS carries no Service names at
    # all, and nftables cannot tell an externalIP from a LoadBalancer IP on its own.
    cluster = snap.cluster.data if snap.cluster.ok else None
    if mode.mode == "nftables" and snap.nftables.ok and snap.nftables.data is not None:
        view = programmed_nftables.programmed_services(snap.nftables.data, cluster)
        # the listing of every table was whole: a served family without its table has nothing programmed
        return dataclasses.replace(view, families=sorted(set(view.families) | served))
    if mode.mode == "ipvs" and snap.ipvs.ok and snap.ipvs.data is not None:
        return programmed_ipvs.programmed_services(snap.ipvs.data, cluster)
    return None
