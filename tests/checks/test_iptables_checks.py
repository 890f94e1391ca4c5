"""Offline tests of the API-free iptables checks on kube-proxy's real rule dumps.

Each case parses a fixture (save output or restore input) followed by node-base.rules (the hooks and
kubelet chains a real node has), as the node would show it, and runs every check; faults are made by
editing the real text, then the exact iptables.* findings are asserted.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from agent.collect.iptables_parse import Parser, parse_text
from agent.model import Snapshot, Source
from agent.model.iptables import IptablesState
from tests.checks.helpers import found, run_checks
from tests.snapshots import absent, failed, healthy, kube_proxy_process
from tests.testbed import DATA, FIXTURES

IPT = FIXTURES / "iptables"
NODE_BASE = (IPT / "node-base.rules").read_text()
FULL_SYNC = sorted(p.name for p in IPT.glob("*.rules") if "partial" not in p.name and p.name != "node-base.rules")
OVERALL = (IPT / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text()
NO_ENDPOINTS = {"v1.3x_TestOverallIPTablesRules": {"ns6/svc6:p80"},
                "v1.28_TestTerminatingEndpointsTrafficPolicyLocal_no_usable_endpoints": {"ns1/svc1"}}


def state(*texts: str, kube_chains: dict[str, int] | None = None) -> IptablesState:
    parser = Parser(4)
    for text in texts:
        parser.feed(text.split("\n"))
    return IptablesState(backend="legacy", backend_reason="test", rulesets=[parser.result()],
                         kube_chains=kube_chains or {"legacy": 1, "nft": 0})


def snap_of(*texts: str, **kw: object) -> Snapshot:
    return healthy(iptables=state(*texts, **kw))  # type: ignore[arg-type]


def iptables_problems(snap: Snapshot) -> set[tuple[str, str]]:
    return {f for f in found(snap) if f[0].startswith("iptables.")}


def without(text: str, pattern: str, count: int = 1) -> str:
    """The text without the lines matching `pattern` (asserting how many there were)."""
    lines = text.splitlines(keepends=True)
    hit = [line for line in lines if re.search(pattern, line)]
    assert len(hit) == count, hit
    return "".join(line for line in lines if line not in hit)


@pytest.mark.parametrize("name", FULL_SYNC)
def test_full_sync_fixture_has_no_problems(name: str) -> None:
    snap = snap_of((IPT / name).read_text(), NODE_BASE)
    assert found(snap) == set()
    base = name.split(".rules")[0].split(".legacy-save")[0].split(".nft-save")[0]
    info = {f.service for f in run_checks(snap) if f.id == "iptables.service_has_no_endpoints"}
    assert info == NO_ENDPOINTS.get(base, set())


def test_deleted_dispatch_rule_leaves_the_service_chain_unreferenced() -> None:
    text = without(OVERALL, r"-A KUBE-SERVICES .*ns1/svc1:p80 cluster IP")
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.service_chain_unreferenced", "ns1/svc1:p80")}


def test_an_empty_unreferenced_service_chain_is_found_too() -> None:
    """A chain with no rules is in no ladder: the chains are then looked through one by one."""
    text = OVERALL.replace("*nat\n", "*nat\n:KUBE-SVC-EMPTYEMPTYEMPTY - [0:0]\n", 1)
    assert iptables_problems(snap_of(text, NODE_BASE)) == {
        ("iptables.service_chain_unreferenced", "KUBE-SVC-EMPTYEMPTYEMPTY")}


def test_deleted_hook_is_hook_missing() -> None:
    base = without(NODE_BASE, r"-I PREROUTING .* -j KUBE-SERVICES")
    assert iptables_problems(snap_of(OVERALL, base)) == {("iptables.hook_missing", "nat/PREROUTING")}


def test_deleted_dnat_breaks_the_endpoint_chain_of_the_right_service() -> None:
    text = without(OVERALL, r"-A KUBE-SEP-UKSFD7AGPMPPLUHC .*DNAT")
    (f,) = [f for f in run_checks(snap_of(text, NODE_BASE)) if f.id == "iptables.endpoint_chain_broken"]
    assert (f.service, f.evidence["chain"]) == ("ns4/svc4:p80", "KUBE-SEP-UKSFD7AGPMPPLUHC")
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.endpoint_chain_broken", "ns4/svc4:p80")}


def test_deleted_only_endpoint_chain_leaves_a_service_chain_without_endpoints() -> None:
    text = without(OVERALL, r"KUBE-SEP-SXIVWICOYRO3J4NJ", count=4)  # declaration, its 2 rules, the jump to it
    assert iptables_problems(snap_of(text, NODE_BASE)) == {
        ("iptables.service_without_endpoints_chain", "ns1/svc1:p80")}


def test_deleted_last_endpoint_of_two_makes_the_ladder_unfair() -> None:
    text = without(OVERALL, r"KUBE-SEP-C6EBXVWJJZMIWKLZ", count=4)
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.probability_inconsistent", "ns4/svc4:p80")}


def test_wrong_probability_is_inconsistent() -> None:
    text = OVERALL.replace("--probability 0.50000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC",
                           "--probability 0.90000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC")
    (f,) = [f for f in run_checks(snap_of(text, NODE_BASE)) if f.id == "iptables.probability_inconsistent"]
    assert f.evidence["probabilities"] == [0.9, None] and f.evidence["expected"] == [0.5, None]


def test_thirds_as_iptables_save_prints_them_are_fair() -> None:
    name = "v1.28_TestTerminatingEndpointsTrafficPolicyLocal_ready_endpoints_exist.legacy-save.rules"
    text = (IPT / name).read_text()
    assert "--probability 0.33333333349" in text
    assert iptables_problems(snap_of(text, NODE_BASE)) == set()


def test_missing_chain_is_chain_missing_and_its_hooks_are_not_reported_twice() -> None:
    text = without(OVERALL, r"^:KUBE-POSTROUTING|^-A KUBE-POSTROUTING", count=4)
    base = without(NODE_BASE, r"-j KUBE-POSTROUTING")
    assert iptables_problems(snap_of(text, base)) == {("iptables.chain_missing", "nat/KUBE-POSTROUTING")}


def test_chain_missing_follows_the_kube_proxy_version() -> None:
    text = without(OVERALL, r"^:KUBE-PROXY-FIREWALL|^-A KUBE-PROXY-FIREWALL", count=2)  # declaration, one rule
    base = without(NODE_BASE, r"-j KUBE-PROXY-FIREWALL", count=3)
    assert iptables_problems(snap_of(text, base)) == {("iptables.chain_missing", "filter/KUBE-PROXY-FIREWALL")}
    old = healthy(iptables=state(text, base))
    assert old.kube_proxy_http.data is not None
    old.kube_proxy_http.data.version = "v1.24.3"  # before KUBE-PROXY-FIREWALL existed
    assert iptables_problems(old) == set()


def test_rule_after_the_nodeports_jump() -> None:
    extra = '*nat\n-A KUBE-SERVICES -d 10.9.9.9/32 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n'
    assert iptables_problems(snap_of(OVERALL, NODE_BASE, extra)) == {
        ("iptables.nodeports_not_last", "nat/KUBE-SERVICES")}


def test_jump_to_a_missing_chain_is_dangling() -> None:
    text = OVERALL.replace(":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n", "")
    problems = iptables_problems(snap_of(text, NODE_BASE))
    assert ("iptables.dangling_jump", "nat/KUBE-SERVICES") in problems


def test_kube_chains_in_both_backends() -> None:
    snap = snap_of(OVERALL, NODE_BASE, kube_chains={"legacy": 40, "nft": 3})
    (f,) = [f for f in run_checks(snap) if f.id == "iptables.backend_mismatch"]
    assert (f.severity, f.evidence["legacy"], f.evidence["nft"]) == ("warning", 40, 3)


def test_userspace_portals_are_reported() -> None:
    portals = (DATA / "iptables" / "userspace-portals.rules").read_text()
    assert iptables_problems(snap_of(OVERALL, NODE_BASE, portals)) == {
        ("iptables.userspace_rules_present", "nat/KUBE-PORTALS-CONTAINER,KUBE-PORTALS-HOST")}


def test_unreferenced_pre_1_24_chain_is_info_only() -> None:
    snap = snap_of(OVERALL, NODE_BASE, (DATA / "iptables" / "pre-1.24-xlb.rules").read_text())
    (f,) = [f for f in run_checks(snap) if f.id == "iptables.legacy_chains_present"]
    assert (f.severity, f.evidence["referenced"]) == ("info", 0)
    assert iptables_problems(snap) == set()


def test_unparsed_line_is_info_with_the_line() -> None:
    snap = snap_of(OVERALL.replace("COMMIT\n*filter", "this is not iptables\nCOMMIT\n*filter"), NODE_BASE)
    (f,) = [f for f in run_checks(snap) if f.id == "iptables.rules_unparsed"]
    assert f.severity == "info" and "this is not iptables" in f.evidence["first"]
    assert iptables_problems(snap) == set()


def test_other_proxy_modes_are_not_judged_by_kube_proxys_iptables_chains() -> None:
    ipvs = Source("kube_proxy", ok=True, data=kube_proxy_process("--proxy-mode=ipvs"))
    snap = healthy(kube_proxy=ipvs, iptables=state("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"))
    assert iptables_problems(snap) == set()


def test_no_kube_proxy_no_chain_findings() -> None:
    snap = healthy(kube_proxy=absent("kube_proxy"), iptables=state(""))
    assert {f[0] for f in iptables_problems(snap)} == set()


def test_failed_read_is_source_failed_not_missing_rules() -> None:
    assert found(healthy(iptables=failed("iptables", "iptables-nft-save did not finish in time (killed)"))) == {
        ("agent.source_failed", "iptables")}


def test_snapshot_with_iptables_round_trips_through_json() -> None:
    snap = snap_of(without(OVERALL, r"-A KUBE-SEP-UKSFD7AGPMPPLUHC .*DNAT"), NODE_BASE)
    again = Snapshot.from_json(snap.to_json())
    assert again.iptables.data == snap.iptables.data
    assert found(again) == found(snap) == {("iptables.endpoint_chain_broken", "ns4/svc4:p80")}


def test_ipv6_with_only_kubelets_chains_is_not_judged() -> None:
    kubelets = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n"
    v4 = state(OVERALL, NODE_BASE)
    st = dataclasses.replace(v4, rulesets=(*v4.rulesets, parse_text(kubelets, family=6)))
    assert iptables_problems(healthy(iptables=st)) == set()
    # kube-proxy serves IPv6 too: its skeleton must be whole there
    st = dataclasses.replace(v4, rulesets=(*v4.rulesets, parse_text(kubelets + "*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n",
                                                                    family=6)))
    assert ("iptables.chain_missing", "nat/KUBE-POSTROUTING") in iptables_problems(healthy(iptables=st))


def test_pre_1_24_chain_still_jumped_to_is_a_warning() -> None:
    xlb = (DATA / "iptables" / "pre-1.24-xlb.rules").read_text()
    jump = "*nat\n-A KUBE-POSTROUTING -s 10.9.9.9/32 -j KUBE-XLB-GNZBNJ2PO5MGZ6GT\nCOMMIT\n"
    snap = snap_of(OVERALL, NODE_BASE, xlb, jump)
    assert iptables_problems(snap) == {("iptables.legacy_chains_present", "nat/KUBE-XLB-GNZBNJ2PO5MGZ6GT")}


# issue 17: what the rules alone show --------------------------------------------------------------------------

def test_flushed_service_chain_still_jumped_to_is_without_endpoints() -> None:
    """`iptables -t nat -F KUBE-SVC-...`: no rule is left to make a ladder of, but KUBE-SERVICES still sends
    ns1/svc1's ClusterIP there."""
    text = without(OVERALL, r"^-A KUBE-SVC-XPGD46QRK7WJZT7O", count=2)
    assert iptables_problems(snap_of(text, NODE_BASE)) == {
        ("iptables.service_without_endpoints_chain", "ns1/svc1:p80")}


