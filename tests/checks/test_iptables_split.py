"""kube-proxy's rules split across the two iptables backends (issue 17, item 4), offline: the programmed view
is the union of what both backends program (the kernel runs both), it is derived again only for new rule
sets, the snapshot keeps both through JSON, and backend_mismatch names which Services are where."""

from __future__ import annotations

from agent.checks.derive import derive
from agent.collect.iptables_parse import parse_text
from agent.model import Snapshot
from agent.model.iptables import IptablesState
from agent.serial import to_jsonable
from tests.checks.helpers import run_checks
from tests.integration.test_backend_split import LEGACY_HALF, NFT_HALF, without_services
from tests.snapshots import healthy
from tests.testbed import FIXTURES

IPT = FIXTURES / "iptables"
SAVE = (IPT / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text() + (IPT / "node-base.rules").read_text()


def split() -> IptablesState:
    return IptablesState("nft", "t", (parse_text(without_services(SAVE, LEGACY_HALF)),), {"legacy": 40, "nft": 40},
                         other_rulesets=(parse_text(without_services(SAVE, NFT_HALF)),))


def test_the_programmed_view_is_what_both_backends_program() -> None:
    whole = derive(healthy(iptables=IptablesState("legacy", "t", (parse_text(SAVE),))))
    one = derive(healthy(iptables=IptablesState("nft", "t", split().rulesets)))
    both = derive(healthy(iptables=split()))
    assert {p.service for p in one.iptables[0].ports} == {"ns4/svc4:p80", "ns5/svc5:p80", "ns6/svc6:p80"}
    assert to_jsonable(both.iptables[0].ports) == to_jsonable(whole.iptables[0].ports)


def test_the_union_is_derived_again_only_for_new_rule_sets() -> None:
    state = split()
    first = derive(healthy(iptables=state))
    assert derive(healthy(iptables=state), first).iptables[0] is first.iptables[0]
    newer = IptablesState("nft", "t", state.rulesets, state.kube_chains, other_rulesets=split().other_rulesets)
    assert derive(healthy(iptables=newer), first).iptables[0] is not first.iptables[0]


def test_both_backends_survive_a_snapshot_round_trip() -> None:
    snap = healthy(iptables=split())
    again = Snapshot.from_json(snap.to_json())
    assert again.iptables.data is not None and len(again.iptables.data.other_rulesets) == 1
    assert run_checks(again) == run_checks(snap)


def test_the_mismatch_names_the_services_of_each_backend() -> None:
    findings = run_checks(healthy(iptables=split()))
    (f,) = [f for f in findings if f.id == "iptables.backend_mismatch"]
    assert f.evidence["services_only_in_legacy"] == ["ns1/svc1:p80", "ns2/svc2:p80", "ns3/svc3:p80"]
    assert f.evidence["services_only_in_nft"] == ["ns4/svc4:p80", "ns5/svc5:p80"]
    assert "both backends together" in str(f.evidence["judged"])
    assert not [f for f in findings if f.severity == "critical"]
