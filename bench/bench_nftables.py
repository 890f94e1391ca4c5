"""nftables mode at scale: bare `nft -j list table ip kube-proxy` next to svcdoctor's nftables read and
comparison, on kube-proxy-shaped tables of N Services x E endpoints loaded into a private netns.

    .venv/bin/python bench/bench_nftables.py                 # 1k and 10k Services x 5 endpoints
    .venv/bin/python bench/bench_nftables.py --sizes 1000 --endpoints 5 --runs 3

Columns: the bare full list (what an operator or a naive reader runs), its child's peak RSS; svcdoctor's
read (the collector as the agent runs it: targeted `nft -j list map|set`, then nf_tables netlink dumps
of the chains and rules), its comparison (programmed_ports + the structure checks + the expected-vs-actual
diff against the generated cluster state), the nft children's peak RSS, and svcdoctor's own peak RSS
over the read, programmed_ports and the structure checks (the process's VmHWM, reset just before).
A second table: CPU (the process and its nft children) of the bare list, of the agent's reader's whole
read, and of its next read while the nf_tables generation is unchanged (one netlink request).
Best of --runs.
Needs root (netns).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gen_nftables import generate

MIB = 1024 * 1024


def bare_list(ns: str) -> tuple[float, float, float]:
    """Wall seconds, the child's peak RSS (MiB) and its CPU seconds of `nft -j list table ip kube-proxy`
    (output discarded)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "ip", "kube-proxy"],
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"nft list failed ({proc.returncode})")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the nft processes a read starts)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(cluster_file: str) -> None:
    """Runs inside the netns: svcdoctor's read and comparison, timed; prints one JSON line. The peak RSS
    covers the read, programmed_ports and the structure checks; the cluster state (the API side, 34 MiB
    retained at 10k per bench_cluster.py, more while its JSON is parsed here) is built afterwards."""
    from agent.checks.expected import expected_ports
    from agent.checks.nftables import check_table
    from agent.checks.programmed_nftables import programmed_services
    from agent.checks.rules import compare
    from agent.collect.base import CollectContext
    from agent.collect.nftables import NftablesReader
    from agent.config import Config
    from agent.kubeobjects import state_from_items

    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: count only what follows
    before = _vm("VmRSS")
    ctx = CollectContext(cfg=Config(node_name="test-node"), deadline_s=300)
    reader = NftablesReader()  # as the agent holds it: the second read finds the generation unchanged
    c0, t0 = cpu_s(), time.monotonic()
    state = reader.read(ctx)
    c1, t1 = cpu_s(), time.monotonic()
    again = reader.read(ctx)
    c2 = cpu_s()
    assert again.tables is state.tables
    view = programmed_services(state)
    structure = [f for t in state.tables for f in check_table(t)]
    t2 = time.monotonic()
    rss_peak = _vm("VmHWM")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cluster = state_from_items(json.loads(Path(cluster_file).read_text())["items"], "test-node", "bench", 0)
    t3 = time.monotonic()
    view = programmed_services(state, cluster)
    diffs = list(compare(expected_ports(cluster, "test-node"), view))
    t4 = time.monotonic()
    print(json.dumps({"read_s": t1 - t0, "read_cpu_s": c1 - c0, "unchanged_cpu_s": c2 - c1,
                      "compare_s": (t2 - t1) + (t4 - t3), "rss_peak_mib": rss_peak,
                      "rss_before_mib": before, "children_rss_mib": children, "ports": len(view.ports),
                      "structure_findings": len(structure), "diff_findings": len(diffs), "mode": state.read_mode}))


def measure(n: int, e: int, runs: int) -> dict[str, Any]:
    text, cluster = generate(n, e)
    rules = sum(1 for line in text.splitlines() if line.startswith("add rule"))
    ns = f"svcd-bench-nft-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp:
        nft_file, cluster_file = Path(tmp) / "rules.nft", Path(tmp) / "cluster.json"
        nft_file.write_text(text)
        cluster_file.write_text(json.dumps(cluster))
        del text, cluster
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            t0 = time.monotonic()
            subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(nft_file)], check=True)
            load_s = time.monotonic() - t0
            bares = [bare_list(ns) for _ in range(runs)]
            bare = min(bares)
            ours: list[dict[str, Any]] = []
            for _ in range(runs):
                out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--worker",
                                      str(cluster_file)], check=True, capture_output=True, text=True).stdout
                ours.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    best = min(ours, key=lambda r: r["read_s"] + r["compare_s"])
    return {"n": n, "e": e, "rules": rules, "load_s": load_s, "bare_s": bare[0], "bare_rss": bare[1],
            "bare_cpu_s": min(b[2] for b in bares), "unchanged_cpu_s": min(r["unchanged_cpu_s"] for r in ours), **{
                k: v for k, v in best.items() if k != "unchanged_cpu_s"}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--endpoints", type=int, default=5)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--worker", metavar="CLUSTER_JSON", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker)
        return
    print("| services x endpoints | rules | bare `nft -j list table` (s) | bare nft RSS (MiB) | svcdoctor read (s) "
          "| compare (s) | read + compare (s) | vs bare | nft children RSS (MiB) | svcdoctor RSS (MiB) | ports |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    fast: list[str] = []
    for n in (int(s) for s in a.sizes.split(",")):
        r = measure(n, a.endpoints, a.runs)
        fast.append(f"| {n} x {r['e']} | {r['bare_cpu_s']:.2f} | {r['read_cpu_s']:.2f} "
                    f"| {r['unchanged_cpu_s'] * 1000:.1f} | {r['unchanged_cpu_s'] / r['read_cpu_s']:.5f} "
                    f"| {r['unchanged_cpu_s'] / r['bare_cpu_s']:.5f} | {100 * r['unchanged_cpu_s'] / 30:.3f}% |")
        total = r["read_s"] + r["compare_s"]
        print(f"| {n} x {r['e']} | {r['rules']} | {r['bare_s']:.2f} | {r['bare_rss']:.0f} | {r['read_s']:.2f} "
              f"| {r['compare_s']:.2f} | {total:.2f} | {total / r['bare_s']:.2f}x | {r['children_rss_mib']:.0f} "
              f"| {r['rss_peak_mib']:.0f} | {r['ports']} |", flush=True)
        if r["structure_findings"] or r["diff_findings"]:
            print(f"  (unexpected findings: {r['structure_findings']} structure, {r['diff_findings']} diff)")
    print("\n| services x endpoints | bare `nft -j list table` CPU (s) | whole read CPU (s) "
          "| unchanged read CPU (ms) | unchanged / whole | unchanged / bare | a core, one read per 30 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(fast))


if __name__ == "__main__":
    main()
