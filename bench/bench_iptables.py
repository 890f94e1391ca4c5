"""Benchmark: svcdoctor's iptables read and check against the bare `iptables-<backend>-save` it runs.

For each size N (Services, E endpoints each) and backend, a kube-proxy-shaped rule set from
bench/gen_iptables.py plus node-base.rules is loaded into a fresh network namespace `svcd-bench-<hex>`
(deleted afterwards). Inside it, 3 times in a fresh process each: the bare save to /dev/null, then svcdoctor's
full iptables path (collector read with backend detection + every iptables check + programmed_ports);
the table shows the medians, their ratio, and svcdoctor's peak RSS (the largest VmHWM of those
processes, interpreter and imports included, about 40 MiB; the save child is not counted). Needs root.

    python bench/bench_iptables.py 1000:legacy 10000:legacy 1000:nft 10000:nft [--endpoints 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen_iptables import generate  # noqa: E402

NODE_BASE = REPO.parent / "shared" / "fixtures" / "kube-proxy" / "iptables" / "node-base.rules"
RUNS = 3

# Runs inside the netns: one measurement of each, printed as JSON.
INNER = r"""
import json, statistics, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from agent.checks import iptables_backend, iptables_services, iptables_structure
from agent.checks.programmed_iptables import programmed_ports
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.model import KubeProxyHTTP, ProcessInfo, Snapshot, Source
backend, runs = sys.argv[2], int(sys.argv[3])
kp = ProcessInfo(pid=1, comm="kube-proxy", argv=["kube-proxy"], flags={}, root="/", env_path=[])
bare, ours, rules, ports = [], [], 0, 0
for _ in range(runs):
    t0 = time.perf_counter()
    subprocess.run([f"iptables-{backend}-save"], stdout=subprocess.DEVNULL, check=True)
    bare.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    state = IptablesReader().collect(CollectContext(cfg=Config(), deadline_s=600))
    snap = Snapshot(node="bench", taken_at=time.time(), agent_version="bench",
                    kube_proxy=Source("kube_proxy", ok=True, data=kp), kubelet=Source("kubelet", ok=True),
                    kube_proxy_http=Source("kube_proxy_http", ok=True, data=KubeProxyHTTP(version="v1.31.2")),
                    conntrack=Source("conntrack", ok=True), sysctl=Source("sysctl", ok=True),
                    links=Source("links", ok=True), iptables=Source("iptables", ok=True, data=state))
    findings = [f for mod in (iptables_backend, iptables_structure, iptables_services) for f in mod.check(snap)]
    ports = len(programmed_ports(state))
    ours.append(time.perf_counter() - t0)
    assert state.backend == backend, state.backend_reason
    problems = [f.id for f in findings if f.severity != "info"]
    assert not problems, problems[:5]
    rules = sum(t.rule_count for r in state.rulesets for t in r.tables.values())
    del state, snap, findings
print(json.dumps({"bare": bare, "ours": ours, "rules": rules, "ports": ports,
                  # VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the forking parent
                  "rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""


def run(services: int, endpoints: int, backend: str) -> dict[str, float]:
    ns = f"svcd-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def sh(*cmd: str, stdin: str | None = None) -> str:
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True,
                                  check=True).stdout

        t0 = time.perf_counter()
        sh(f"iptables-{backend}-restore", "-w", "5", stdin="".join(generate(services, endpoints)))
        sh(f"iptables-{backend}-restore", "-w", "5", "--noflush", stdin=NODE_BASE.read_text())
        load_s = time.perf_counter() - t0
        # one measurement pair per process: the peak RSS is that of one check, as in `svcdoctor check`
        outs = [json.loads(sh(sys.executable, "-c", INNER, str(REPO), backend, "1")) for _ in range(RUNS)]
        bare = statistics.median(o["bare"][0] for o in outs)
        ours = statistics.median(o["ours"][0] for o in outs)
        return {"services": services, "backend": backend, "rules": outs[0]["rules"], "ports": outs[0]["ports"],
                "load_s": load_s, "bare_s": bare, "ours_s": ours, "ratio": ours / bare,
                "rss_mib": max(o["rss_mib"] for o in outs)}
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="+", help="SERVICES:BACKEND, e.g. 10000:legacy")
    ap.add_argument("--endpoints", type=int, default=5)
    args = ap.parse_args()
    print("| Services x endpoints | backend | rules | bare save (s) | svcdoctor read+check (s) | ratio | "
          "svcdoctor peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        n, backend = case.split(":")
        r = run(int(n), args.endpoints, backend)
        print(f"| {int(n):,} x {args.endpoints} | {backend} | {r['rules']:,} | {r['bare_s']:.2f} | {r['ours_s']:.2f} "
              f"| {r['ratio']:.2f} | {r['rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
