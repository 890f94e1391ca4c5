"""`svcdoctor serve` in a node's netns: /metrics, /findings, /healthz, filters, load, port clash."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.testbed import PY, STANDINS, Node

BASE = "http://127.0.0.1:9100"


def _broken_node(node: Node) -> None:
    node.healthy_basics()
    node.sysctl("net.ipv4.ip_forward", 0)  # a finding without a Service
    node.kubelet()  # kube-proxy missing: kube_proxy.not_running


def _key(f: dict[str, object]) -> tuple[object, ...]:
    return (f["id"], f["severity"], f["subject"], f["service"], json.dumps(f["evidence"], sort_keys=True))


def test_metrics_parse_and_carry_findings_and_sources(node: Node) -> None:
    _broken_node(node)
    node.serve("--interval", "60s")
    (res,) = node.http(f"{BASE}/metrics")
    assert res["status"] == 200
    fams = {f.name: f for f in text_string_to_metric_families(res["body"])}
    findings = {(s.labels["id"], s.labels["severity"]): s.value for s in fams["svcdoctor_findings"].samples}
    assert findings[("kube_proxy.not_running", "critical")] == 1
    assert findings[("node.ip_forward_disabled", "critical")] == 1
    assert findings[("conntrack.table_full", "warning")] == 0  # every id present, 0 when quiet
    success = {s.labels["source"]: s.value for s in fams["svcdoctor_source_success"].samples}
    assert success["sysctl"] == 1 and success["kube_proxy"] == 1
    assert fams["svcdoctor_last_check_timestamp_seconds"].samples[0].value > 0
    assert "svcdoctor_conntrack_entries_limit" in fams
    labels = {k for fam in fams.values() for s in fam.samples for k in s.labels}
    assert not labels & {"ip", "endpoint", "pod"}


def test_findings_match_check_json_and_filters_work(node: Node) -> None:
    _broken_node(node)
    node.serve("--interval", "60s")
    _, cli = node.check()
    served, crit, by_prefix, none, svc = node.http(
        f"{BASE}/findings", f"{BASE}/findings?severity=critical", f"{BASE}/findings?id=node.",
        f"{BASE}/findings?severity=info&id=node.", f"{BASE}/findings?service=ns1/svc1:p80")
    doc = json.loads(served["body"])
    assert served["status"] == 200 and doc["schema"] == "svcdoctor/v1"
    assert set(doc) == set(cli)
    assert sorted(map(_key, doc["findings"])) == sorted(map(_key, cli["findings"]))
    assert {f["severity"] for f in json.loads(crit["body"])["findings"]} == {"critical"}
    assert {f["id"] for f in json.loads(by_prefix["body"])["findings"]} == {"node.ip_forward_disabled"}
    assert json.loads(none["body"])["findings"] == []
    assert json.loads(svc["body"])["findings"] == []


def test_bad_filters_are_400_with_json_errors(node: Node) -> None:
    node.healthy_basics()
    node.serve("--interval", "60s")
    bad_sev, unknown, missing, health = node.http(
        f"{BASE}/findings?severity=urgent", f"{BASE}/findings?colour=red", f"{BASE}/nope", f"{BASE}/healthz")
    assert bad_sev["status"] == 400 and "severity" in json.loads(bad_sev["body"])["error"]
    assert unknown["status"] == 400 and "colour" in json.loads(unknown["body"])["error"]
    assert missing["status"] == 404
    assert (health["status"], health["body"]) == (200, "ok\n")


def test_200_concurrent_requests_all_succeed(node: Node) -> None:
    node.healthy_basics()
    node.serve("--interval", "60s")
    res = node.sh(PY, str(STANDINS / "http_get.py"), "--concurrency", "200", f"{BASE}/metrics", f"{BASE}/findings",
                  f"{BASE}/healthz")
    assert json.loads(res.stdout) == {"ok": 200, "failed": 0, "errors": []}


def test_port_in_use_fails_at_start_naming_port_and_setting(node: Node) -> None:
    node.healthy_basics()
    holder = node.serve("--interval", "60s")  # holds 9100, as node_exporter would
    res = node.svcdoctor("serve", "--port", "9100", timeout=60)
    assert holder.poll() is None
    assert res.returncode == 2
    assert "9100" in res.stderr and "--port" in res.stderr and "SVCDOCTOR_PORT" in res.stderr


def test_serve_on_another_port(node: Node) -> None:
    node.healthy_basics()
    node.serve("--interval", "60s", port=19123)
    (res,) = node.http("http://127.0.0.1:19123/healthz")
    assert res["status"] == 200
