"""A Kubernetes node in a private network namespace, built from real kernel state.

`Node` creates `svcd-<8 hex>`, runs commands in it (`ip netns exec`), starts stand-in kube-proxy and
kubelet processes (a tiny C program exec'd under the real binary's name, in its own mount
namespace so its --config file lives at the real path only in *its* filesystem, as in a pod), a
stand-in for kube-proxy's HTTP endpoints, and svcdoctor itself. `destroy()` kills everything in the
namespace and deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
STANDINS = Path(__file__).resolve().parent / "standins"
DATA = Path(__file__).resolve().parent / "data"
FIXTURES = REPO / "tests" / "fixtures" / "kube-proxy"
IN_CI = os.environ.get("CI", "").lower() == "true"
PY = sys.executable
_LISTEN = ("import socket,sys\nip,port=sys.argv[1],int(sys.argv[2])\n"
           "s=socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)\n"
           "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((ip,port));s.listen(64)\n"
           "print('ready',flush=True)\nwhile True:\n c,_=s.accept();c.sendall(b'ok');c.close()\n")
BIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def require(condition: bool, reason: str) -> None:
    """Skip on a laptop without the means; under CI=true a missing means is a failure, not a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_netns() -> None:
    require(os.geteuid() == 0, "needs root (network namespaces)")
    require(shutil.which("ip") is not None, "needs iproute2's `ip`")


def require_tool(name: str) -> None:
    require(shutil.which(name) is not None, f"needs {name}")


_standin_dir: Path | None = None


def standin_binary(name: str) -> Path:
    """The pause stand-in compiled once per test process, copied under `name` (sets /proc/<pid>/comm)."""
    global _standin_dir
    if _standin_dir is None:
        require_tool("gcc")
        d = Path(os.environ.get("TMPDIR", "/tmp")) / f"svcd-standins-{os.getpid()}"
        d.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(d / "pause"), str(STANDINS / "pause.c")], check=True)
        _standin_dir = d
    target = _standin_dir / name
    if not target.exists():
        shutil.copy2(_standin_dir / "pause", target)
    return target


