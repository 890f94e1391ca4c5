"""kube-proxy's failure signals end to end: `svcdoctor serve` in a node's netns scrapes the stand-in kube-proxy
metrics endpoint (tests/standins/kube_proxy_http.py, standing in for kube-proxy's :10249 in each version's
format) across reads; a counter that rises between reads is a finding and a metric, a steady one is not."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.testbed import Node

BASE = "http://127.0.0.1:9100"


def _after_two_checks(node: Node) -> tuple[dict[str, Any], dict[str, Any]]:
    """/findings and the parsed /metrics once the agent has completed at least three checks (two with a
    previous read to compare with)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        findings, metrics = node.http(f"{BASE}/findings", f"{BASE}/metrics")
        fams = {f.name: f for f in text_string_to_metric_families(metrics["body"])}
        runs = {s.labels["result"]: s.value for s in fams["svcdoctor_check_runs"].samples
                if s.name.endswith("_total")}
        if runs.get("completed", 0) >= 3:
            return json.loads(findings["body"]), fams
        time.sleep(0.2)  # polling the agent's own progress, bounded by the deadline
    raise AssertionError("svcdoctor did not complete three checks")


@pytest.mark.parametrize(("version", "mode", "kind", "family"), [
    ("v1.31.2", "iptables", "iptables_restore", ""), ("v1.33.1", "nftables", "nftables_sync", "IPv4")])
def test_rising_failure_counter_is_a_finding_and_a_metric(node: Node, version: str, mode: str, kind: str,
                                                          family: str) -> None:
    node.healthy_kube_proxy("--version", version, "--mode", mode, "--failures-per-scrape", "1")
    node.serve("--interval", "1s", "--no-api")
    doc, fams = _after_two_checks(node)
    (f,) = [f for f in doc["findings"] if f["id"] == "kube_proxy.sync_failures"]
    assert f["evidence"]["rose_by"] == 1 and f["subject"] == "test-node"
    samples = {(s.labels["kind"], s.labels["ip_family"]): s.value
               for s in fams["svcdoctor_kube_proxy_sync_failures"].samples if s.name.endswith("_total")}
    assert samples[(kind, family)] >= 2
    exported = {s.labels["metric"]: s.value for s in fams["svcdoctor_kube_proxy_metric_exported"].samples}
    other = "nftables_sync_failures_total" if mode == "iptables" else "iptables_restore_failures_total"
    assert exported[f"kubeproxy_sync_proxy_rules_{kind}_failures_total"] == 1
    assert exported[f"kubeproxy_sync_proxy_rules_{other}"] == 0  # not exported in this mode: said, not zero


def test_steady_kube_proxy_gives_no_signal_finding(node: Node) -> None:
    node.healthy_kube_proxy("--version", "v1.33.1", "--dual-stack")
    node.serve("--interval", "1s", "--no-api")
    doc, fams = _after_two_checks(node)
    assert not [f for f in doc["findings"] if f["id"].startswith(("kube_proxy.", "kube_proxy_log."))
                and f["severity"] != "info"]
    pending = {s.labels["kind"]: s.value for s in fams["svcdoctor_kube_proxy_changes_pending"].samples}
    assert pending == {"endpoint": 0, "service": 0}
