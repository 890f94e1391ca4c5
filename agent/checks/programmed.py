"""The node's programmed Services in the mode-independent view, from whichever proxy mode is active.

Each mode's reader (agent/checks/programmed_<mode>.py) turns its own snapshot data into ProgrammedPorts;
this picks the one that matches the decided mode. None when that mode's data is not available (the
source failed or is absent): the comparison is then skipped, never turned into "rules missing".
"""

from __future__ import annotations

from agent.checks import programmed_iptables, programmed_ipvs, programmed_nftables
from agent.checks.mode import decide_mode
from agent.model import Snapshot
from agent.model.programmed import ProgrammedServices


def programmed(snap: Snapshot) -> ProgrammedServices | None:
    mode = decide_mode(snap).mode
    if mode == "iptables" and snap.iptables.ok and snap.iptables.data is not None:
        return ProgrammedServices("iptables", programmed_iptables.programmed_ports(snap.iptables.data))
    if mode == "nftables" and snap.nftables.ok and snap.nftables.data is not None:
        return ProgrammedServices("nftables", programmed_nftables.programmed_ports(snap.nftables.data))
    if mode == "ipvs" and snap.ipvs.ok and snap.ipvs.data is not None:
        return ProgrammedServices("ipvs", programmed_ipvs.programmed_ports(snap.ipvs.data))
    return None
