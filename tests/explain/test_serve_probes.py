"""`serve` on a real node: the continuous probes (endpoints on this node, the cluster DNS, kubernetes.default)
as findings and metrics, `GET /explain`, and `--no-probes`."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.explain_bed import Bed, build
from tests.testbed import Node

BASE = "http://127.0.0.1:9100"


def test_continuous_probes_find_a_ready_endpoint_not_listening(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(listening=False))
    node.serve("--interval", "60s", "--cluster-state", str(state))
    findings, metrics, explained, bad = node.http(f"{BASE}/findings?id=probe.endpoint", f"{BASE}/metrics",
                                                  f"{BASE}/explain?service=default/web", f"{BASE}/explain?service=x")
    found = {(f["id"], f["service"], f["evidence"]["endpoint"]) for f in json.loads(findings["body"])["findings"]}
    # 10.244.0.1:6443 is kubernetes' endpoint (the node itself, no API server here): also not listening
    assert found == {("probe.endpoint_not_answering", "default/web:http", "10.244.0.10:8080"),
                     ("probe.endpoint_not_answering", "default/kubernetes:https", "10.244.0.1:6443")}
    fams = {f.name: f for f in text_string_to_metric_families(metrics["body"])}
    hist = {s.labels["kind"] for s in fams["svcdoctor_probe_duration_seconds"].samples}
    assert hist == {"endpoint", "dns", "kubernetes"}
    failures = {s.labels["kind"]: s.value for s in fams["svcdoctor_probe_failures"].samples}
    assert failures == {"endpoint": 2, "dns": 0, "kubernetes": 1}
    doc = json.loads(explained["body"])
    assert explained["status"] == 200 and doc["first_problem"] == "pods"
    assert bad["status"] == 400


def test_no_probes_sends_nothing(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(listening=False))
    node.serve("--interval", "60s", "--cluster-state", str(state), "--no-probes")
    findings, explained = node.http(f"{BASE}/findings?id=probe.", f"{BASE}/explain?service=default/web")
    assert json.loads(findings["body"])["findings"] == []
    doc = json.loads(explained["body"])
    assert {s["id"]: s["status"] for s in doc["steps"]}["by_ip"] == "skipped"
    assert not (tmp_path / "dns-count").exists()