def test_missing_jump_to_kube_nodeports_is_critical_and_names_the_node_ports() -> None:
    text = without(OVERALL, r"^-A KUBE-SERVICES .*-j KUBE-NODEPORTS")
    (f,) = [f for f in run_checks(snap_of(text, NODE_BASE)) if f.id.startswith("iptables.nodeports")]
    assert (f.id, f.severity) == ("iptables.nodeports_jump_missing", "critical")
    assert f.evidence["node_ports"] == "ns2/svc2:p80 :3001, ns3/svc3:p80 :3003, ns5/svc5:p80 :3002"
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.nodeports_jump_missing", "nat/KUBE-SERVICES")}


@pytest.mark.parametrize(("pattern", "chain"), [(r"^-A KUBE-MARK-MASQ ", "nat/KUBE-MARK-MASQ"),
                                                 (r"^-A KUBE-POSTROUTING .*-j MASQUERADE", "nat/KUBE-POSTROUTING")])
def test_deleted_masquerade_rule_is_masquerade_missing(pattern: str, chain: str) -> None:
    text = without(OVERALL, pattern)
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.masquerade_missing", chain)}


def test_probability_rung_deleted_beside_its_affinity_twin() -> None:
    """ClientIP affinity: ns5/svc5's one endpoint keeps its `--rcheck` rule, but new clients meet no ladder."""
    text = without(OVERALL, r"^-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment \"[^\"]*\" -j KUBE-SEP-")
    (f,) = [f for f in run_checks(snap_of(text, NODE_BASE)) if f.id == "iptables.affinity_without_ladder"]
    assert (f.service, f.severity, f.evidence["ladder"]) == ("ns5/svc5:p80", "critical", 0)
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.affinity_without_ladder", "ns5/svc5:p80")}


