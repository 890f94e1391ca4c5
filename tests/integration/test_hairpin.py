"""Hairpin on real kernel state: bridges cbr0/cni0 in a node netns, pods in their own netns on veth
pairs, stand-in kubelets with each flag/config variant, CNI configs under a temp --host-root.

Every finding is also compared with what the guide's own commands show in the same namespace:
`cat /sys/devices/virtual/net/<bridge>/brif/*/hairpin_mode` and `ip link show <bridge>`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import DATA, PY, REPO, Node, by_id, require_tool

VARIANTS: dict[str, dict[str, Any]] = tomllib.loads((DATA / "kubelet" / "variants.toml").read_text())
HAIRPIN_IDS = {"kubelet.hairpin_mode_none", "bridge.not_promiscuous", "bridge.hairpin_disabled",
               "cni.hairpin_disabled", "cni.no_bridge"}


def host_root(tmp: Path, *cni_files: str, named_netns: bool = True) -> Path:
    """A host root holding etc/cni/net.d with `cni_files`; run/netns is the real one (where `ip netns
    add` and containerd put pod namespaces) unless `named_netns` is False."""
    root = tmp / "host"
    conf = root / "etc" / "cni" / "net.d"
    conf.mkdir(parents=True)
    for f in cni_files:
        shutil.copy(DATA / "cni" / f, conf / f)
    if named_netns:
        (root / "run").mkdir()
        (root / "run" / "netns").symlink_to("/run/netns")
    return root


def start_kubelet(node: Node, name: str) -> None:
    v = VARIANTS[name]
    node.kubelet(*v["flags"], config=(DATA / "kubelet" / v["config"]) if "config" in v else None)


def hairpin_findings(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["id"], f["subject"], f["severity"]) for f in doc["findings"] if f["id"] in HAIRPIN_IDS}


def sysfs_hairpin(node: Node, bridge: str) -> dict[str, bool]:
    """The guide's check, run in the node's namespace (ip netns exec mounts that namespace's /sys)."""
    out = node.sh("sh", "-c", f"for f in /sys/devices/virtual/net/{bridge}/brif/*/hairpin_mode; do "
                              'echo "$(basename $(dirname $f)) $(cat $f)"; done').stdout
    return {port: value == "1" for port, value in (line.split() for line in out.splitlines())}


def ip_link_promisc(node: Node, bridge: str) -> bool:
    flags = node.sh("ip", "link", "show", bridge).stdout.split("<", 1)[1].split(">", 1)[0].split(",")
    return "PROMISC" in flags


def link_flags(node: Node) -> dict[str, tuple[str, str]]:
    """name -> (flags, master) from `ip -o link show`."""
    out = {}
    for line in node.sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(": ")[1].split("@")[0]
        words = line.split()
        master = words[words.index("master") + 1] if "master" in words else ""
        out[name] = (line.split("<", 1)[1].split(">", 1)[0], master)
    return out


def test_kubelet_variants_in_real_processes(node: Node, tmp_path: Path) -> None:
    root = host_root(tmp_path)
    for name in sorted(VARIANTS):
        v = VARIANTS[name]
        proc = node.kubelet(*v["flags"], config=(DATA / "kubelet" / v["config"]) if "config" in v else None)
        try:
            _, doc = node.check("--host-root", str(root))
        finally:
            proc.kill()
            proc.wait()
        (info,) = by_id(doc, "kubelet.hairpin_mode")
        ev = info["evidence"]
        assert (ev["configured"], ev["source"], ev["runtime"], ev["effective"]) == (
            v["configured"], v["source"], v["runtime"], v["effective"]), name


def test_cni_hairpin_ports_match_sysfs(node: Node, tmp_path: Path) -> None:
    """containerd + CRI-O's bridge conflist (hairpinMode on cni0): every cni0 pod port with hairpin off
    is named, cbr0's ports are not the CNI's business."""
    node.bridge("cni0", promisc=True)
    node.bridge("cbr0")
    on1, _ = node.pod_on_bridge("cni0", "10.85.0.5", hairpin=True)
    off, _ = node.pod_on_bridge("cni0", "10.85.0.6", hairpin=False)
    node.pod_on_bridge("cni0", "10.85.0.7", hairpin=True)
    node.pod_on_bridge("cbr0", "10.64.0.5", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "11-crio-ipv4-bridge.conflist")))
    assert hairpin_findings(doc) == {("bridge.hairpin_disabled", off, "warning")}
    (f,) = by_id(doc, "bridge.hairpin_disabled")
    assert (f["evidence"]["bridge"], f["evidence"]["pod_ips"], f["evidence"]["pod"]) == ("cni0", ["10.85.0.6"],
                                                                                         "10.85.0.6")
    assert {p for p, on in sysfs_hairpin(node, "cni0").items() if not on} == {off}
    assert sysfs_hairpin(node, "cni0")[on1] is True

    # the guide's fix, then the finding is gone
    node.sh("ip", "link", "set", off, "type", "bridge_slave", "hairpin", "on")
    _, doc = node.check("--host-root", str(tmp_path / "host"))
    assert hairpin_findings(doc) == set()
    assert all(sysfs_hairpin(node, "cni0").values())


