"""Issue 2 on real kernel state: a node in a private netns, stand-in kube-proxy/kubelet, svcdoctor inside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed import DATA, REPO, Node, by_id, ids, problems, require

KUBEADM = DATA / "kubeadm"


def healthy(node: Node) -> None:
    """A working node of a cluster with no Services: kube-proxy, kubelet, their endpoints and rules."""
    node.healthy_kube_proxy()
    node.kube_proxy_rules_without_services()


def test_no_kube_proxy_exits_1_and_reports_not_running(node: Node) -> None:
    node.healthy_basics()
    rc, doc = node.check()
    assert rc == 1
    assert "kube_proxy.not_running" in ids(doc, severities=("critical",))
    assert doc["schema"] == "svcdoctor/v1" and doc["node"] == "test-node"


def test_healthy_node_has_no_problems(node: Node) -> None:
    healthy(node)
    rc, doc = node.check()
    assert problems(doc) == set()
    assert rc == 0
    (mode,) = by_id(doc, "kube_proxy.mode")
    assert mode["evidence"] == {"mode": "iptables", "source": "default", "version": "v1.31.2"}
    assert all(s["ok"] for s in doc["sources"])


def test_kube_proxy_on_another_netns_does_not_count(node: Node, tmp_path: Path) -> None:
    other = Node(tmp_path)
    try:
        other.kube_proxy("--proxy-mode=ipvs")
        node.healthy_basics()
        _, doc = node.check()
        assert "kube_proxy.not_running" in ids(doc)
    finally:
        other.destroy()


def test_mode_from_flag(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy("--proxy-mode=ipvs", "--hostname-override=test-node")
    _, doc = node.check()
    (mode,) = by_id(doc, "kube_proxy.mode")
    assert (mode["evidence"]["mode"], mode["evidence"]["source"]) == ("ipvs", "flag --proxy-mode")
    assert doc["proxy_mode"] == "ipvs"


def test_mode_from_config_read_through_proc_root(node: Node, tmp_path: Path) -> None:
    cfg = tmp_path / "config.conf"
    cfg.write_text((KUBEADM / "kube-proxy-config.conf").read_text().replace('mode: ""', "mode: nftables"))
    node.healthy_basics()
    # The file exists only in the stand-in's mount namespace, at the path kubeadm's ConfigMap mount uses.
    node.kube_proxy(config=cfg)
    _, doc = node.check()
    (mode,) = by_id(doc, "kube_proxy.mode")
    assert mode["evidence"]["mode"] == "nftables"
    assert mode["evidence"]["source"] == "config /var/lib/kube-proxy/config.conf: mode"


def test_config_missing_in_kube_proxys_filesystem(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy("--config=/var/lib/kube-proxy/missing.conf")
    _, doc = node.check()
    (f,) = by_id(doc, "kube_proxy.config_unreadable")
    assert f["evidence"]["path"] == "/var/lib/kube-proxy/missing.conf"


def test_userspace_mode_unsupported(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy("--proxy-mode=userspace")
    _, doc = node.check()
    assert "kube_proxy.mode_unsupported" in ids(doc, severities=("critical",))


def test_kubelet_not_running(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy(config=KUBEADM / "kube-proxy-config.conf")
    node.kube_proxy_http()
    node.kube_proxy_rules_without_services()
    _, doc = node.check()
    assert problems(doc) == {("kubelet.not_running", "test-node")}


def test_healthz_503_is_unhealthy(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy(config=KUBEADM / "kube-proxy-config.conf")
    node.kubelet()
    node.kube_proxy_http("--status=503", "--last-sync-age=200", "--queued-age=150")
    node.kube_proxy_rules_without_services()
    _, doc = node.check()
    assert problems(doc) == {("kube_proxy.unhealthy", "test-node"), ("kube_proxy.sync_stale", "test-node")}
    (f,) = by_id(doc, "kube_proxy.unhealthy")
    assert f["evidence"]["status"] == 503 and f["evidence"]["url"] == "http://127.0.0.1:10256/healthz"


def test_healthz_on_configured_address(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy("--healthz-bind-address=127.0.0.1:20256", "--metrics-bind-address=127.0.0.1:20249")
    node.kubelet()
    node.kube_proxy_http("--healthz=127.0.0.1:20256", "--metrics=127.0.0.1:20249")
    node.kube_proxy_rules_without_services()
    _, doc = node.check()
    assert problems(doc) == set()


def test_kube_proxy_running_but_endpoints_refuse(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy()
    node.kubelet()
    _, doc = node.check()
    (f,) = by_id(doc, "kube_proxy.unhealthy")
    assert "refused" in f["evidence"]["detail"].lower()
    # metrics unreadable: the version is unknown, so a missing conntrack would only be a warning
    assert "kube_proxy.sync_stale" not in ids(doc)


def test_conntrack_binary_missing_in_kube_proxys_filesystem(node: Node) -> None:
    node.healthy_basics()
    # An image without conntrack-tools: /usr/sbin is empty in kube-proxy's mount namespace only.
    node.kube_proxy(hide=["/usr/sbin"], path="/usr/sbin:/usr/bin")
    node.kubelet()
    node.kube_proxy_http("--version=v1.30.4")
    _, doc = node.check()
    (f,) = by_id(doc, "conntrack.binary_missing")
    assert f["severity"] == "critical" and f["evidence"]["searched"] == ["/usr/sbin", "/usr/bin"]
    assert f["evidence"]["host_binary"] == "/usr/sbin/conntrack"


def test_conntrack_binary_not_needed_from_v1_32(node: Node) -> None:
    node.healthy_basics()
    node.kube_proxy(hide=["/usr/sbin"], path="/usr/sbin:/usr/bin")
    node.kubelet()
    node.kube_proxy_http("--version=v1.32.1")
    _, doc = node.check()
    assert "conntrack.binary_missing" not in ids(doc)


def test_conntrack_real_table_is_read(node: Node, tmp_path: Path) -> None:
    healthy(node)
    node.sh("conntrack", "-I", "-s", "10.1.1.1", "-d", "10.2.2.2", "-p", "udp", "--sport", "1000", "--dport", "53",
            "--timeout", "60")
    rc, _ = node.check("--snapshot-out", str(tmp_path / "snap.json"))
    ct = json.loads((tmp_path / "snap.json").read_text())["conntrack"]["data"]
    assert rc == 0
    assert ct["module_loaded"] and ct["count"] >= 1 and ct["max"] > 0
    assert ct["kube_proxy_binary"] == "/usr/sbin/conntrack"


@pytest.mark.parametrize(("sysctl", "fid"), [("net.ipv4.ip_forward", "node.ip_forward_disabled"),
                                             ("net.ipv4.conf.all.route_localnet", "node.route_localnet_disabled")])
def test_sysctl_turned_off_on_a_healthy_node(node: Node, sysctl: str, fid: str) -> None:
    healthy(node)
    node.sysctl(sysctl, 0)
    _, doc = node.check()
    assert problems(doc) == {(fid, "test-node")}


def test_bridge_nf_call_iptables_disabled_with_a_pod_on_a_bridge(node: Node) -> None:
    healthy(node)
    node.bridge("cni0")
    node.pod_on_bridge("cni0", "10.85.0.5", hairpin=True)
    _, doc = node.check()
    assert problems(doc) == set()
    node.sysctl("net.bridge.bridge-nf-call-iptables", 0)
    _, doc = node.check()
    assert problems(doc) == {("node.bridge_nf_call_iptables_disabled", "cni0")}


def test_agent_without_any_capability_still_finds_kube_proxy(node: Node) -> None:
    """svcdoctor run as nobody (no capability at all) still finds kube-proxy: its network namespace, owner
    and command line are read without ptrace access (/proc/<pid>/net, status, cmdline)."""
    node.healthy_basics()
    node.sysctl("net.ipv4.ip_forward", 0)
    node.kube_proxy()
    # The venv's interpreter may live under /root (pyenv), which nobody cannot enter: use the system
    # Python of the same minor version with the venv's packages on PYTHONPATH.
    require(Path("/usr/bin/python3").exists(), "needs Debian's python3 to run the agent as nobody")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    res = subprocess.run(node.argv("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                   "env", f"PYTHONPATH={REPO}:{site}", "/usr/bin/python3", "-m", "agent",
                                   "check", "--json", "--node-name", "test-node"),
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    failed = {f["subject"]: f["evidence"]["error"] for f in by_id(doc, "agent.source_failed")}
    assert "kube_proxy" not in failed and "kubelet" not in failed
    assert "kube_proxy.not_running" not in ids(doc)
    assert "node.ip_forward_disabled" in ids(doc)


def _python_agent(*args: str) -> list[str]:
    from tests.testbed import PY, REPO

    return ["env", f"PYTHONPATH={REPO}", PY, "-m", "agent", *args]


def test_check_from_snapshot_reproduces_findings(node: Node, tmp_path: Path) -> None:
    healthy(node)
    node.sysctl("net.ipv4.ip_forward", 0)
    snap = tmp_path / "snap.json"
    _, live = node.check("--snapshot-out", str(snap))
    res = subprocess.run(_python_agent("check", "--json", "--from", str(snap)), capture_output=True, text=True,
                         cwd=os.getcwd(), timeout=60)
    replay = json.loads(res.stdout)
    assert res.returncode == 1
    assert replay["findings"] == live["findings"]
    assert ("node.ip_forward_disabled", "test-node") in problems(replay)


def test_links_source_reports_the_nodes_own_addresses_not_link_local(node: Node, tmp_path: Path) -> None:
    node.sh("ip", "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p")
    node.sh("ip", "link", "set", "eth9", "up")
    node.sh("ip", "addr", "add", "192.0.2.7/24", "dev", "eth9")
    node.sh("ip", "-6", "addr", "add", "2001:db8::7/64", "dev", "eth9", "nodad")
    snap_file = tmp_path / "snap.json"
    node.svcdoctor("check", "--no-api", "--snapshot-out", str(snap_file))
    addresses = json.loads(snap_file.read_text())["links"]["data"]["addresses"]
    assert "192.0.2.7" in addresses and "2001:db8::7" in addresses
    assert not [a for a in addresses if a.startswith("fe80:") or a.startswith("127.")]
