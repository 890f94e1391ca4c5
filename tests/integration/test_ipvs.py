"""IPVS mode on real netns state: the kube-ipvs0 dummy interface with kube-proxy's VIPs, and kube-proxy's
KUBE-* ipsets (restored from `tests/data/ipvs/overall.ipset-save.txt`). This kernel has no ip_vs, which
is itself a real case: kube-proxy configured for IPVS on a node whose kernel cannot do it. The virtual
servers are tested on netlink messages in tests/checks/test_ipvs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.model import Snapshot
from tests.testbed import DATA, Node, by_id, problems

IPVS_DATA = DATA / "ipvs"

pytestmark = pytest.mark.netns


def ours(doc: dict[str, object]) -> set[tuple[str, str]]:
    """Warning/critical findings of the mode, IPVS and nftables checks (iptables mode's own checks on
    the IPVS-mode iptables rules are the iptables tests' business)."""
    return {p for p in problems(doc) if p[0].startswith(("kube_proxy.", "ipvs.", "nftables."))}  # type: ignore[arg-type]


def ipvs_leftovers(node: Node) -> list[str]:
    addrs = (IPVS_DATA / "overall.kube-ipvs0.txt").read_text().split()
    # kube-proxy makes kube-ipvs0 a dummy; this kernel has no dummy driver, so a bridge (also a link
    # that only holds addresses here) stands in for it: the reader looks it up by name and reads addresses.
    node.sh("ip", "link", "add", "kube-ipvs0", "type", "bridge")
    for a in addrs:
        node.sh("ip", "addr", "add", f"{a}/32", "dev", "kube-ipvs0")
    node.sh("ipset", "restore", input=(IPVS_DATA / "overall.ipset-save.txt").read_text())
    return addrs


def start(node: Node, mode: str) -> None:
    node.healthy_basics()
    node.kube_proxy(f"--proxy-mode={mode}", "--hostname-override=test-node")
    node.kubelet(config=DATA / "kubeadm" / "kubelet-config.yaml")
    node.kube_proxy_http("--mode", mode)


def test_ipvs_mode_without_ip_vs_says_why_and_the_agent_carries_on(node: Node, tmp_path: Path) -> None:
    addrs = ipvs_leftovers(node)
    start(node, "ipvs")
    snap_file = tmp_path / "snap.json"
    _, doc = node.check("--no-api", "--snapshot-out", str(snap_file))
    assert ours(doc) == {("ipvs.kernel_unavailable", "test-node")}
    (f,) = by_id(doc, "ipvs.kernel_unavailable")
    assert "ip_vs is not loaded" in f["evidence"]["why"]
    assert by_id(doc, "kube_proxy.mode")[0]["evidence"]["mode"] == "ipvs"
    assert all(s["ok"] for s in doc["sources"] if s["name"] in ("ipvs", "nftables", "kube_proxy", "links"))
    ipvs = Snapshot.from_json(snap_file.read_text()).ipvs.data
    assert ipvs is not None
    assert (ipvs.interface_present, ipvs.interface_addresses) == (True, sorted(addrs))
    assert sorted(ipvs.ipsets["KUBE-CLUSTER-IP"]) == [f"172.30.0.4{i},tcp:80" for i in range(1, 7)]
    assert sorted(ipvs.ipsets["KUBE-NODE-PORT-TCP"]) == ["3001", "3002", "3003"]
    assert ipvs.ipset_error is None


def test_ipvs_mode_without_kube_ipvs0(node: Node) -> None:
    start(node, "ipvs")
    _, doc = node.check("--no-api")
    # the kernel is the first thing missing; kube-ipvs0 is judged once IPVS itself is there
    assert ours(doc) == {("ipvs.kernel_unavailable", "test-node")}


def test_ipvs_leftovers_in_iptables_mode_are_stale_not_a_missing_kernel(node: Node) -> None:
    ipvs_leftovers(node)
    start(node, "iptables")
    _, doc = node.check("--no-api")
    assert ours(doc) == {("kube_proxy.stale_mode_rules", "test-node")}
    (f,) = by_id(doc, "kube_proxy.stale_mode_rules")
    assert (f["evidence"]["mode"], f["evidence"]["mode_left"], f["evidence"]["evidence_left"]) == (
        "iptables", "ipvs", "kube-ipvs0")
    assert json.dumps(doc)
