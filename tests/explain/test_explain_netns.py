"""`svcdoctor explain` on a real node: pods with real listeners, kube-proxy's rules, a DNS server pod.
Each case breaks one thing; explain must name the right first failing step (tests/explain_bed.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.explain_bed import Bed, build, explain
from tests.testbed import Node


def _steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def _ids(step: dict[str, Any]) -> list[str]:
    return [f["id"] for f in step["findings"]]


def test_healthy_service_passes_every_step(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed())
    code, doc = explain(node, state, "default/web")
    steps = _steps(doc)
    assert (code, doc["result"], doc["first_problem"]) == (0, "ok", None), doc
    assert {s["id"]: s["status"] for s in doc["steps"]} == {
        "service": "ok", "dns_service": "ok", "dns_any": "ok", "by_ip": "ok", "definition": "ok", "endpoints": "ok",
        "pods": "ok", "kube_proxy": "ok", "rules": "ok", "proxying": "ok", "hairpin": "ok"}
    assert steps["dns_service"]["evidence"]["answers"] == ["10.96.0.20"]
    assert steps["by_ip"]["evidence"]["probes"][0]["outcome"] == "connected"
    assert steps["definition"]["evidence"]["ports"][0]["resolved"] == {"web-1": 8080}


CASES = [
    # (knobs, first failing step, its first finding)
    pytest.param(Bed(endpoints=False, listening=False), "endpoints", "service.no_endpoints", id="no-endpoints"),
    pytest.param(Bed(web_selectorless=True, endpoints=False), "endpoints", "service.no_endpoints",
                 id="selectorless-without-slices"),
    pytest.param(Bed(selector={"app": "web", "tier": "backend"}, endpoints=False), "endpoints",
                 "service.selector_matches_nothing", id="selector-matches-nothing"),
    pytest.param(Bed(target_port="web", endpoints=False), "definition", "service.target_port_unresolved",
                 id="named-targetport-unresolved"),
    pytest.param(Bed(listening=False), "pods", "probe.endpoint_not_answering", id="pod-not-listening"),
    pytest.param(Bed(web_rules=False), "rules", "rules.service_missing", id="clusterip-rules-missing"),
    pytest.param(Bed(dns_knows_web=False), "dns_service", "dns.name_unresolved", id="dns-name-not-resolving"),
    pytest.param(Bed(restarts=4), "pods", "service.pods_restarting", id="pods-restarting"),
    pytest.param(Bed(resolv_nameserver="127.0.0.53"), "dns_any", "dns.resolv_conf_loop", id="resolv-conf-loop"),
]


@pytest.mark.parametrize(("bed", "step", "fid"), CASES)
def test_explain_names_the_first_failing_step(node: Node, tmp_path: Path, bed: Bed, step: str, fid: str) -> None:
    state = build(node, tmp_path, bed)
    code, doc = explain(node, state, "default/web:http")
    assert (code, doc["result"]) == (1, "problem")
    assert doc["first_problem"] == step, [(s["id"], s["status"], s["summary"]) for s in doc["steps"]]
    first = _steps(doc)[step]
    assert _ids(first)[0] == fid
    assert first["remedy"]  # the first problem carries its remedy


def test_selector_near_miss_names_the_differing_label(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(selector={"app": "web", "tier": "backend"}, endpoints=False))
    _, doc = explain(node, state, "default/web")
    (f,) = _steps(doc)["endpoints"]["findings"]
    assert f["evidence"]["near_misses"][0] == {"pod": "web-1", "differs": {"tier": {"want": "backend", "has": "fe"}}}


def test_pods_answer_but_clusterip_does_not_is_kube_proxys_side(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(web_rules=False))
    _, doc = explain(node, state, "default/web")
    steps = _steps(doc)
    assert steps["by_ip"]["status"] == "problem" and steps["by_ip"]["symptom"]
    assert steps["by_ip"]["evidence"]["verdict"] == "the pods answer but the ClusterIP does not: kube-proxy's side"
    assert steps["pods"]["status"] == "ok"


def test_pod_not_listening_is_the_applications_side(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(listening=False))
    _, doc = explain(node, state, "default/web")
    verdict = _steps(doc)["by_ip"]["evidence"]["verdict"]
    assert verdict == "the pods do not answer on targetPort either: the application's side"


def test_no_probes_sends_nothing_and_skips_the_probe_steps(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(dns_knows_web=False))
    code, doc = explain(node, state, "default/web", "--no-probes")
    steps = _steps(doc)
    assert code == 0 and {steps[s]["status"] for s in ("dns_service", "dns_any", "by_ip")} == {"skipped"}
    assert not (tmp_path / "dns-count").exists()  # the DNS server never saw a query


def test_text_output_reads_like_the_guide(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed(listening=False))
    res = node.svcdoctor("explain", "--node-name", "test-node", "--cluster-state", str(state), "default/web")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[2].startswith("  1. ok") and "Does the Service exist?" in lines[2]
    first = next(line for line in lines if line.startswith(">"))
    assert "PROBLEM" in first and "Are the Pods working?" in first
    assert any(line.strip().startswith("remedy:") for line in lines)


def test_unknown_service_is_a_problem_and_bad_argument_exit_2(node: Node, tmp_path: Path) -> None:
    state = build(node, tmp_path, Bed())
    code, doc = explain(node, state, "default/nope")
    assert code == 1 and doc["first_problem"] == "service"
    res = node.svcdoctor("explain", "--cluster-state", str(state), "not-a-service")
    assert res.returncode == 2 and "NAMESPACE/SERVICE" in res.stderr
