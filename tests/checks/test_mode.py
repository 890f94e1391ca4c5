"""Mode detection: kube-proxy's configuration, its /proxyMode answer and what the node shows, and the
findings when they disagree (kube_proxy.mode_mismatch) or another mode's rules are left over
(kube_proxy.stale_mode_rules)."""

from __future__ import annotations

from typing import Any

from agent.checks.mode import decide_mode
from agent.model import KubeProxyHTTP, Snapshot, Source
from agent.model.iptables import IptablesState, RuleSet, Table
from agent.model.ipvs import IpvsState
from agent.model.nftables import NftablesState
from tests.checks.helpers import found, run_checks
from tests.snapshots import absent, healthy, kube_proxy_process

N = "test-node"


def http(mode: str | None) -> KubeProxyHTTP:
    return KubeProxyHTTP(healthz_url="http://127.0.0.1:10256/healthz", healthz_status=200, proxy_mode=mode,
                         version="v1.33.1")


def nft_table() -> NftablesState:
    """A whole, healthy kube-proxy table (kube-proxy's TestOverallNFTablesRules)."""
    from tests.checks.test_nftables import OVERALL, items, state

    return state(items(OVERALL))


def ours(snap: Snapshot) -> set[tuple[str, str]]:
    """Warning/critical findings of mode detection and the IPVS/nftables checks (the iptables checks'
    verdicts on the synthetic iptables state are theirs)."""
    return {x for x in found(snap) if x[0].startswith(("kube_proxy.", "ipvs.", "nftables."))}


def iptables_with_svc_chains() -> IptablesState:
    nat = Table("nat", chains=["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-ABCDEFGHIJKLMNOP"])
    return IptablesState(backend="nft", backend_reason="test", rulesets=[RuleSet(family=4, tables={"nat": nat})])


def ipvs_leftover() -> IpvsState:
    return IpvsState(kernel_available=False, kernel_error="ip_vs is not loaded", interface_present=True,
                     interface_addresses=["172.30.0.41"])


def mode_findings(snap: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    return [(f.id, f.evidence) for f in run_checks(snap) if f.id.startswith("kube_proxy.")]


def test_agreeing_witnesses_give_only_the_mode_info() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=nftables"), kube_proxy_http=http("nftables"),
                   nftables=nft_table())
    assert [i for i, _ in mode_findings(snap)] == ["kube_proxy.mode"]
    assert decide_mode(snap).node == {"nftables": "table ip kube-proxy"}


def test_config_says_iptables_but_kube_proxy_runs_nftables() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=iptables"), kube_proxy_http=http("nftables"),
                   nftables=nft_table())
    (mismatch,) = [ev for i, ev in mode_findings(snap) if i == "kube_proxy.mode_mismatch"]
    assert mismatch == {"configured": "iptables", "source": "flag --proxy-mode", "other": "nftables",
                        "other_source": "kube-proxy's /proxyMode"}
    assert ours(snap) == {("kube_proxy.mode_mismatch", N)}  # the nftables table is the running mode's, not stale


def test_proxy_mode_answer_wins_over_a_built_in_default() -> None:
    snap = healthy(kube_proxy_http=http("nftables"), nftables=nft_table())  # no flag, no config: a default
    decision = decide_mode(snap)
    assert (decision.mode, decision.source, decision.configured) == ("nftables", "kube-proxy /proxyMode", None)
    assert ours(snap) == set()  # a default is no configuration to mismatch


def unread_config_process() -> Any:
    proc = kube_proxy_process()
    proc.config_path = "/var/lib/kube-proxy/config.conf"
    proc.config_error = "file ...: Permission denied (needs CAP_SYS_PTRACE); kube-proxy's /configz: refused"
    return proc


def test_unread_config_on_an_nftables_node_is_not_taken_for_iptables() -> None:
    """The DaemonSet's case before the fix: config unreadable, /proxyMode silent, the node all nftables.
    The iptables default must not decide (it made 9 false criticals)."""
    snap = healthy(kube_proxy=unread_config_process(), kube_proxy_http=http(None), nftables=nft_table())
    decision = decide_mode(snap)
    assert decision.mode == "nftables" and decision.source.startswith("node (table ip kube-proxy)")
    assert {i for i, _ in found(snap) if not i.startswith("kube_proxy.")} == set()
    assert ("kube_proxy.config_unreadable", N) in found(snap)


def test_unread_config_and_nothing_else_decides_no_mode() -> None:
    snap = healthy(kube_proxy=unread_config_process(), kube_proxy_http=http(None))
    assert decide_mode(snap).mode is None
    assert found(snap) == {("kube_proxy.config_unreadable", N)}


def test_node_shows_only_another_modes_rules_when_kube_proxy_cannot_be_asked() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=nftables"), kube_proxy_http=http(None),
                   iptables=iptables_with_svc_chains())
    (mismatch,) = [ev for i, ev in mode_findings(snap) if i == "kube_proxy.mode_mismatch"]
    assert (mismatch["configured"], mismatch["other"]) == ("nftables", "iptables")
    assert "KUBE-SVC" in mismatch["other_source"]


def test_ipvs_interface_left_beside_nftables_is_stale() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=nftables"), kube_proxy_http=http("nftables"),
                   nftables=nft_table(), ipvs=ipvs_leftover())
    assert ours(snap) == {("kube_proxy.stale_mode_rules", N)}
    (stale,) = [ev for i, ev in mode_findings(snap) if i == "kube_proxy.stale_mode_rules"]
    assert (stale["mode"], stale["mode_left"], stale["evidence_left"]) == ("nftables", "ipvs", "kube-ipvs0")


def test_kube_svc_chains_left_beside_nftables_are_stale() -> None:
    snap = healthy(kube_proxy=kube_proxy_process("--proxy-mode=nftables"), kube_proxy_http=http("nftables"),
                   nftables=nft_table(), iptables=iptables_with_svc_chains())
    assert ours(snap) == {("kube_proxy.stale_mode_rules", N)}


def test_ipvs_leftover_in_iptables_mode_does_not_judge_ipvs_itself() -> None:
    """ipvs.kernel_unavailable is only for a kube-proxy in IPVS mode; a leftover is stale_mode_rules."""
    snap = healthy(ipvs=ipvs_leftover(), iptables=iptables_with_svc_chains())
    assert ours(snap) == {("kube_proxy.stale_mode_rules", N)}


def test_without_kube_proxy_the_node_decides() -> None:
    snap = healthy(kube_proxy=Source("kube_proxy", ok=True), kube_proxy_http=absent("kube_proxy_http"),
                   nftables=nft_table())
    d = decide_mode(snap)
    assert (d.mode, d.source) == ("nftables", "node (table ip kube-proxy)")


def test_without_kube_proxy_and_two_modes_on_the_node_nothing_is_decided() -> None:
    snap = healthy(kube_proxy=Source("kube_proxy", ok=True), kube_proxy_http=absent("kube_proxy_http"),
                   nftables=nft_table(), ipvs=ipvs_leftover())
    assert decide_mode(snap).mode is None


def test_failed_sources_are_not_node_evidence() -> None:
    failed: Source[NftablesState] = Source("nftables", ok=False, error="boom", data=nft_table())
    snap = healthy(nftables=failed)
    assert decide_mode(snap).node == {}