def test_dockershim_hairpin_veth_covers_every_bridge(node: Node, tmp_path: Path) -> None:
    node.bridge("cni0")
    node.bridge("cbr0")
    offs = {node.pod_on_bridge("cni0", "10.244.0.5", hairpin=False)[0],
            node.pod_on_bridge("cbr0", "10.64.0.6", hairpin=False)[0]}
    node.pod_on_bridge("cni0", "10.244.0.7", hairpin=True)
    node.pod_on_bridge("cbr0", "10.64.0.8", hairpin=True)
    start_kubelet(node, "flag_only_hairpin_veth_dockershim")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "10-bridge.conf")))
    assert hairpin_findings(doc) == {("bridge.hairpin_disabled", p, "warning") for p in offs}
    from_sysfs = {p for b in ("cni0", "cbr0") for p, on in sysfs_hairpin(node, b).items() if not on}
    assert from_sysfs == offs
    assert {f["evidence"]["required_by"] for f in by_id(doc, "bridge.hairpin_disabled")} == {
        "kubelet's effective hairpin mode hairpin-veth"}


def test_kubenet_promiscuous_bridge_matches_ip_link_show(node: Node, tmp_path: Path) -> None:
    node.bridge("cbr0", promisc=False)
    node.pod_on_bridge("cbr0", "10.64.0.5", hairpin=False)
    start_kubelet(node, "dockershim_kubenet_promiscuous")
    root = host_root(tmp_path)  # kubenet writes no file to /etc/cni/net.d
    _, doc = node.check("--host-root", str(root))
    assert hairpin_findings(doc) == {("bridge.not_promiscuous", "cbr0", "critical")}
    assert ip_link_promisc(node, "cbr0") is False

    node.sh("ip", "link", "set", "cbr0", "promisc", "on")
    _, doc = node.check("--host-root", str(root))
    assert hairpin_findings(doc) == set()
    assert ip_link_promisc(node, "cbr0") is True


def test_containerd_default_conflist_needs_a_promiscuous_cni0(node: Node, tmp_path: Path) -> None:
    node.bridge("cni0", promisc=False)
    node.pod_on_bridge("cni0", "10.88.0.5", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "10-containerd-net.conflist")))
    assert hairpin_findings(doc) == {("bridge.not_promiscuous", "cni0", "critical")}
    assert ip_link_promisc(node, "cni0") is False


@pytest.mark.parametrize("with_pods", [True, False])
def test_bridge_conf_without_hairpin(node: Node, tmp_path: Path, with_pods: bool) -> None:
    """Kubernetes The Hard Way's 10-bridge.conf on containerd: nobody sets hairpin."""
    node.bridge("cni0")
    if with_pods:
        node.pod_on_bridge("cni0", "10.200.0.5", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "10-bridge.conf")))
    want = {("cni.hairpin_disabled", "/etc/cni/net.d/10-bridge.conf", "warning")} if with_pods else set()
    assert hairpin_findings(doc) == want


def test_flannel_cni0_port_without_hairpin(node: Node, tmp_path: Path) -> None:
    node.bridge("cni0")
    off, _ = node.pod_on_bridge("cni0", "10.244.1.5", hairpin=False)
    node.pod_on_bridge("cni0", "10.244.1.6", hairpin=True)
    node.bridge("cbr0")  # flannel's network is *named* cbr0; its bridge is cni0
    node.pod_on_bridge("cbr0", "10.64.0.5", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "10-flannel.conflist")))
    assert hairpin_findings(doc) == {("bridge.hairpin_disabled", off, "warning")}


