"""Only the real kube-proxy is trusted, and nothing a process names leaks (issue 16, item 3).

Real processes in a test node, the agent run as root with every capability (the strongest reader: a
root `svcdoctor check` on a host). A process named kube-proxy that is not root's, or whose executable
is something else, is ignored; a file that a trusted kube-proxy names is read only when it is root's
and nobody else may write it, and only a KubeProxyConfiguration's known fields are kept; kube-proxy's
URLs are fetched only on this node. A sentinel string in every file and a listener on a neighbour's
address show that nothing was read, kept or fetched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import PY, Node, by_id, standin_binary

pytestmark = pytest.mark.netns


def sentinel() -> str:
    return f"svcd-sentinel-{secrets.token_hex(6)}"


def root_only(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    path.parent.chmod(0o755)  # the directory is not what keeps anyone out
    return path


def kube_proxy_config(secret: str) -> str:
    """A valid KubeProxyConfiguration whose kept field (hostnameOverride) and dropped one
    (clientConnection.kubeconfig) both carry the sentinel."""
    return (f"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n"
            f"hostnameOverride: {secret}\nclientConnection:\n  kubeconfig: /{secret}\n")


def check(node: Node, tmp: Path) -> tuple[dict[str, Any], str]:
    """(the JSON document, the saved snapshot's text) of a root run."""
    snap = tmp / f"snap-{secrets.token_hex(3)}.json"
    _, doc = node.check("--no-api", "--snapshot-out", str(snap))
    return doc, snap.read_text()


def start(node: Node, argv: list[str], *, user: int | None = None) -> subprocess.Popen[Any]:
    wrap = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user is not None else []
    proc = subprocess.Popen(node.argv(*wrap, *argv), stdin=subprocess.DEVNULL)
    node.procs.append(proc)
    name = os.path.basename(argv[0])[:15]
    for _ in range(200):
        try:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == name:
                return proc
        except OSError:
            pass
        time.sleep(0.01)  # until it has exec'd (bounded)
    raise AssertionError(f"{name} did not start")


@pytest.fixture
def neighbour(node: Node) -> Iterator[Path]:
    """A host at 10.99.0.2 beside the node (10.99.0.1) that answers HTTP on 10249 and 10256 and logs every
    request to the returned file: an address kube-proxy's flags may name that is not the node's own."""
    peer = f"svcd-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", peer], check=True)
    node.pod_namespaces.append(peer)  # deleted with the node
    node.sh("ip", "link", "add", "svcdn0", "type", "veth", "peer", "name", "eth0", "netns", peer)
    node.sh("ip", "addr", "add", "10.99.0.1/24", "dev", "svcdn0")
    node.sh("ip", "link", "set", "svcdn0", "up")
    for cmd in (["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                ["ip", "link", "set", "lo", "up"]):
        subprocess.run(["ip", "netns", "exec", peer, *cmd], check=True)
    log = Path(f"/tmp/{peer}.log")
    server = (
        "import http.server, sys, threading\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        open(sys.argv[1], 'a').write(self.path + '\\n')\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'nftables')\n"
        "    def log_message(self, *a): pass\n"
        "for port in (10249, 10256):\n"
        "    s = http.server.ThreadingHTTPServer(('10.99.0.2', port), H)\n"
        "    threading.Thread(target=s.serve_forever, daemon=True).start()\n"
        "print('ready', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen(["ip", "netns", "exec", peer, PY, "-c", server, str(log)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    node.procs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    reach = node.sh(PY, "-c", "import urllib.request as u; print(u.urlopen('http://10.99.0.2:10256/probe').read())")
    assert "nftables" in reach.stdout  # the neighbour answers: refusing it below is the agent's choice
    try:
        yield log
    finally:
        log.unlink(missing_ok=True)


def fetched(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln for ln in lines if ln != "/probe"]


def test_a_non_root_process_named_kube_proxy_is_not_trusted(node: Node, tmp_path: Path, neighbour: Path) -> None:
    secret = sentinel()
    config = root_only(tmp_path / "config.conf", kube_proxy_config(secret))
    start(node, [str(standin_binary("kube-proxy")), f"--config={config}",
                 "--healthz-bind-address=10.99.0.2:10256", "--metrics-bind-address=10.99.0.2:10249"], user=65534)
    doc, snap = check(node, tmp_path)
    (absent,) = by_id(doc, "kube_proxy.not_running")
    assert "is not root's (real uid 65534, effective uid 65534)" in absent["evidence"]["note"]
    assert secret not in snap and secret not in json.dumps(doc)  # its 0600 root-only --config was not read
    assert fetched(neighbour) == []  # nor its health and metrics URLs fetched
    assert json.loads(snap)["kube_proxy_http"]["data"]["healthz_url"] == "http://127.0.0.1:10256/healthz"


def test_a_root_process_named_kube_proxy_running_another_executable_is_not_trusted(node: Node,
                                                                                  tmp_path: Path) -> None:
    secret = sentinel()
    config = root_only(tmp_path / "config.conf", kube_proxy_config(secret))
    (tmp_path / "bin").mkdir()
    disguise = tmp_path / "bin" / "kube-proxy"  # exec'd through this name, comm is "kube-proxy"
    disguise.symlink_to(standin_binary("pause"))
    proc = start(node, [str(disguise), f"--config={config}"])
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "kube-proxy"
    doc, snap = check(node, tmp_path)
    (absent,) = by_id(doc, "kube_proxy.not_running")
    assert f"executable is {standin_binary('pause')}, not kube-proxy" in absent["evidence"]["note"]
    assert secret not in snap and secret not in json.dumps(doc)


def test_the_real_kube_proxy_is_trusted_and_only_known_fields_are_kept(node: Node, tmp_path: Path) -> None:
    secret = sentinel()
    config = root_only(tmp_path / "config.conf", kube_proxy_config(secret).replace(f"hostnameOverride: {secret}\n",
                                                                                 ""))
    start(node, [str(standin_binary("kube-proxy")), f"--config={config}"])
    doc, snap = check(node, tmp_path)
    kp = json.loads(snap)["kube_proxy"]["data"]
    assert kp["exe"] == str(standin_binary("kube-proxy")) and "root's" in kp["identity"]
    assert kp["config"] == {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                            "mode": "nftables"}  # clientConnection (the kubeconfig's path) is not kept
    assert secret not in snap and secret not in json.dumps(doc)


@pytest.mark.parametrize(("content", "mode", "error"), [
    ("root:$6$SECRET$xyz:19000:0:99999:7:::\n", 0o600, "not a KubeProxyConfiguration"),  # /etc/shadow's shape
    ("apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: SECRET\n", 0o600,
     "not a KubeProxyConfiguration"),  # a kubeconfig
    ("key: [SECRET\n", 0o600, "not valid YAML (line 2, column 1)"),  # YAML's own message would quote it
    ("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nhostnameOverride: SECRET\n",
     0o620, "writable by group or others (mode 0620)"),
])
def test_a_file_kube_proxy_names_never_lands_in_the_snapshot(node: Node, tmp_path: Path, content: str, mode: int,
                                                              error: str) -> None:
    secret = sentinel()
    config = root_only(tmp_path / "named", content.replace("SECRET", secret), mode)
    start(node, [str(standin_binary("kube-proxy")), f"--config={config}"])
    doc, snap = check(node, tmp_path)
    (unreadable,) = by_id(doc, "kube_proxy.config_unreadable")
    assert error in unreadable["evidence"]["error"]
    assert secret not in snap and secret not in json.dumps(doc)


def test_a_file_owned_by_another_user_is_not_read(node: Node, tmp_path: Path) -> None:
    secret = sentinel()
    config = root_only(tmp_path / "named", kube_proxy_config(secret))
    os.chown(config, 65534, 65534)  # nobody could have written what kube-proxy is said to be told
    start(node, [str(standin_binary("kube-proxy")), f"--config={config}"])
    doc, snap = check(node, tmp_path)
    (unreadable,) = by_id(doc, "kube_proxy.config_unreadable")
    assert "owned by uid 65534, not by the process's uid 0" in unreadable["evidence"]["error"]
    assert secret not in snap


def test_a_trusted_kube_proxys_urls_off_this_node_are_not_fetched(node: Node, tmp_path: Path,
                                                                  neighbour: Path) -> None:
    start(node, [str(standin_binary("kube-proxy")), "--healthz-bind-address=10.99.0.2:10256",
                 "--metrics-bind-address=10.99.0.2:10249"])
    _, snap = check(node, tmp_path)
    http = json.loads(snap)["kube_proxy_http"]["data"]
    assert http["healthz_error"] == "not fetched: 10.99.0.2 is not loopback or an address of this node"
    assert http["proxy_mode_error"].startswith("not fetched") and http["metrics_error"].startswith("not fetched")
    assert fetched(neighbour) == []


def test_the_nodes_own_address_is_fetched(node: Node, tmp_path: Path) -> None:
    node.sh("ip", "addr", "add", "10.98.0.1/32", "dev", "lo")
    node.kube_proxy_http("--healthz", "10.98.0.1:10256", "--metrics", "10.98.0.1:10249")
    start(node, [str(standin_binary("kube-proxy")), "--healthz-bind-address=10.98.0.1:10256",
                 "--metrics-bind-address=10.98.0.1:10249"])
    _, snap = check(node, tmp_path)
    http = json.loads(snap)["kube_proxy_http"]["data"]
    assert (http["healthz_status"], http["healthz_error"], http["proxy_mode"]) == (200, None, "iptables")
