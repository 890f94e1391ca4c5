"""`svcdoctor explain --all-nodes`: the caller asks every node's agent through the API server's pod proxy
(the stand-in kube-apiserver in tests/standins/ stands in for the real one's pod list and proxy) and
sees which nodes differ. Two real agents (`svcdoctor serve`) on two test nodes, one with a fault."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.explain_bed import Bed, build
from tests.standins.kube_apiserver import FakeApiServer, namespaced_pods, pod_proxy
from tests.testbed import PY, REPO, Node, require_netns


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    require_netns()
    a = Node(tmp_path / "a")
    b = Node(tmp_path / "b")
    try:
        yield a, b
    finally:
        a.destroy()
        b.destroy()


def _reachable(node: Node, octet: int) -> str:
    """A veth from this (root) netns into the node's, so the stand-in API server can reach its agent as the
    real one reaches a hostNetwork pod. Deleted with the node's netns."""
    outer, inner = f"svcd{secrets.token_hex(4)}", f"svci{secrets.token_hex(4)}"
    subprocess.run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", node.name], check=True)
    subprocess.run(["ip", "addr", "add", f"10.250.{octet}.1/30", "dev", outer], check=True)
    subprocess.run(["ip", "link", "set", outer, "up"], check=True)
    node.sh("ip", "addr", "add", f"10.250.{octet}.2/30", "dev", inner)
    node.sh("ip", "link", "set", inner, "up")
    return f"10.250.{octet}.2"


def _agent_pod(name: str, node: str, ip: str) -> dict[str, Any]:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"namespace": "svcdoctor", "name": name, "labels": {"app.kubernetes.io/name": "svcdoctor"}},
            "spec": {"nodeName": node, "hostNetwork": True, "containers": [
                {"name": "svcdoctor", "ports": [{"name": "metrics", "containerPort": 9100}]}]},
            "status": {"phase": "Running", "podIP": ip}}


def test_all_nodes_shows_the_node_that_differs(two_nodes: tuple[Node, Node], tmp_path: Path) -> None:
    good, bad = two_nodes
    octet = 1 + secrets.randbelow(60) * 4
    tmp_good, tmp_bad = tmp_path / "good", tmp_path / "bad"
    tmp_good.mkdir()
    tmp_bad.mkdir()
    good_ip, bad_ip = _reachable(good, octet), _reachable(bad, octet + 1)
    good.serve("--interval", "60s", "--cluster-state", str(build(good, tmp_good, Bed())))
    bad.serve("--interval", "60s", "--cluster-state", str(build(bad, tmp_bad, Bed(web_rules=False))))
    api = FakeApiServer([_agent_pod("svcdoctor-aaaaa", "node-a", good_ip),
                         _agent_pod("svcdoctor-bbbbb", "node-b", bad_ip),
                         _agent_pod("svcdoctor-ccccc", "node-c", "10.250.255.254")])  # gone: cannot be reached
    auth: list[str] = []
    api.routes += [namespaced_pods(api), pod_proxy(api, auth)]
    api.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig())
        res = subprocess.run([PY, "-m", "agent", "explain", "default/web", "--all-nodes", "--json", "--kubeconfig",
                              str(kubeconfig), "--source-timeout", "5s"], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
        text = subprocess.run([PY, "-m", "agent", "explain", "default/web", "--all-nodes", "--kubeconfig",
                               str(kubeconfig), "--source-timeout", "5s"], capture_output=True, text=True,
                              timeout=120, cwd=REPO)
    finally:
        api.stop()
    assert res.returncode == 1, res.stdout
    doc = json.loads(res.stdout)
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert (nodes["node-a"]["result"], nodes["node-b"]["result"], nodes["node-c"]["result"]) == (
        "ok", "problem", "error")
    assert nodes["node-b"]["first_problem"] == "rules"
    assert nodes["node-c"]["error"]  # an agent that cannot be reached is named, not dropped
    differing = {d["step"]: d["statuses"] for d in doc["differences"]}
    assert differing["rules"] == {"node-a": "ok", "node-b": "problem"}
    assert "service" not in differing  # what every node sees alike is not a difference
    assert set(auth) == {"Bearer test-token"}  # the caller's own credentials, on every proxied request
    assert "problem at rules" in text.stdout and "Steps that differ between nodes:" in text.stdout
