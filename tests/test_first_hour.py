"""What a new user meets in the first hour (issue 14): loaders that say what is wrong in one line, a text
report that reads, and the node name that does not match the cluster state."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main, setup_logging
from agent.collect.base import CollectError
from agent.collect.cluster import FileProvider
from agent.model import Snapshot, Source
from agent.model.cluster import ClusterState, NodeSpec
from tests.checks.helpers import run_checks
from tests.snapshots import healthy
from tests.testbed import FIXTURES

OVERALL = FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.cluster.json"


def items() -> list[dict[str, Any]]:
    return list(json.loads(OVERALL.read_text())["items"])


def write(tmp: Path, raw: Any) -> Path:
    path = tmp / "cluster.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("svcdoctor: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --cluster-state ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read cluster state"),
    ("{not json", "is not JSON"),
    ({"apiVersion": "v1", "kind": "List", "items": []}, "holds no Services"),
    ({"apiVersion": "v1", "kind": "List", "items": [{"metadata": {"name": "x"}}]}, "without a kind"),
    ({"apiVersion": "v1", "kind": "List", "items": [i for i in items() if i["kind"] == "Service"]},
     "no EndpointSlices"),
    ({"kind": "Service", "metadata": {"name": "x"}}, "not a kubectl `List`"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_unusable_cluster_state_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         content: Any, says: str) -> None:
    path = tmp_path / "missing.json" if content is None else write(tmp_path, content)
    assert main(["check", "--cluster-state", str(path), "--node-name", "test-node", "--no-api",
                 "--source-timeout", "5s"]) == 2
    assert says in one_line_error(capsys)


def test_malformed_object_names_the_object_not_a_python_error(tmp_path: Path) -> None:
    bad = items()
    svc = next(i for i in bad if i["kind"] == "Service")
    svc["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(CollectError) as exc:
        FileProvider(write(tmp_path, {"kind": "List", "items": bad}), "test-node").state()
    msg = str(exc.value)
    assert f"malformed Service {svc['metadata']['namespace']}/{svc['metadata']['name']}" in msg and "\n" not in msg


def test_in_serve_an_unusable_cluster_state_is_a_failed_source(tmp_path: Path) -> None:
    provider = FileProvider(write(tmp_path, {"kind": "List", "items": []}), "test-node")
    with pytest.raises(CollectError, match="holds no Services"):
        provider.state()  # the runner turns this into agent.source_failed, as for any collector


# --node-name that the cluster state does not know -----------------------------------------------------------
def test_node_missing_from_cluster_state_is_said_and_rules_are_not_compared(tmp_path: Path) -> None:
    renamed = items()
    for item in renamed:
        if item["kind"] == "Node":
            item["metadata"]["name"] = "other-node"
    state = FileProvider(write(tmp_path, {"kind": "List", "items": renamed}), "test-node").state()
    assert state.node is None and state.node_names == ["other-node"]
    snap = healthy(cluster=Source("cluster", ok=True, data=state))
    found = run_checks(snap)
    (f,) = [f for f in found if f.id == "api.node_not_found"]
    assert f.evidence["nodes"] == ["other-node"] and "named test-node (it names: other-node)" in f.message
    assert not [f for f in found if f.id.startswith("rules.")]
    assert not state.comparable


def test_node_present_gives_no_node_finding() -> None:
    state = ClusterState(origin="t", fetched_at=0, node=NodeSpec(name="test-node"), node_names=["test-node"])
    assert not [f for f in run_checks(healthy(cluster=Source("cluster", ok=True, data=state)))
                if f.id == "api.node_not_found"]


# the text report -------------------------------------------------------------------------------------------
def render(snap: Snapshot, tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    path = tmp / "snap.json"
    path.write_text(snap.to_json())
    main(["check", "--from", str(path), *extra])
    return capsys.readouterr().out


def test_without_cluster_state_the_report_says_structure_only(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = render(healthy(), tmp_path, capsys)
    assert "checked for structure only" in out and "--cluster-state" in out


def test_with_a_comparable_cluster_state_no_structure_only_note(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = ClusterState(origin="t", fetched_at=0, node=NodeSpec(name="test-node"))
    out = render(healthy(cluster=Source("cluster", ok=True, data=state)), tmp_path, capsys)
    assert "structure only" not in out


def test_info_findings_of_one_id_fold_into_a_count() -> None:
    from agent.catalogue import finding
    from agent.report.text import render as render_text
    from agent.runner import Report

    many = [finding("rules.reject_missing", f"ns/svc{i}:p", service=f"ns/svc{i}:p", severity="info", evidence={
        "kind": "ClusterIP", "address": f"10.0.0.{i}", "mode": "iptables"}) for i in range(200)]
    report = Report(snapshot=healthy(), findings=tuple(many), proxy_mode="iptables", generated_at=0)
    folded, listed = render_text(report), render_text(report, all_findings=True)
    assert folded.count("[rules.reject_missing]") == 1 and "200 findings" in folded and "--all" in folded
    assert listed.count("[rules.reject_missing]") == 200


def test_no_subject_printed_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.model import Sysctls

    out = render(healthy(sysctl=Sysctls(values={"net/ipv4/ip_forward": "0"})), tmp_path, capsys)
    for line in out.splitlines():
        if line.startswith("  ["):
            body = line.split("] ", 1)[1]
            head, _, rest = body.partition(": ")
            assert not rest.startswith(head + ":"), line


def test_unhealthy_kube_proxy_that_did_not_answer_reads_right() -> None:
    from agent.model import KubeProxyHTTP

    snap = healthy(kube_proxy_http=KubeProxyHTTP(healthz_url="http://127.0.0.1:10256/healthz",
                                                 healthz_error="connection refused"))
    (f,) = [f for f in run_checks(snap) if f.id == "kube_proxy.unhealthy"]
    assert "did not answer" in f.message and "answered no answer" not in f.message


# check --from --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mutate", "says"), [
    (lambda raw: raw["kubelet"].pop("ok"), "snapshot.kubelet.ok: missing"),
    (lambda raw: raw.__setitem__("taken_at", "yesterday"), "snapshot.taken_at: expected float"),
    (lambda raw: raw["sysctl"].__setitem__("data", ["x"]), "snapshot.sysctl.data: expected an object"),
    (lambda raw: raw.__setitem__("schema_version", 99), "schema_version 99"),
    (lambda raw: raw["kube_proxy"]["data"].__setitem__("argv", [[[[[["deep"]]]]]]), "snapshot.kube_proxy.data.argv"),
])
def test_bad_snapshot_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              mutate: Any, says: str) -> None:
    raw = json.loads(healthy().to_json())
    mutate(raw)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(raw))
    assert main(["check", "--from", str(path)]) == 2
    assert says in one_line_error(capsys)


def test_deeply_nested_snapshot_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "snap.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert main(["check", "--from", str(path)]) == 2
    assert "nested too deeply" in one_line_error(capsys)


# -v ---------------------------------------------------------------------------------------------------------
def test_verbose_shows_svcdoctor_steps_not_library_chatter() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging(verbose=True)
        assert logging.getLogger("svcdoctor.runner").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("pyroute2.netlink").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