@pytest.mark.parametrize("files,plugin", [(("10-calico.conflist", "calico-kubeconfig"), "calico"),
                                          (("05-cilium.conflist",), "cilium-cni")])
def test_no_bridge_cnis_say_so_once(node: Node, tmp_path: Path, files: tuple[str, ...], plugin: str) -> None:
    node.bridge("docker0")
    node.pod_on_bridge("docker0", "172.17.0.2", hairpin=False)
    start_kubelet(node, "config_only_none_dockershim")
    _, doc = node.check("--host-root", str(host_root(tmp_path, *files)))
    assert {(i, s) for i, s, _ in hairpin_findings(doc)} == {("cni.no_bridge", f"/etc/cni/net.d/{files[0]}")}
    (f,) = by_id(doc, "cni.no_bridge")
    assert (f["severity"], f["evidence"]["plugin"]) == ("info", plugin)


def test_kubelet_mode_none_with_pods_on_a_bridge(node: Node, tmp_path: Path) -> None:
    node.bridge("cni0")
    node.pod_on_bridge("cni0", "10.244.0.5", hairpin=False)
    start_kubelet(node, "config_only_none_dockershim")
    _, doc = node.check("--host-root", str(host_root(tmp_path, "10-bridge.conf")))
    assert hairpin_findings(doc) == {("kubelet.hairpin_mode_none", "test-node", "warning")}


def test_far_ends_resolved_through_named_netns_and_proc(node: Node, tmp_path: Path) -> None:
    """Pods bind-mounted under run/netns, and pods only reachable through their sandbox's /proc entry."""
    node.bridge("cni0")
    named, named_ns = node.pod_on_bridge("cni0", "10.85.0.5", hairpin=True)
    node.bridge("cbr0")
    sandboxed, _ = node.pod_on_bridge("cbr0", "10.64.0.9", hairpin=True, sandbox=True)
    out = tmp_path / "snap.json"
    before = (link_flags(node), sysfs_hairpin(node, "cni0"), sysfs_hairpin(node, "cbr0"))
    node.check("--host-root", str(host_root(tmp_path, "11-crio-ipv4-bridge.conflist", named_netns=False)),
               "--snapshot-out", str(out))
    links = json.loads(out.read_text())["links"]["data"]
    ports = {p["name"]: p for b in links["bridges"] for p in b["ports"]}
    assert (ports[sandboxed]["peer_name"], ports[sandboxed]["pod_ips"]) == ("eth0", ["10.64.0.9"])
    assert ports[sandboxed]["peer_netns"].endswith("/ns/net")
    assert ports[named]["pod_ips"] == [] and "not found" in ports[named]["peer_error"]

    root = host_root(tmp_path / "b", "11-crio-ipv4-bridge.conflist")
    node.check("--host-root", str(root), "--snapshot-out", str(out))
    ports = {p["name"]: p for b in json.loads(out.read_text())["links"]["data"]["bridges"] for p in b["ports"]}
    assert (ports[named]["pod_ips"], ports[named]["peer_netns"]) == (["10.85.0.5"], f"{root}/run/netns/{named_ns}")
    # read-only: the same links with the same flags, masters and hairpin (operstate settles on its own)
    assert (link_flags(node), sysfs_hairpin(node, "cni0"), sysfs_hairpin(node, "cbr0")) == before