class Node:
    def __init__(self, tmp: Path) -> None:
        self.name = f"svcd-{secrets.token_hex(4)}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen[Any]] = []
        self.pod_namespaces: list[str] = []  # `pod_on_bridge` and `other_netns` namespaces, deleted with the node
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.sh("ip", "link", "set", "lo", "up")

    # plumbing -----------------------------------------------------------------------------------------
    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def sh(self, *cmd: str, check: bool = True, input: str | None = None, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(self.argv(*cmd), capture_output=True, text=True, input=input, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def sysctl(self, key: str, value: str | int) -> None:
        self.sh("sysctl", "-q", "-w", f"{key}={value}")

    def healthy_basics(self) -> None:
        """What kube-proxy and the kubeadm prerequisites leave on a working node."""
        self.sysctl("net.ipv4.ip_forward", 1)
        self.sysctl("net.ipv4.conf.all.route_localnet", 1)  # kube-proxy sets it for localhost NodePorts
        self.sysctl("net.bridge.bridge-nf-call-iptables", 1)

    # rules ------------------------------------------------------------------------------------------
    def iptables_restore(self, rules: str, backend: str = "legacy", *, noflush: bool = False,
                         family: int = 4) -> None:
        """Load an iptables-save/restore text with `iptables-<backend>-restore` (ip6tables for family 6)."""
        tool = f"{'ip6tables' if family == 6 else 'iptables'}-{backend}-restore"
        self.sh(tool, "-w", "60", *(["--noflush"] if noflush else []), input=rules)

    def iptables_save(self, backend: str = "legacy") -> str:
        return self.sh(f"iptables-{backend}-save").stdout

    def kube_proxy_rules_without_services(self, backend: str = "legacy") -> None:
        """What kube-proxy (iptables mode) programs on a node of a cluster with no Services, plus the hooks
        from the built-in chains and kubelet's chains: a complete, healthy node's netfilter state."""
        self.nfacct_for_kube_proxy()
        self.iptables_restore((DATA / "kubeadm" / "kube-proxy-no-services.rules").read_text(), backend, noflush=True)
        self.iptables_restore((FIXTURES / "iptables" / "node-base.rules").read_text(), backend, noflush=True)

    def nfacct_for_kube_proxy(self) -> None:
        """The accounting objects the v1.3x fixtures reference (`-m nfacct`), as kube-proxy creates them."""
        for name in ("ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts"):
            self.sh("nfacct", "add", name, check=False)

    def nft_load(self, ruleset: str) -> None:
        self.sh("nft", "-f", "-", input=ruleset)

    def full_ruleset(self) -> str:
        """Everything netfilter holds in this netns, for "a check changed nothing" assertions."""
        legacy = self.sh("iptables-legacy-save", check=False).stdout
        nft = self.sh("nft", "list", "ruleset", check=False).stdout
        return _strip_save_comments(legacy) + "\n----\n" + nft

    # stand-in processes -------------------------------------------------------------------------------
    def spawn_standin(self, binary: str, argv0: str, args: list[str], *, files: dict[str, Path] | None = None,
                      hide: list[str] | None = None, path: str = BIN_PATH) -> subprocess.Popen[Any]:
        """Start `binary` as `argv0 args...` in this netns and in a private mount namespace where each
        `files` entry (path in the process's filesystem -> local file) exists and each `hide` dir is empty."""
        script = ["set -e"]
        mounted: set[str] = set()
        for dest, src in (files or {}).items():
            top = "/" + dest.strip("/").split("/")[0] + "/" + dest.strip("/").split("/")[1]
            if top not in mounted:  # a tmpfs over e.g. /var/lib: visible to this process only
                script.append(f"/bin/mount -t tmpfs svcd-standin {top}")
                mounted.add(top)
            script.append(f"/bin/mkdir -p {os.path.dirname(dest)} && /bin/cp {src} {dest}")
        for d in hide or []:
            script.append(f"/bin/mount -t tmpfs svcd-hidden {d}")
        script.append(f'exec -a {argv0} {standin_binary(binary)} "$@"')
        cmd = ["/usr/sbin/ip", "netns", "exec", self.name, "/usr/bin/unshare", "--mount", "--propagation",
               "private", "/bin/bash", "-c", "\n".join(script), argv0, *args]
        proc = subprocess.Popen(cmd, env={"PATH": path}, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        self._wait_exec(proc, binary)
        return proc

    @staticmethod
    def _wait_exec(proc: subprocess.Popen[Any], comm: str) -> None:
        """Wait until the stand-in has exec'd (its comm is the binary name), so a check sees it."""
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(f"stand-in {comm} exited with {proc.returncode}")
            try:
                if Path(f"/proc/{proc.pid}/comm").read_text().strip() == comm[:15]:
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError(f"stand-in {comm} did not start")

    def kube_proxy(self, *flags: str, config: Path | None = None, config_at: str = "/var/lib/kube-proxy/config.conf",
                   hide: list[str] | None = None, path: str = BIN_PATH) -> subprocess.Popen[Any]:
        """kube-proxy as kubeadm's DaemonSet runs it: `/usr/local/bin/kube-proxy --config=... --hostname-override=`."""
        args = list(flags)
        files = {}
        if config is not None:
            args.insert(0, f"--config={config_at}")
            files[config_at] = config
        return self.spawn_standin("kube-proxy", "/usr/local/bin/kube-proxy", args, files=files, hide=hide, path=path)

    def kubelet(self, *flags: str, config: Path | None = None, config_at: str = "/var/lib/kubelet/config.yaml"
                ) -> subprocess.Popen[Any]:
        """kubelet as kubeadm's systemd drop-in starts it."""
        args = ["--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
                "--kubeconfig=/etc/kubernetes/kubelet.conf", *flags]
        files = {}
        if config is not None:
            args.append(f"--config={config_at}")
            files[config_at] = config
        return self.spawn_standin("kubelet", "/usr/bin/kubelet", args, files=files)

    def kube_proxy_http(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(self.argv(PY, str(STANDINS / "kube_proxy_http.py"), *args), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise AssertionError("kube-proxy HTTP stand-in did not start")
        return proc

    def healthy_kube_proxy(self, *http_args: str) -> None:
        """A kube-proxy as on a fresh kubeadm cluster, answering on its endpoints."""
        self.healthy_basics()
        self.kube_proxy("--hostname-override=test-node", config=DATA / "kubeadm" / "kube-proxy-config.conf")
        self.kubelet("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock",
                     config=DATA / "kubeadm" / "kubelet-config.yaml")
        self.kube_proxy_http(*http_args)

    # bridges and pods -------------------------------------------------------------------------------
    def bridge(self, name: str, *, promisc: bool = False) -> None:
        """A Linux bridge as kubenet (cbr0) or the CNI bridge plugin (cni0) creates it."""
        self.sh("ip", "link", "add", name, "type", "bridge")
        self.sh("ip", "link", "set", name, "promisc", "on" if promisc else "off", "up")

    def pod_on_bridge(self, bridge: str, ip: str, *, hairpin: bool, sandbox: bool = False) -> tuple[str, str]:
        """A pod as the bridge plugin wires it: its own netns `svcd-<8 hex>` with eth0 at `ip`/24, the
        veth's host end on `bridge` with hairpin on or off. `sandbox` starts a pause process in it (the
        pod's infra container), so it is also found through /proc. Returns (host interface, pod netns)."""
        pod = f"svcd-{secrets.token_hex(4)}"
        port = f"veth{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", pod], check=True)
        self.pod_namespaces.append(pod)
        self.sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", pod)
        self.sh("ip", "link", "set", port, "master", bridge, "up")
        self.sh("ip", "link", "set", port, "type", "bridge_slave", "hairpin", "on" if hairpin else "off")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"]):
            subprocess.run(["ip", "netns", "exec", pod, *cmd], check=True)
        if sandbox:
            proc = subprocess.Popen(["ip", "netns", "exec", pod, str(standin_binary("pause"))],
                                    stdin=subprocess.DEVNULL)
            self.procs.append(proc)
            self._wait_exec(proc, "pause")
        return port, pod

    def tcp_listener(self, netns: str, ip: str, port: int = 80) -> None:
        """A TCP server in `netns` on ip:port (IPv4 or IPv6) that answers each connection with "ok" and closes it,
        standing for a Service's endpoint; returns once it listens, and is killed with the node."""
        proc = subprocess.Popen(["ip", "netns", "exec", netns, PY, "-c", _LISTEN, ip, str(port)],
                                stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    # more namespaces: clients, other nodes ------------------------------------------------------------
    def other_netns(self, *, forwarding: bool = False) -> str:
        """A bare namespace `svcd-<8 hex>` beside this node (an off-cluster client, a second node, a pod there),
        deleted with it, with `plain_routing`."""
        ns = f"svcd-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.pod_namespaces.append(ns)
        in_ns(ns, "ip", "link", "set", "lo", "up")
        plain_routing(ns)
        in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.ip_forward={int(forwarding)}")
        return ns

    @staticmethod
    def wire(a: str, a_ip: str, b: str, b_ip: str = "", *, b_master: str = "") -> str:
        """A veth from namespace `a` (address `a_ip`, CIDR) to namespace `b`, where its end gets `b_ip` or joins
        the bridge `b_master`. Returns the name of `a`'s end."""
        a_end, b_end = f"veth{secrets.token_hex(4)}", f"veth{secrets.token_hex(4)}"
        in_ns(a, "ip", "link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", b)
        in_ns(a, "ip", "addr", "add", a_ip, "dev", a_end)
        in_ns(a, "ip", "link", "set", a_end, "up")
        if b_ip:
            in_ns(b, "ip", "addr", "add", b_ip, "dev", b_end)
        if b_master:
            in_ns(b, "ip", "link", "set", b_end, "master", b_master)
        in_ns(b, "ip", "link", "set", b_end, "up")
        return a_end

    # svcdoctor ----------------------------------------------------------------------------------------
    def svcdoctor(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(PY, "-m", "agent", *args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def check(self, *args: str) -> tuple[int, dict[str, Any]]:
        res = self.svcdoctor("check", "--json", "--node-name", "test-node", *args)
        if res.returncode not in (0, 1):
            raise AssertionError(f"svcdoctor check exited {res.returncode}: {res.stderr}")
        return res.returncode, json.loads(res.stdout)

    def serve(self, *args: str, port: int = 9100) -> subprocess.Popen[str]:
        """`svcdoctor serve` in this netns; returns once /healthz answers with a completed check."""
        proc = subprocess.Popen(self.argv(PY, "-m", "agent", "serve", "--node-name", "test-node", "--port", str(port),
                                          *args), cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            res = self.sh(PY, str(STANDINS / "http_get.py"), f"http://127.0.0.1:{port}/healthz", check=False)
            if res.returncode == 0 and json.loads(res.stdout)[0]["body"] == "ok\n":
                return proc
            time.sleep(0.1)  # polling for readiness, bounded by the deadline
        raise AssertionError("svcdoctor serve did not become ready")

    def http(self, *urls: str) -> list[dict[str, Any]]:
        """GET each URL from inside the netns: [{"url", "status", "body"}]."""
        res: list[dict[str, Any]] = json.loads(self.sh(PY, str(STANDINS / "http_get.py"), *urls).stdout)
        return res

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        for pod in self.pod_namespaces:
            subprocess.run(["ip", "netns", "del", pod], check=False)


def in_ns(ns: str, *cmd: str) -> str:
    """Run `cmd` in namespace `ns`; its stdout, or an AssertionError with its stderr."""
    res = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} in {ns} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def plain_routing(ns: str) -> None:
    """No reverse-path filter and no ICMP redirects in `ns` (call before wiring it): a reply that comes back
    another way reaches the socket, which refuses it, and a node that forwards on the link a packet came in by
    does not teach the sender a shortcut around it (conntrack would NAT the redirect's inner header too)."""
    for key in ("all", "default"):
        in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{key}.rp_filter=0")
        in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{key}.send_redirects=0")
        in_ns(ns, "sysctl", "-q", "-w", f"net.ipv4.conf.{key}.accept_redirects=0")


def _strip_save_comments(text: str) -> str:
    """iptables-save prints a timestamp in its header/footer comments: drop them, keep the rules."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def ids(doc: dict[str, Any], *, severities: tuple[str, ...] = ("critical", "warning", "info")) -> set[str]:
    return {f["id"] for f in doc["findings"] if f["severity"] in severities}


def problems(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(id, subject-or-service) of every warning or critical finding."""
    return {(f["id"], f["service"] or f["subject"]) for f in doc["findings"] if f["severity"] != "info"}


def by_id(doc: dict[str, Any], fid: str) -> list[dict[str, Any]]:
    return [f for f in doc["findings"] if f["id"] == fid]


def gone(pid: int, within_s: float = 10.0) -> bool:
    """True once `pid` no longer exists (killed and reaped by init), polled up to within_s."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # killed, waiting for init to reap it
            return True
        time.sleep(0.02)  # polling the kernel's process table, bounded by the deadline
    return False
