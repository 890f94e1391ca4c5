"""What `serve` keeps between runs (Report.as_served): the findings, the views and every source's status, not
the parsed rules. Asserted by reference, not by measuring memory: once a run is published, nothing the
runner or the served report holds keeps its RuleSets alive, and every reporter renders the same."""

from __future__ import annotations

import gc
import weakref

from prometheus_client import CollectorRegistry, generate_latest

from agent.collect import Collector
from agent.collect.base import CollectContext
from agent.collect.iptables_parse import parse_text
from agent.config import Config
from agent.model.iptables import IptablesState, RuleSet
from agent.model.report import Report
from agent.persistence import LagTracker
from agent.report.document import document
from agent.report.metrics import ReportCollector
from agent.runner import Runner
from tests.testbed import FIXTURES

RULES = (FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.rules").read_text()


def metrics_of(report: Report) -> bytes:
    registry = CollectorRegistry()
    registry.register(ReportCollector(lambda: report, lambda: (1, 0), LagTracker().snapshot))
    return generate_latest(registry)


def test_served_report_keeps_no_rules_and_renders_the_same() -> None:
    made: list[weakref.ref[RuleSet]] = []

    def read(ctx: CollectContext) -> IptablesState:  # a reader whose every read is new (the rules changed)
        rs = parse_text(RULES)
        made.append(weakref.ref(rs))
        return IptablesState(backend="legacy", backend_reason="test", rulesets=(rs,))

    runner = Runner(Config(node_name="test-node"), collectors=(Collector("iptables", read),))
    full = runner.run_once()
    served = full.as_served()
    assert served.served and not full.served
    assert metrics_of(served) == metrics_of(full)
    assert document(served) == document(full)
    assert b"svcdoctor_iptables_rules{" in metrics_of(served) and served.views is not None
    ports = served.views.iptables[0].ports
    assert ports and served.findings == full.findings
    (counted,) = served.snapshot.iptables.data.rulesets  # type: ignore[union-attr]
    assert all(not t.chains and t.rule_count for t in counted.tables.values())
    del full
    gc.collect()
    assert made[0]() is None  # neither the runner (its views name RuleSets weakly) nor the served report
    second = runner.run_once().as_served()
    assert second.views is not None and second.views.iptables[0].ports == ports  # derived again, the same


def test_unchanged_rules_keep_their_view() -> None:
    """While the reader hands back the same RuleSet, the views are taken over (the weak reference is alive)."""
    rs = parse_text(RULES)
    state = IptablesState(backend="legacy", backend_reason="test", rulesets=(rs,))
    runner = Runner(Config(node_name="test-node"), collectors=(Collector("iptables", lambda ctx: state),))
    first, second = runner.run_once().as_served(), runner.run_once().as_served()
    assert first.views is not None and second.views is not None
    assert second.views.iptables[0] is first.views.iptables[0]


def test_nftables_mode_served_keeps_chain_counts_and_the_views_are_taken_over() -> None:
    """nftables mode: the served report keeps each table's chain count, not its chains; while the reader hands
    back the same tables, the derived ports are taken over; new tables are derived again."""
    from tests.checks.test_nftables import OVERALL, items, nft_snapshot, state

    nft = state(items(OVERALL))
    snap = nft_snapshot(nft, with_cluster=OVERALL)
    runner = Runner(Config(node_name="test-node"), collectors=())
    first = runner.check(snap, frozenset())
    served = first.as_served()
    assert metrics_of(served) == metrics_of(first) and b"svcdoctor_nftables_chains{" in metrics_of(served)
    (table,) = served.snapshot.nftables.data.tables  # type: ignore[union-attr]
    assert not table.chains and table.chain_count() == len(nft.tables[0].chains) > 0
    assert first.views is not None and first.views.programmed is not None and first.views.programmed.ports
    again = runner.check(nft_snapshot(nft, with_cluster=OVERALL), frozenset())  # the same tables: taken over
    assert again.views is not None and again.views.nftables_ports is first.views.nftables_ports
    assert again.views.nftables_structure is first.views.nftables_structure and again.findings == first.findings
    fresh = runner.check(nft_snapshot(state(items(OVERALL)), with_cluster=OVERALL), frozenset())  # new tables
    assert fresh.views is not None and fresh.views.nftables_ports is not first.views.nftables_ports
    assert fresh.views.nftables_ports == first.views.nftables_ports and fresh.findings == first.findings


def test_nftables_programmed_view_without_load_balancer_ips_is_derived_once() -> None:
    """No LoadBalancer IP in the cluster state (here: none at all): the programmed view is the nftables ports."""
    from agent.checks.derive import derive
    from agent.checks.programmed_nftables import programmed_services
    from tests.checks.test_nftables import OVERALL, items, nft_snapshot, state

    nft = state(items(OVERALL))
    views = derive(nft_snapshot(nft))
    assert views.programmed is not None and views.nftables_ports
    assert views.programmed == programmed_services(nft)
    assert views.programmed.ports[0] is views.nftables_ports[0]
