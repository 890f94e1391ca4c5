"""Peak memory and time of `svcdoctor check` and of its `iptables-save` children, per cluster size.

The DaemonSet's resource requests and limits (deploy/daemonset.yaml) are sized from this table: the
memory limit is per container, so it must hold the agent *and* an iptables-save child at once.
For each size it builds a node in a fresh network namespace, loads a kube-proxy-shaped rule set
(bench/gen_iptables.py: N Services x E endpoints) with one iptables backend, and measures the peak
memory of the whole process tree and the wall time of:
  - `iptables-<backend>-save`, run alone;
  - `svcdoctor check --json` (collect + check, everything the agent does per interval, its
    iptables-save children included).
Then the same with the other backend.

    python bench/resources.py                 # 1000, 5000, 10000 Services x 5 endpoints
    python bench/resources.py 2000x3 20000x2  # other sizes

Needs root, iproute2, iptables. Prints a Markdown table.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen_iptables import generate, rule_count  # noqa: E402

DEFAULT_SIZES = ((1000, 5), (5000, 5), (10000, 5))


def in_netns(ns: str, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True,
                          check=True, timeout=900)


def measured(ns: str, *cmd: str) -> tuple[float, float]:
    """(peak memory in MiB, wall seconds) of one command run inside the namespace. The peak is of the
    RSS summed over the whole process tree, sampled every 20 ms: what a container's memory limit sees
    while the agent and its iptables-save child run at once."""
    started = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=REPO)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        peak = max(peak, total)
        time.sleep(0.02)  # sampling interval
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):  # svcdoctor check exits 1 when it finds something
        err = proc.stderr.read()[-500:] if proc.stderr else b""
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err!r}")
    return peak / 2**20, wall


AGENT = (sys.executable, "-m", "agent", "check", "--json", "--node-name", "bench")


def bench(services: int, endpoints: int) -> dict[str, str]:
    """One node per backend: kube-proxy writes through one of them, and the agent reads what is there."""
    rules = "".join(generate(services, endpoints))
    row = {"services x endpoints": f"{services} x {endpoints}", "nat rules": str(rule_count(rules))}
    for backend in ("legacy", "nft"):
        ns = f"svcd-bench-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            in_netns(ns, f"iptables-{backend}-restore", "-w", "5", stdin=rules)
            save_mib, save_s = measured(ns, f"iptables-{backend}-save")
            agent_mib, agent_s = measured(ns, *AGENT)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        row[f"iptables-{backend}-save"] = f"{save_mib:.0f} MiB, {save_s:.2f} s"
        row[f"svcdoctor check, {backend} rules"] = f"{agent_mib:.0f} MiB, {agent_s:.2f} s"
    return row


def main(argv: list[str]) -> None:
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    sizes = [tuple(int(x) for x in a.split("x")) for a in argv] or list(DEFAULT_SIZES)
    rows = [bench(s, e) for s, e in sizes]
    head = list(rows[0])
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in rows:
        print("| " + " | ".join(row[h] for h in head) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
