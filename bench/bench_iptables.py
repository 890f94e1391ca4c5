"""Benchmark: svcdoctor's iptables read and check against the bare `iptables-<backend>-save` it runs.

For each size N (Services, E endpoints each) and backend, a kube-proxy-shaped rule set from
bench/gen_iptables.py plus node-base.rules is loaded into a fresh network namespace `svcd-bench-<hex>`
(deleted afterwards). Inside it, one process does its reads in a row with one reader, as the agent
does them, each right after a bare save to /dev/null of the same rules:
- cold: nothing to reuse (the agent's first read), once;
- unchanged: the rules as they were (most reads between kube-proxy syncs), READS times;
- changed: after a partial sync (iptables-restore --noflush, as kube-proxy writes it) moved one
  endpoint of 1% of the Services, READS times (moved there, back, there...).
"read+check" is svcdoctor's full iptables path: collector read with backend detection, every iptables
check and programmed_ports; around each read the process holds and settles its heap as the agent's
scheduler does around each run (agent/heap.py). RUNS runs, each in a fresh process from the same rules;
the table shows the medians over all reads of a kind, the median ratio of each read to its own bare save
with their range, and svcdoctor's peak RSS (the largest VmHWM of those processes, interpreter and imports
included, about 36 MiB; the save child is not counted). Needs root.

    python bench/bench_iptables.py 1000:legacy 10000:legacy 1000:nft 10000:nft [--endpoints 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen_iptables import changed_endpoints, generate  # noqa: E402

NODE_BASE = REPO / "tests" / "fixtures" / "kube-proxy" / "iptables" / "node-base.rules"
RUNS = 5
READS = 5  # unchanged and changed reads per run: one bare save alone varies by 10-20%

# Runs inside the netns, in one process, reads in a row by one reader (as the agent does them), each timed
# against a bare save just before it: the first (nothing to reuse), READS with the rules unchanged, and
# READS after partial syncs that each move one endpoint of 1% of the Services (there, then back, and so
# on). Printed as JSON.
INNER = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from agent.checks import iptables_backend, iptables_services, iptables_structure
from agent.checks.programmed_iptables import programmed_ports
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.heap import HeapKeeper
from agent.model import KubeProxyHTTP, ProcessInfo, Snapshot, Source
backend, reads = sys.argv[2], int(sys.argv[3])
changes = json.loads(sys.stdin.read())  # the partial sync there, and back
heap = HeapKeeper()  # as the agent's scheduler does around each run
kp = ProcessInfo(pid=1, comm="kube-proxy", argv=["kube-proxy"], flags={}, root="/", env_path=[])
reader = IptablesReader(budget=1.0)  # no pacing: every collect reads
out = {}
plan = [("cold", None)] + [("unchanged", None)] * reads + [("changed", changes[i % 2]) for i in range(reads)]
for label, change in plan:
    if change is not None:
        subprocess.run([f"iptables-{backend}-restore", "-w", "5", "--noflush"], input=change, text=True, check=True)
    t0 = time.perf_counter()
    subprocess.run([f"iptables-{backend}-save"], stdout=subprocess.DEVNULL, check=True)
    bare = time.perf_counter() - t0
    heap.hold()
    t0 = time.perf_counter()
    state = reader.collect(CollectContext(cfg=Config(), deadline_s=600))
    snap = Snapshot(node="bench", taken_at=time.time(), agent_version="bench",
                    kube_proxy=Source("kube_proxy", ok=True, data=kp), kubelet=Source("kubelet", ok=True),
                    kube_proxy_http=Source("kube_proxy_http", ok=True, data=KubeProxyHTTP(version="v1.31.2")),
                    conntrack=Source("conntrack", ok=True), sysctl=Source("sysctl", ok=True),
                    links=Source("links", ok=True), iptables=Source("iptables", ok=True, data=state))
    findings = [f for mod in (iptables_backend, iptables_structure, iptables_services) for f in mod.check(snap)]
    ports = len(programmed_ports(state))
    ours = time.perf_counter() - t0
    assert state.backend == backend, state.backend_reason
    problems = [f.id for f in findings if f.severity != "info"]
    assert not problems, problems[:5]
    cache = reader.caches[4, backend]
    seen = out.setdefault(label, {"bare": [], "ours": [], "parsed": cache.parsed, "reused": cache.reused,
                                  "rules": sum(t.rule_count for r in state.rulesets for t in r.tables.values())})
    seen["bare"].append(bare)
    seen["ours"].append(ours)
    del state, snap, findings
    heap.settle()
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would count the forking parent
out["rss_mib"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(out))
"""
LABELS = ("cold", "unchanged", "changed")


def run(services: int, endpoints: int, backend: str) -> dict[str, object]:
    ns = f"svcd-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def sh(*cmd: str, stdin: str | None = None) -> str:
            done = subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{cmd[0]} failed: {done.stderr.strip()[-2000:]}")
            return done.stdout

        rules = "".join(generate(services, endpoints))
        changes = json.dumps(["".join(changed_endpoints(services, endpoints, every=100, back=back))
                              for back in (False, True)])
        outs = []
        for _ in range(RUNS):  # each run starts from the same rules, in a fresh process
            sh(f"iptables-{backend}-restore", "-w", "5", stdin=rules)
            sh(f"iptables-{backend}-restore", "-w", "5", "--noflush", stdin=NODE_BASE.read_text())
            outs.append(json.loads(sh(sys.executable, "-c", INNER, str(REPO), backend, str(READS), stdin=changes)))
        result: dict[str, object] = {"rules": outs[0]["cold"]["rules"], "rss_mib": max(o["rss_mib"] for o in outs)}
        for label in LABELS:
            bare = [b for o in outs for b in o[label]["bare"]]
            ours = [t for o in outs for t in o[label]["ours"]]
            result[label] = {"bare": statistics.median(bare), "ours": statistics.median(ours),
                             "ratio": statistics.median(t / b for t, b in zip(ours, bare, strict=True)),
                             "spread": (min(t / b for t, b in zip(ours, bare, strict=True)),
                                        max(t / b for t, b in zip(ours, bare, strict=True))),
                             "reads": len(ours), "parsed": outs[0][label]["parsed"],
                             "reused": outs[0][label]["reused"]}
        return result
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases", nargs="+", help="SERVICES:BACKEND, e.g. 10000:legacy")
    ap.add_argument("--endpoints", type=int, default=5)
    args = ap.parse_args()
    print("| Services x endpoints | backend | rules | read | reads | pieces parsed / reused | bare save (s) "
          "| svcdoctor read+check (s) | ratio (min-max) | svcdoctor peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        n, backend = case.split(":")
        r = run(int(n), args.endpoints, backend)
        for label in LABELS:
            m = r[label]
            assert isinstance(m, dict)
            low, high = m["spread"]
            print(f"| {int(n):,} x {args.endpoints} | {backend} | {r['rules']:,} | {label} | {m['reads']} | "
                  f"{m['parsed']:,} / {m['reused']:,} | {m['bare']:.2f} | {m['ours']:.2f} | "
                  f"{m['ratio']:.2f} ({low:.2f}-{high:.2f}) | {r['rss_mib']:.0f} |", flush=True)

if __name__ == "__main__":
    main()
