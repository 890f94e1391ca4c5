"""The derivation step: views equal a fresh derivation's; the last run's are taken over only for the
very same (immutable) RuleSet or ClusterState object."""

from __future__ import annotations

from agent.checks.derive import derive
from agent.collect.iptables_parse import parse_text
from agent.kubeobjects import state_from_items
from agent.model.iptables import IptablesState
from agent.serial import to_jsonable
from tests.checks.test_rules import cluster_items
from tests.snapshots import healthy
from tests.testbed import FIXTURES

SAVE = (FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text()


def test_views_of_the_same_objects_are_taken_over_and_of_new_ones_derived() -> None:
    cluster = state_from_items(cluster_items(), "test-node", "t", 0)
    rs = parse_text(SAVE)
    snap = healthy(iptables=IptablesState("legacy", "t", (rs,)), cluster=cluster)
    first = derive(snap)
    again = derive(snap, first)
    assert again.iptables[0] is first.iptables[0] and again.expected is first.expected
    other = healthy(iptables=IptablesState("legacy", "t", (parse_text(SAVE),)),
                    cluster=state_from_items(cluster_items(), "test-node", "t", 0))
    fresh = derive(other, first)
    assert fresh.iptables[0] is not first.iptables[0] and fresh.expected is not first.expected
    assert to_jsonable(fresh) == to_jsonable(first) == to_jsonable(derive(other))
