"""The one place that decides kube-proxy's proxy mode, and the findings about it.

Three witnesses: kube-proxy's flags and config file (what it was told), its `/proxyMode` endpoint
(what it runs), and what exists on the node (a `table ip/ip6 kube-proxy`: nftables; kube-ipvs0 or
IPVS virtual servers: ipvs; iptables KUBE-SVC-/KUBE-SVL- chains: iptables). The decided mode is the
configured one when kube-proxy is found (else /proxyMode, else the node's single mode); a mode that
is only kube-proxy's built-in default never beats /proxyMode, and when kube-proxy's config could not
be read, not the node's single mode either (the default is then a guess); disagreement is
`kube_proxy.mode_mismatch`, and another mode's rules beside the running mode's are
`kube_proxy.stale_mode_rules`.
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.kube_hash import SVC, SVL
from agent.model import Finding, Snapshot
from agent.model.views import ModeDecision
from agent.settings import REMOVED_MODES, config_unknown, kube_proxy_settings

NODE_MODES = ("iptables", "ipvs", "nftables")


def node_modes(snap: Snapshot) -> dict[str, str]:
    """Each proxy mode whose rules exist on this node, with the evidence (a short phrase)."""
    seen: dict[str, str] = {}
    nft = snap.nftables.data
    if snap.nftables.ok and nft is not None and nft.tables:
        seen["nftables"] = ", ".join(f"table {t.family} kube-proxy" for t in nft.tables)
    ipvs = snap.ipvs.data
    if snap.ipvs.ok and ipvs is not None and ipvs.has_ipvs_rules():
        parts = (["kube-ipvs0"] if ipvs.interface_present else []) + (
            [f"{len(ipvs.virtual_servers)} IPVS virtual servers"] if ipvs.virtual_servers else [])
        seen["ipvs"] = ", ".join(parts)
    ipt = snap.iptables.data
    if snap.iptables.ok and ipt is not None:
        chains = sum(rs.table("nat").census.declared[prefix] for rs in ipt.rulesets for prefix in (SVC, SVL))
        if chains:
            seen["iptables"] = f"{chains} KUBE-SVC/KUBE-SVL chains ({ipt.backend})"
    return seen


def decide_mode(snap: Snapshot) -> ModeDecision:
    http = snap.kube_proxy_http.data
    version = http.version if http else None
    reported = (http.proxy_mode or "").strip().lower() or None if http else None
    node = node_modes(snap)
    proc = snap.kube_proxy.data
    if proc is None:
        if reported is not None:
            return ModeDecision(reported, "kube-proxy /proxyMode", version, reported=reported, node=node)
        if len(node) == 1:
            ((only, why),) = node.items()
            return ModeDecision(only, f"node ({why})", version, node=node)
        return ModeDecision(None, "kube-proxy not found", version, node=node)
    setting = kube_proxy_settings(proc).mode
    value = str(setting.value)
    if setting.source == "default":
        # Nothing configured the mode, or its config could not be read: kube-proxy's own word wins over
        # the built-in default, and an unread config must not make an nftables node "iptables".
        if reported is not None and reported != value:
            return ModeDecision(reported, "kube-proxy /proxyMode", version, reported=reported, node=node)
        if config_unknown(proc) and reported is None:
            if len(node) == 1:
                ((only, why),) = node.items()
                return ModeDecision(only, f"node ({why}); kube-proxy's config unread", version, node=node)
            return ModeDecision(None, "kube-proxy's config unread and /proxyMode silent", version, node=node)
    return ModeDecision(value, setting.source, version, configured=value, configured_source=setting.source,
                        reported=reported, node=node)


def check(snap: Snapshot) -> Iterator[Finding]:
    decision = decide_mode(snap)
    if decision.mode is None:
        return
    evidence = {"mode": decision.mode, "source": decision.source, "version": decision.version or "unknown"}
    if decision.mode in REMOVED_MODES:
        yield finding("kube_proxy.mode_unsupported", snap.node, evidence=evidence)
        return
    yield finding("kube_proxy.mode", snap.node, evidence=evidence)
    yield from _mismatch_and_leftovers(snap, decision)


def _mismatch_and_leftovers(snap: Snapshot, d: ModeDecision) -> Iterator[Finding]:
    # The running mode: kube-proxy's own answer beats its configuration.
    running = d.reported or d.mode
    if d.configured is not None and d.reported is not None and d.reported != d.configured:
        yield finding("kube_proxy.mode_mismatch", snap.node, evidence={
            "configured": d.configured, "source": d.configured_source, "other": d.reported,
            "other_source": "kube-proxy's /proxyMode"})
    others = {m: why for m, why in d.node.items() if m != running}
    if not others or running not in NODE_MODES:
        return
    if d.reported is not None or running in d.node:
        # kube-proxy confirms the mode it runs, or the node shows that mode's rules: the others are leftovers.
        for mode, why in sorted(others.items()):
            yield finding("kube_proxy.stale_mode_rules", snap.node, evidence={
                "mode": running, "mode_left": mode, "evidence_left": why,
                "running_evidence": d.node.get(running) or "kube-proxy's /proxyMode"})
    elif d.configured is not None:
        # Nothing of the configured mode on the node, but another mode's rules, and kube-proxy does not
        # say what it runs: whatever programs this node is not doing what the configuration says.
        (mode, why), *_ = sorted(others.items())
        yield finding("kube_proxy.mode_mismatch", snap.node, evidence={
            "configured": d.configured, "source": d.configured_source, "other": mode,
            "other_source": f"the node ({why})"})