def test_deleted_canary_is_canary_missing() -> None:
    base = NODE_BASE.replace("*nat\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n",
                             "*nat\n:KUBE-KUBELET-CANARY - [0:0]\n")
    assert iptables_problems(snap_of(OVERALL, base)) == {("iptables.canary_missing", "nat/KUBE-PROXY-CANARY")}


def test_forward_policy_drop_needs_kube_forwards_accepts() -> None:
    text = without(OVERALL, r"^-A KUBE-FORWARD .*--mark 0x4000/0x4000 -j ACCEPT")
    assert iptables_problems(snap_of(text, NODE_BASE)) == set()  # FORWARD accepts anyway
    dropping = text.replace(":FORWARD ACCEPT [0:0]", ":FORWARD DROP [0:0]")
    assert dropping != text
    assert iptables_problems(snap_of(dropping, NODE_BASE)) == {("iptables.forward_accept_missing", "filter/FORWARD")}
    assert iptables_problems(snap_of(OVERALL.replace(":FORWARD ACCEPT [0:0]", ":FORWARD DROP [0:0]"),
                                     NODE_BASE)) == set()


def test_deleted_localnet_block_is_localnet_block_missing() -> None:
    text = without(OVERALL, r"^-A KUBE-FIREWALL .*block incoming localnet")
    assert iptables_problems(snap_of(text, NODE_BASE)) == {("iptables.localnet_block_missing", "filter/KUBE-FIREWALL")}
