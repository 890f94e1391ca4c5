"""End to end: a broken node, `svcdoctor serve` on it, a real Prometheus scraping it with the shipped
scrape job and rules; the alert fires with the right labels, the node is repaired, the alert resolves.

Each scenario says how to break the node, which alert must fire with which labels, and how to
repair it. A new finding gets its end-to-end test by adding a Scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.prom import Prometheus
from tests.testbed import FIXTURES, Node, require

PORT = 9100  # the default: a fresh netns has its own loopback, so nothing else holds it
ALERT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Scenario:
    name: str
    alert: str
    labels: dict[str, str]  # expected on the firing alert, beyond job/instance/node/pod
    break_node: Callable[[Node], None]
    repair: Callable[[Node], None]
    serve_args: Callable[[Node], list[str]] = field(default=lambda node: [])


def no_kube_proxy(node: Node) -> None:
    node.healthy_basics()


def start_kube_proxy(node: Node) -> None:
    node.healthy_kube_proxy()


OVERALL = "v1.3x_TestOverallIPTablesRules"


def fixture(suffix: str) -> Path:
    return FIXTURES / "iptables" / (OVERALL + suffix)

DISPATCH_SVC1 = '-m comment --comment "ns1/svc1:p80 cluster IP"'


def load_fixture(node: Node, *, drop: str | None = None) -> None:
    rules = fixture(".legacy-save.rules").read_text()
    if drop is not None:
        rules = "\n".join(line for line in rules.splitlines() if drop not in line) + "\n"
    node.iptables_restore(rules)
    node.iptables_restore((FIXTURES / "iptables" / "node-base.rules").read_text(), noflush=True)


def svc1_dispatch_missing(node: Node) -> None:
    node.healthy_kube_proxy()
    node.nfacct_for_kube_proxy()
    load_fixture(node, drop=DISPATCH_SVC1)


SCENARIOS = [
    Scenario("kube-proxy-not-running", "SvcdoctorKubeProxyDown",
             {"id": "kube_proxy.not_running", "severity": "critical"},
             break_node=no_kube_proxy, repair=start_kube_proxy),
    Scenario("service-dispatch-rule-removed", "SvcdoctorServiceRulesMissing",
             {"id": "rules.service_missing", "severity": "critical", "service": "ns1/svc1:p80"},
             break_node=svc1_dispatch_missing, repair=load_fixture,
             serve_args=lambda node: ["--cluster-state", str(fixture(".cluster.json"))]),
]


def agent_reports(node: Node, scenario: Scenario) -> bool:
    _, doc = node.check(*scenario.serve_args(node))
    return any(f["id"] == scenario.labels["id"] and f.get("service") == scenario.labels.get("service")
               for f in doc["findings"])


@pytest.mark.netns
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_alert_fires_with_node_and_service_then_resolves(node: Node, tmp_path: Path, scenario: Scenario) -> None:
    require(FIXTURES.exists(), f"needs the kube-proxy fixtures at {FIXTURES}")
    scenario.break_node(node)
    assert agent_reports(node, scenario), f"the broken node must give {scenario.labels['id']}"
    node.serve("--interval", "1s", *scenario.serve_args(node), port=PORT)
    prom = Prometheus(node, tmp_path / "prometheus", target=f"127.0.0.1:{PORT}")

    (alert,) = prom.wait_for(lambda: prom.firing(scenario.alert), ALERT_TIMEOUT, f"{scenario.alert} to fire")
    want = {"alertname": scenario.alert, "job": "svcdoctor", "instance": f"127.0.0.1:{PORT}",
            "node": "test-node", "pod": "svcdoctor-x7k2p", **scenario.labels}
    assert alert["labels"] == want
    assert "test-node" in alert["annotations"]["description"]
    if "service" in scenario.labels:
        assert scenario.labels["service"] in alert["annotations"]["description"]
        # the recording rule: out of sync on one node (this one)
        counts = prom.query("service:svcdoctor_out_of_sync_nodes:count")
        assert [(c["metric"]["service"], c["value"][1]) for c in counts] == [(scenario.labels["service"], "1")]

    scenario.repair(node)
    prom.wait_resolved(scenario.alert, ALERT_TIMEOUT)


@pytest.mark.netns
def test_agent_down_fires_when_the_agent_stops_answering(node: Node, tmp_path: Path) -> None:
    node.healthy_kube_proxy()
    agent = node.serve("--interval", "1s", port=PORT)
    prom = Prometheus(node, tmp_path / "prometheus", target=f"127.0.0.1:{PORT}")
    prom.wait_for(lambda: prom.query('up{job="svcdoctor"} == 1'), ALERT_TIMEOUT, "a successful scrape")
    assert prom.firing("SvcdoctorAgentDown") == []

    agent.kill()
    agent.wait(timeout=10)
    (alert,) = prom.wait_for(lambda: prom.firing("SvcdoctorAgentDown"), ALERT_TIMEOUT, "SvcdoctorAgentDown")
    labels: dict[str, Any] = alert["labels"]
    assert (labels["node"], labels["severity"], labels["instance"]) == ("test-node", "warning", f"127.0.0.1:{PORT}")

    node.serve("--interval", "1s", port=PORT)
    prom.wait_resolved("SvcdoctorAgentDown", ALERT_TIMEOUT)
