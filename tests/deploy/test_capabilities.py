"""The agent works confined exactly as the DaemonSet confines it, and the confinement holds.

A container runtime gives the container process the pod's uid, the capabilities in its bounding set
and nothing else, no_new_privs when allowPrivilegeEscalation is false, a read-only root filesystem,
the hostPath mounts read-only and an emptyDir at /tmp. `confined()` builds the same around a command
in the test node: a private mount namespace where every mount is remounted read-only, a tmpfs (the
emptyDir, the agent's TMPDIR) holding the DaemonSet's host mounts (read-only binds under its host/), then
`setpriv` with the
DaemonSet's uid, bounding set and no_new_privs. kube-proxy and kubelet are stand-ins with full
capabilities (as the real ones run) in their own mount namespaces, so their config files exist only
there: the confined agent cannot open them and must use kube-proxy's /configz and the host mount of
kubelet's config, and still judges the node exactly as a root run does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import POD_SPEC, agent_container, daemonset_capabilities
from tests.testbed import DATA, FIXTURES, PY, REPO, Node, require, require_tool

CAPS = daemonset_capabilities()
UID = int(agent_container()["securityContext"]["runAsUser"])
# The agent's emptyDir. Not at /tmp itself: a tmpfs there would hide a clone, its venv or pytest's tmp_path
# that live under /tmp (CI clones anywhere); a directory of its own, made and removed by this module.
TMPFS = f"/run/svcd-confined-{os.getpid()}"
PROBE = Path(__file__).resolve().parent / "confined_probe.py"
KUBE_PROXY_CONFIG = DATA / "kubeadm" / "kube-proxy-config.conf"
KUBELET_CONFIG = DATA / "kubeadm" / "kubelet-config.yaml"
CONFIG_AT = "/var/lib/kube-proxy/config.conf"
IPT = FIXTURES / "iptables"
NFT = FIXTURES / "nftables"
# Host files the DaemonSet mounts that this test machine lacks: the test's stand-in for each.
STAND_INS = {"/var/lib/kubelet/config.yaml": KUBELET_CONFIG}


@pytest.fixture(autouse=True, scope="module")
def _agent_tmpfs_mountpoint() -> Any:
    Path(TMPFS).mkdir(mode=0o755, exist_ok=True)  # an empty mount point; the tmpfs exists only in the namespace
    yield
    shutil.rmtree(TMPFS, ignore_errors=True)


def host_mounts() -> list[tuple[str, str]]:
    """(host path, path under the host root) for every hostPath the DaemonSet mounts under /host."""
    volumes = {v["name"]: v["hostPath"]["path"] for v in POD_SPEC["volumes"] if "hostPath" in v}
    return [(volumes[m["name"]], m["mountPath"].removeprefix("/host")) for m in agent_container()["volumeMounts"]
            if m["name"] in volumes and m["mountPath"].startswith("/host/")]


CONFINE = r"""
set -e
# every mount read-only (this mount namespace only), as readOnlyRootFilesystem and readOnly mounts make it
awk '{print $5}' /proc/self/mountinfo | sort -ru | while read -r mp; do
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
mount -t tmpfs -o size=64m,mode=0755 svcd-agent-tmp "$SVCD_TMPFS"   # the emptyDir (TMPDIR)
for spec in $SVCD_BINDS; do                                         # the hostPath mounts, read-only
  src=${spec%%=*}; dst=$SVCD_TMPFS/host${spec#*=}
  if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; touch "$dst"; fi
  mount --rbind "$src" "$dst"; mount -o remount,bind,ro "$dst"
done
cd "$SVCD_TMPFS"
exec setpriv --reuid "$SVCD_UID" --regid "$SVCD_UID" --clear-groups --bounding-set "$SVCD_BOUNDING" \
  --inh-caps -all --no-new-privs -- "$@"
"""


def confined(node: Node, *cmd: str, caps: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in the node as the DaemonSet runs the agent (see the module docstring)."""
    require_tool("setpriv")
    require_tool("unshare")
    binds = []
    for host, inside in host_mounts():
        src = STAND_INS.get(host, Path(host))
        if Path(src).exists():
            binds.append(f"{src}={inside}")
    env = {"SVCD_TMPFS": TMPFS, "TMPDIR": TMPFS, "SVCD_BINDS": " ".join(binds), "SVCD_UID": str(UID),
           "SVCD_BOUNDING": ",".join(["-all", *(f"+{c}" for c in (CAPS if caps is None else caps))]),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(node.argv("/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), "unshare", "--mount",
                                    "--propagation", "private", "/bin/sh", "-c", CONFINE, "confine", *cmd),
                          capture_output=True, text=True, timeout=300)


def effective_caps(node: Node) -> set[str]:
    out = confined(node, "capsh", "--print").stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("Current:"))  # "Current: cap_a,cap_b=ep"
    names, _, flags = line.removeprefix("Current:").strip().partition("=")
    assert flags == "ep"  # effective and permitted, nothing inheritable
    return {c.removeprefix("cap_") for c in names.split(",") if c}


def kube_proxy_node(node: Node, mode: str, tmp: Path) -> int:
    """kube-proxy (its config only in its own mount namespace, /configz answering), kubelet; kube-proxy's pid."""
    config = tmp / "kube-proxy-config.conf"
    text = KUBE_PROXY_CONFIG.read_text()
    config.write_text(text.replace('\nmode: ""', f"\nmode: {mode}") if mode != "iptables" else text)
    assert mode == "iptables" or f"\nmode: {mode}" in config.read_text()
    node.healthy_basics()
    node.nfacct_for_kube_proxy()
    proc = node.kube_proxy("--hostname-override=test-node", config=config, config_at=CONFIG_AT)
    node.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock", config=KUBELET_CONFIG)
    node.kube_proxy_http("--mode", mode, "--configz", str(config))
    return proc.pid


def load_fixture(node: Node, kind: str) -> Path:
    """Kernel state for `kind`; returns its cluster state."""
    if kind == "nftables":
        node.nft_load((NFT / "v1.3x_TestOverallNFTablesRules.nft").read_text())
        return NFT / "v1.3x_TestOverallNFTablesRules.cluster.json"
    backend = kind.removeprefix("iptables-")
    node.iptables_restore((IPT / "v1.3x_TestOverallIPTablesRules.rules").read_text(), backend, noflush=True)
    node.iptables_restore((IPT / "node-base.rules").read_text(), backend, noflush=True)
    return IPT / "v1.3x_TestOverallIPTablesRules.cluster.json"


def check_args(state: Path, snapshot: str) -> list[str]:
    return ["check", "--json", "--node-name", "test-node", "--cluster-state", str(state), "--grace", "0",
            "--snapshot-out", snapshot]


def confined_check(node: Node, state: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    script = (f"{shlex.quote(PY)} -m agent {' '.join(map(shlex.quote, check_args(state, TMPFS + '/snap.json')))} "
              f"--host-root {TMPFS}/host > {TMPFS}/doc.json; rc=$?; cat {TMPFS}/doc.json; echo '@@'; "
              f"cat {TMPFS}/snap.json; exit $rc")
    res = confined(node, "/usr/bin/env", f"PYTHONPATH={REPO}", "/bin/sh", "-c", script)
    assert res.returncode in (0, 1), res.stderr
    doc, _, snap = res.stdout.partition("\n@@\n")
    return json.loads(doc), json.loads(snap)


def verdicts(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(f["id"], f["service"] or f["subject"], f["severity"]) for f in doc["findings"]}


def test_confinement_gives_exactly_the_daemonset_uid_and_capabilities(node: Node) -> None:
    require_tool("capsh")
    assert effective_caps(node) == set(CAPS) == {"net_admin", "net_raw"}
    res = confined(node, "/usr/bin/id", "-u")
    assert res.stdout.strip() == str(UID) == "0", res.stderr


def test_confined_agent_cannot_enter_kube_proxy_nor_write_outside_its_tmpfs(node: Node, tmp_path: Path) -> None:
    pid = kube_proxy_node(node, "iptables", tmp_path)
    res = confined(node, PY, str(PROBE), str(pid), CONFIG_AT, TMPFS)
    assert res.returncode == 0, res.stderr
    probe = json.loads(res.stdout)
    assert (probe["uid"], probe["euid"]) == (UID, UID)
    # no CAP_SYS_PTRACE: kube-proxy (full capabilities) is closed to the agent, root or not
    assert probe["read kube-proxy's file via /proc/<pid>/root"] == "Permission denied"
    assert probe["readlink /proc/<pid>/exe"] == "Permission denied"
    assert probe["read /proc/<pid>/environ"] == "Permission denied"
    # readOnlyRootFilesystem and read-only mounts: nothing to write but its own tmpfs
    assert probe["writable mounts besides the tmpfs"] == []
    assert set(probe["writes outside the tmpfs"].values()) <= {"Read-only file system", "Permission denied"}, probe
    assert probe["create in the tmpfs"] == "ok"
    # the same process as root (the stand-in's own view) has the file: the refusal is the confinement's
    assert Path(f"/proc/{pid}/root{CONFIG_AT}").read_text() == (tmp_path / "kube-proxy-config.conf").read_text()


@pytest.mark.parametrize("kind", ["iptables-legacy", "iptables-nft", "nftables"])
def test_confined_agent_judges_the_node_as_a_root_run_does(node: Node, tmp_path: Path, kind: str) -> None:
    require((IPT / "node-base.rules").exists(), f"needs the kube-proxy fixtures at {FIXTURES}")
    kube_proxy_node(node, "nftables" if kind == "nftables" else "iptables", tmp_path)
    state = load_fixture(node, kind)
    root = subprocess.run(node.argv(PY, "-m", "agent", *check_args(state, str(tmp_path / "root.json"))),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert root.returncode in (0, 1), root.stderr
    root_doc, root_snap = json.loads(root.stdout), json.loads((tmp_path / "root.json").read_text())
    doc, snap = confined_check(node, state)

    assert verdicts(doc) == verdicts(root_doc)
    assert [f for f in doc["findings"] if f["id"] == "agent.source_failed"] == []
    assert [f for f in doc["findings"] if f["severity"] != "info"] == []  # a healthy node, both ways
    # what was read, and from where: no ptrace, so kube-proxy's config came from its /configz and
    # kubelet's from the host mount; the root run read both files in the processes' own filesystems
    for name in ("iptables", "nftables", "conntrack", "links", "sysctl"):
        assert snap[name]["ok"] and snap[name]["error"] is None, name
    kp, kl = snap["kube_proxy"]["data"], snap["kubelet"]["data"]
    assert kp["config_source"] == "kube-proxy's http://127.0.0.1:10249/configz" and kp["exe"] is None
    assert kp["config"]["clusterCIDR"] == "10.244.0.0/16"
    assert kl["config_source"].startswith("config /var/lib/kubelet/config.yaml (the host's file")
    assert root_snap["kube_proxy"]["data"]["config_source"] == f"config {CONFIG_AT}"
    assert root_snap["kube_proxy"]["data"]["exe"].endswith("/kube-proxy")
    (mode,) = [f for f in doc["findings"] if f["id"] == "kube_proxy.mode"]
    assert mode["evidence"]["mode"] == kind.partition("-")[0]
    if kind != "nftables":
        assert snap["iptables"]["data"]["backend"] == kind.removeprefix("iptables-")
        assert "KUBE-SVC-XPGD46QRK7WJZT7O" in json.dumps(snap["iptables"]["data"])
    else:
        assert snap["nftables"]["data"]["tables"]


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_confined_agent_finds_a_deleted_rule_as_a_root_run_does(node: Node, tmp_path: Path, backend: str) -> None:
    kube_proxy_node(node, "iptables", tmp_path)
    state = load_fixture(node, f"iptables-{backend}")
    line = next(ln for ln in node.iptables_save(backend).splitlines() if "ns1/svc1:p80 cluster IP" in ln
                and ln.startswith("-A KUBE-SERVICES"))
    node.sh(f"iptables-{backend}", "-t", "nat", "-D", *shlex.split(line)[1:])
    _, root_doc = node.check(*check_args(state, str(tmp_path / "root.json"))[1:])
    doc, _ = confined_check(node, state)
    assert verdicts(doc) == verdicts(root_doc)
    assert ("rules.service_missing", "ns1/svc1:p80", "critical") in verdicts(doc)


# What breaks when one capability is taken away: each is needed.
WITHOUT = {
    "net_admin": ("iptables-nft-save",),
    "net_raw": ("iptables-legacy-save",),
}


@pytest.mark.parametrize("cap", sorted(WITHOUT))
def test_rule_dump_fails_without(node: Node, cap: str) -> None:
    node.kube_proxy_rules_without_services("legacy")
    node.kube_proxy_rules_without_services("nft")
    assert confined(node, *WITHOUT[cap]).returncode == 0
    res = confined(node, *WITHOUT[cap], caps=[c for c in CAPS if c != cap])
    assert res.returncode != 0
    assert "ermission denied" in res.stderr or "not permitted" in res.stderr


def test_every_daemonset_capability_is_shown_necessary() -> None:
    assert set(WITHOUT) == set(CAPS)


def test_a_non_root_user_with_the_same_capabilities_cannot_read_the_rules(node: Node) -> None:
    """Why the DaemonSet runs as uid 0: for a non-root user the runtime puts the capabilities in the
    bounding set only (a Pod has no ambient set), exec drops them, and under no_new_privs file
    capabilities on the binary would be ignored too."""
    require_tool("setpriv")
    node.kube_proxy_rules_without_services("nft")
    bounding = ",".join(["-all", *(f"+{c}" for c in CAPS)])
    res = subprocess.run(node.argv("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                                   "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--",
                                   "iptables-nft-save"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "ermission denied" in res.stderr or "not permitted" in res.stderr, res.stderr