def _cluster_json(path: Path) -> Path:
    """kubectl-style List: Service shop/cart backed by pod shop/cart-7d9f (10.85.0.6); shop/batch-1
    (10.85.0.7) backs nothing. Both pods run on test-node."""
    def pod(name: str, ip: str) -> dict[str, Any]:
        return {"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "shop", "name": name},
                "spec": {"nodeName": "test-node"}, "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}
    items = [
        {"kind": "Service", "apiVersion": "v1", "metadata": {"namespace": "shop", "name": "cart"},
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}},
        {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
         "metadata": {"namespace": "shop", "name": "cart-x1y2z",
                      "labels": {"kubernetes.io/service-name": "cart"}},
         "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.85.0.6"], "conditions": {"ready": True}, "nodeName": "test-node"}]},
        pod("cart-7d9f", "10.85.0.6"), pod("batch-1", "10.85.0.7"),
    ]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def test_port_backing_a_service_is_critical_and_names_pod_and_service(node: Node, tmp_path: Path) -> None:
    node.bridge("cni0")
    backing, _ = node.pod_on_bridge("cni0", "10.85.0.6", hairpin=False)
    idle, _ = node.pod_on_bridge("cni0", "10.85.0.7", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    saved = tmp_path / "snap.json"
    _, doc = node.check("--host-root", str(host_root(tmp_path, "11-crio-ipv4-bridge.conflist")),
                        "--cluster-state", str(_cluster_json(tmp_path / "cluster.json")), "--snapshot-out", str(saved))
    assert hairpin_findings(doc) == {("bridge.hairpin_disabled", backing, "critical"),
                                     ("bridge.hairpin_disabled", idle, "warning")}
    _, replayed = node.check("--from", str(saved))  # `check --from` judges the saved snapshot the same way
    assert [f for f in replayed["findings"] if f["id"] in HAIRPIN_IDS] == [
        f for f in doc["findings"] if f["id"] in HAIRPIN_IDS]
    got = {f["subject"]: f["evidence"] for f in by_id(doc, "bridge.hairpin_disabled")}
    assert (got[backing]["pod"], got[backing]["services"]) == ("shop/cart-7d9f", ["shop/cart:http"])
    assert (got[idle]["pod"], got[idle]["services"]) == ("shop/batch-1", [])
    assert {p for p, on in sysfs_hairpin(node, "cni0").items() if not on} == {backing, idle}


def test_with_the_daemonsets_capabilities_pods_are_not_read(node: Node, tmp_path: Path) -> None:
    """Without CAP_SYS_ADMIN there is no setns, and without CAP_SYS_PTRACE (issue 16) no sandbox
    process's /proc/<pid>/ns/net to match a namespace with: the pod's addresses stay unknown, said in
    the port's peer_error, and the severity that would need the pod IP stays at warning. (Reading
    /proc/<pid>/net by namespace without ptrace is left to the links area.)"""
    from tests.deploy.manifests import daemonset_capabilities

    require_tool("setpriv")
    node.bridge("cni0")
    backing, _ = node.pod_on_bridge("cni0", "10.85.0.6", hairpin=False, sandbox=True)
    no_sandbox, _ = node.pod_on_bridge("cni0", "10.85.0.7", hairpin=False)
    start_kubelet(node, "kubeadm_containerd")
    root = host_root(tmp_path, "11-crio-ipv4-bridge.conflist")
    out = tmp_path / "snap.json"
    caps = ",".join(["-all", *(f"+{c}" for c in daemonset_capabilities())])
    res = subprocess.run(node.argv("setpriv", "--bounding-set", caps, "--inh-caps", "-all", "--no-new-privs", "--",
                                   PY, "-m", "agent", "check", "--json", "--node-name", "test-node",
                                   "--host-root", str(root), "--snapshot-out", str(out),
                                   "--cluster-state", str(_cluster_json(tmp_path / "cluster.json"))),
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert hairpin_findings(doc) == {("bridge.hairpin_disabled", backing, "warning"),
                                     ("bridge.hairpin_disabled", no_sandbox, "warning")}
    ports = {p["name"]: p for b in json.loads(out.read_text())["links"]["data"]["bridges"] for p in b["ports"]}
    assert (ports[backing]["pod_ips"], ports[backing]["peer_name"]) == ([], None)
    assert "no process" in ports[backing]["peer_error"]
    assert ports[no_sandbox]["pod_ips"] == [] and "no process" in ports[no_sandbox]["peer_error"]


def test_kubelets_log_line_is_shown_beside_the_computed_mode(node: Node, tmp_path: Path) -> None:
    """The guide: the effective mode may differ from --hairpin-mode; kubelet's log line says which."""
    root = host_root(tmp_path)
    (root / "var" / "log").mkdir(parents=True)
    shutil.copy(DATA / "kubelet" / "kubelet-dockershim.log", root / "var" / "log" / "kubelet.log")
    start_kubelet(node, "dockershim_cni_promiscuous_falls_back")
    _, doc = node.check("--host-root", str(root))
    (info,) = by_id(doc, "kubelet.hairpin_mode")
    ev = info["evidence"]
    assert (ev["configured"], ev["effective"], ev["logged"]) == (
        "promiscuous-bridge", "hairpin-veth", "hairpin-veth (/var/log/kubelet.log)")
    assert ev["log_line"].endswith('Hairpin mode set to "hairpin-veth"')
