"""The agent works with exactly the DaemonSet's capabilities, and each of them is needed.

A container runtime gives a root process the capabilities in its bounding set and nothing else, with
no_new_privs when allowPrivilegeEscalation is false. `setpriv` builds the same: the bounding set
from deploy/daemonset.yaml, no inheritable capabilities, no_new_privs. kube-proxy and kubelet are
stand-ins with full capabilities (as the real ones run), in their own mount namespaces, so their
config files are readable only through /proc/<pid>/root.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import daemonset_capabilities
from tests.testbed import FIXTURES, PY, REPO, Node, require, require_tool

CAPS = daemonset_capabilities()
RULES = FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.legacy-save.rules"


def confined(node: Node, caps: list[str], *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in the node as root holding only `caps` (setpriv: bounding set, no_new_privs)."""
    require_tool("setpriv")
    bounding = ",".join(["-all", *(f"+{c}" for c in caps)])
    return subprocess.run(node.argv("setpriv", "--bounding-set", bounding, "--inh-caps", "-all",
                                    "--no-new-privs", "--", *cmd),
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def effective_caps(node: Node, caps: list[str]) -> set[str]:
    out = confined(node, caps, "capsh", "--print").stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("Current:"))  # "Current: cap_a,cap_b=ep"
    names, _, flags = line.removeprefix("Current:").strip().partition("=")
    assert flags == "ep"  # effective and permitted, nothing inheritable
    return {c.removeprefix("cap_") for c in names.split(",") if c}


@pytest.fixture
def kube_node(node: Node) -> Node:
    """A node with kube-proxy, kubelet, iptables rules in both backends and an nftables table."""
    require(RULES.exists(), f"needs the kube-proxy fixtures at {FIXTURES}")
    node.healthy_kube_proxy()
    node.nfacct_for_kube_proxy()
    rules = RULES.read_text()
    node.iptables_restore(rules, "legacy")
    node.iptables_restore(rules, "nft")
    node.nft_load("table ip kube-proxy {\n chain services {\n }\n}\n")
    return node


def check_confined(node: Node, caps: list[str], tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    snapshot = tmp_path / f"snapshot-{'-'.join(caps)}.json"
    res = confined(node, caps, PY, "-m", "agent", "check", "--json", "--node-name", "test-node",
                   "--snapshot-out", str(snapshot))
    assert res.returncode in (0, 1), res.stderr
    return json.loads(res.stdout), json.loads(snapshot.read_text())


def test_setpriv_gives_exactly_the_daemonset_capabilities(node: Node) -> None:
    require_tool("capsh")
    assert effective_caps(node, CAPS) == set(CAPS) == {"net_admin", "net_raw", "sys_ptrace"}


def test_agent_reads_everything_with_the_daemonset_capabilities(kube_node: Node, tmp_path: Path) -> None:
    doc, snap = check_confined(kube_node, CAPS, tmp_path)
    assert [f for f in doc["findings"] if f["id"] == "agent.source_failed"] == []
    assert {s["name"] for s in doc["sources"] if not s["ok"]} == set()
    # kube-proxy's config lives only in its own mount namespace: read through /proc/<pid>/root
    kp = snap["kube_proxy"]["data"]
    assert kp["config"]["clusterCIDR"] == "10.244.0.0/16" and kp["config_error"] is None
    assert kp["env_path"]  # /proc/<pid>/environ
    assert snap["kubelet"]["data"]["config"] is not None
    assert snap["links"]["ok"] and "lo" in snap["links"]["data"]["interfaces"]  # rtnetlink
    # the iptables source read the fixture's rules (a raw-socket/netlink read, not just "absent")
    assert snap["iptables"]["ok"] and not snap["iptables"]["absent"]
    assert "KUBE-SVC-XPGD46QRK7WJZT7O" in json.dumps(snap["iptables"]["data"])


@pytest.mark.parametrize("cmd", [("iptables-legacy-save",), ("iptables-nft-save",), ("nft", "list", "ruleset")],
                         ids=lambda c: c[0] if c[0] != "nft" else "nft-list-ruleset")
def test_rule_dumps_work_with_the_daemonset_capabilities(kube_node: Node, cmd: tuple[str, ...]) -> None:
    res = confined(kube_node, CAPS, *cmd)
    assert res.returncode == 0, res.stderr
    assert "KUBE-SVC-XPGD46QRK7WJZT7O" in res.stdout or "table ip kube-proxy" in res.stdout


# What breaks when one capability is taken away: each is needed.
WITHOUT = {
    "net_admin": ("iptables-nft-save",),
    "net_raw": ("iptables-legacy-save",),
}


@pytest.mark.parametrize("cap", sorted(WITHOUT))
def test_rule_dump_fails_without(kube_node: Node, cap: str) -> None:
    res = confined(kube_node, [c for c in CAPS if c != cap], *WITHOUT[cap])
    assert res.returncode != 0
    assert "ermission denied" in res.stderr or "not permitted" in res.stderr


def test_agent_cannot_read_kube_proxy_without_sys_ptrace(kube_node: Node, tmp_path: Path) -> None:
    doc, _ = check_confined(kube_node, [c for c in CAPS if c != "sys_ptrace"], tmp_path)
    failed = {f["subject"]: f["evidence"]["error"] for f in doc["findings"] if f["id"] == "agent.source_failed"}
    assert "CAP_SYS_PTRACE" in failed["kube_proxy"]
    assert "kube_proxy.not_running" not in {f["id"] for f in doc["findings"]}  # a failed read is not a fault


def test_every_daemonset_capability_is_shown_necessary() -> None:
    assert set(WITHOUT) | {"sys_ptrace"} == set(CAPS)


def test_a_non_root_user_with_the_same_capability_list_cannot_read_the_rules(kube_node: Node) -> None:
    """Why the DaemonSet runs as root: for a non-root user the runtime puts the capabilities in the
    bounding set only (no ambient set from a Pod spec), and exec drops them."""
    require_tool("setpriv")
    bounding = ",".join(["-all", *(f"+{c}" for c in CAPS)])
    res = subprocess.run(kube_node.argv("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                        "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--",
                                        "iptables-nft-save"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "ermission denied" in res.stderr or "not permitted" in res.stderr, res.stderr
