"""Time of the links collector per number of pods on a bridge, and where it finds their namespaces.

For each size it builds a node netns with a bridge and N pods (each its own netns `svcd-<8 hex>`, a
veth pair, an address) and runs the links collector inside the node netns, twice: with the pods'
named namespaces visible (<host-root>/run/netns, as containerd and CRI-O bind-mount them) and with
only /proc to go by (a process per pod, as a pod's pause), and once more with only /proc under the
DaemonSet's capabilities (no CAP_SYS_ADMIN: /proc/<pid>/net instead of netlink inside the pod).

    python bench/links_pods.py            # 10, 50, 110 pods (110: kubelet's default maxPods)
    python bench/links_pods.py 20 200

Needs root and iproute2. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

PROBE = """
import json, sys, time
from pathlib import Path
from agent.collect.base import CollectContext
from agent.collect.links import collect
from agent.config import Config
t = time.perf_counter()
links = collect(CollectContext(Config(root=Path(sys.argv[1])), 60))
took = time.perf_counter() - t
ports = [p for b in links.bridges for p in b.ports]
print(json.dumps({"seconds": took, "scanned": links.netns_scanned, "ports": len(ports),
                  "resolved": sum(1 for p in ports if p.pod_ips)}))
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


# The DaemonSet's capabilities (deploy/daemonset.yaml): no CAP_SYS_ADMIN, so no setns.
CONFINED = ["setpriv", "--bounding-set", "-all,+net_admin,+net_raw,+sys_ptrace", "--inh-caps", "-all",
            "--no-new-privs", "--"]


def measure(node: str, root: Path, confined: bool = False) -> dict[str, float]:
    out = subprocess.run(["ip", "netns", "exec", node, *(CONFINED if confined else []), PY, "-c", PROBE, str(root)],
                         check=True, capture_output=True, text=True, cwd=REPO).stdout
    result: dict[str, float] = json.loads(out)
    return result


def run(pods: int) -> list[tuple[str, dict[str, float]]]:
    node = f"svcd-{secrets.token_hex(4)}"
    names: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    sh("ip", "netns", "add", node)
    try:
        sh("ip", "netns", "exec", node, "ip", "link", "add", "cni0", "type", "bridge")
        for i in range(pods):
            pod = f"svcd-{secrets.token_hex(4)}"
            names.append(pod)
            sh("ip", "netns", "add", pod)
            port = f"veth{secrets.token_hex(4)}"
            sh("ip", "netns", "exec", node, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", pod)
            sh("ip", "netns", "exec", node, "ip", "link", "set", port, "master", "cni0", "up")
            sh("ip", "netns", "exec", pod, "ip", "addr", "add", f"10.88.{i // 250}.{i % 250 + 2}/16", "dev", "eth0")
            procs.append(subprocess.Popen(["ip", "netns", "exec", pod, "sleep", "600"]))
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / "named"
            (named / "run").mkdir(parents=True)
            (named / "run" / "netns").symlink_to("/run/netns")
            by_proc = Path(tmp) / "proc-only"
            by_proc.mkdir()
            time.sleep(0.2)  # let the sleep processes exec (only the /proc case needs them)
            return [("run/netns, netlink (root)", measure(node, named)),
                    ("/proc only, netlink (root)", measure(node, by_proc)),
                    ("/proc only, /proc/<pid>/net (DaemonSet caps)", measure(node, by_proc, confined=True))]
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", node], check=False)
        for pod in names:
            subprocess.run(["ip", "netns", "del", pod], check=False)


def main(argv: list[str]) -> None:
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    sizes = [int(a) for a in argv] or [10, 50, 110]
    print("| pods | via | collect (s) | namespaces scanned | pod IPs resolved |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for n in sizes:
        for via, r in run(n):
            resolved = f"{int(r['resolved'])}/{int(r['ports'])}"
            print(f"| {n} | {via} | {r['seconds']:.2f} | {int(r['scanned'])} | {resolved} |")


if __name__ == "__main__":
    main(sys.argv[1:])
