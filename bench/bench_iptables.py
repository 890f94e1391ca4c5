"""Benchmark: svcdoctor's iptables read against the bare `iptables-<backend>-save` it runs, in one run.

For each case (N Services x E endpoints, backend) a kube-proxy-shaped rule set from bench/gen_iptables.py
plus node-base.rules is loaded into a fresh network namespace `svcd-bench-<hex>` (deleted afterwards).

`check` mode, side by side, alternating, ROUNDS times:
- the bare save to /dev/null, and the whole `svcdoctor check --json --no-api` process (interpreter start,
  every collector, the derivation and every check), with its peak RSS (VmHWM, the save child not counted);
- one process reading with one IptablesReader as the agent does, each read right after a bare save:
  cold (the first read), unchanged (nothing changed: the nft save is skipped on an unchanged nf_tables
  generation, the legacy save's parse on an unchanged hash) and changed (after a partial sync, written as
  kube-proxy writes it, that moved one endpoint of 1% of the Services, or moved it back), each followed
  by the derivation and every check.

`serve` mode: `svcdoctor serve --no-api --interval 30s` in the namespace for MINUTES minutes after its first
run, with the rules unchanged or with 1% of the Services changing every interval; its CPU time (its own and
its children's: the saves) over the wall time is its share of a core; and its peak RSS. Backend "nftables":
kube-proxy's nftables mode instead (bench/gen_nftables.py; no iptables rules), the mode decided from the node.

`memory` mode: serve's runner in one process in the namespace (its allocator setting, every collector, and the
report as `serve` keeps it), with a whole read every run (no pacing) and a partial sync, or its undo, after each
run: what a changed read costs in memory without waiting for the paced reads of `serve`. Its peak RSS (VmHWM)
and its RSS after each run.

    python bench/bench_iptables.py check 1000:legacy 10000:legacy 1000:nft 10000:nft [--endpoints 5]
    python bench/bench_iptables.py serve 10000:legacy:unchanged 10000:legacy:changing 10000:nft:unchanged ...
    python bench/bench_iptables.py serve 10000:nftables:unchanged 10000:nftables:changing [--minutes 5]
    python bench/bench_iptables.py memory 10000:nftables 10000:legacy [--runs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gen_iptables import changed_endpoints, generate  # noqa: E402
from bench.gen_nftables import changed_endpoints as nft_changes  # noqa: E402
from bench.gen_nftables import generate as nft_rules  # noqa: E402

NODE_BASE = REPO / "tests" / "fixtures" / "kube-proxy" / "iptables" / "node-base.rules"
ROUNDS = 3
READS = 5
MINUTES = 5.0

# The whole `svcdoctor check` process, with its peak RSS printed on stderr (VmHWM: this process only).
CHECK = r"""
import sys
sys.argv = ["svcdoctor", "check", "--json", "--no-api", "--node-name", "bench"]
sys.path.insert(0, __import__("os").environ["SVCD_REPO"])
from agent.cli import main
sys.stdout = open("/dev/null", "w")
code = main(sys.argv[1:])
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024, file=sys.stderr)
"""

# Reads in a row by one reader (as the agent does them), each right after a bare save and each followed
# by the derivation and every check. Printed as JSON.
READS_INNER = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from agent.checks import CHECKS
from agent.checks.derive import derive
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.model import KubeProxyHTTP, ProcessInfo, Snapshot, Source
backend, reads = sys.argv[2], int(sys.argv[3])
changes = json.loads(sys.stdin.read())  # the partial sync there, and back
kp = ProcessInfo(pid=1, comm="kube-proxy", argv=["kube-proxy"], flags={}, root="/", env_path=[])
reader = IptablesReader(budget=1.0)  # no pacing: every call reads
out, views = {}, None
plan = [("cold", None)] + [("unchanged", None)] * reads + [("changed", changes[i % 2]) for i in range(reads)]
for label, change in plan:
    state = snap = findings = None  # as the agent: only the views outlive a run (agent/model/report.py as_served)
    if change is not None:
        subprocess.run([f"iptables-{backend}-restore", "-w", "5", "--noflush"], input=change, text=True, check=True)
    t0 = time.perf_counter()
    subprocess.run([f"iptables-{backend}-save"], stdout=subprocess.DEVNULL, check=True)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = reader(CollectContext(cfg=Config(), deadline_s=600))
    snap = Snapshot(node="bench", taken_at=time.time(), agent_version="bench",
                    kube_proxy=Source("kube_proxy", ok=True, data=kp), kubelet=Source("kubelet", ok=True),
                    kube_proxy_http=Source("kube_proxy_http", ok=True, data=KubeProxyHTTP(version="v1.31.2")),
                    conntrack=Source("conntrack", ok=True), sysctl=Source("sysctl", ok=True),
                    links=Source("links", ok=True), iptables=Source("iptables", ok=True, data=state))
    views = derive(snap, views)  # as the runner does: the last run's views, taken over where unchanged
    findings = [f for fn in CHECKS for f in fn(snap, views)]
    ours = time.perf_counter() - t0
    assert state.backend == backend, state.backend_reason
    problems = [f.id for f in findings if f.severity != "info" and f.id.startswith("iptables.")]
    assert not problems, problems[:5]
    seen = out.setdefault(label, {"bare": [], "ours": [],
                                  "rules": sum(t.rule_count for r in state.rulesets for t in r.tables.values())})
    seen["bare"].append(bare)
    seen["ours"].append(ours)
out["rss_mib"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(out))
"""


# serve's runner with a whole read every run (agent/collect/base.py Paced spaces reads out otherwise); a partial
# sync or its undo after each run. Printed as JSON.
MEMORY_INNER = r"""
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from agent.allocator import fix_mmap_threshold
from agent.cli import build_parser, config_from
from agent.collect.base import Paced
from agent.runner import Runner
backend, runs = sys.argv[2], int(sys.argv[3])
changes = json.loads(sys.stdin.read())
fix_mmap_threshold()  # as agent/cli.py main() does
runner = Runner(config_from(build_parser().parse_args(["serve", "--no-api", "--node-name", "bench"])))
for reader in runner._readers.values():
    if isinstance(reader, Paced):
        reader.budget = 1.0
argv = ["nft", "-f", "-"] if backend == "nftables" else [f"iptables-{backend}-restore", "-w", "5", "--noflush"]
def rss(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) / 1024
served, after = None, []
for run in range(runs):
    served = runner.run_once().as_served()  # what serve keeps until the next run is published
    assert served.proxy_mode == ("nftables" if backend == "nftables" else "iptables"), served.proxy_mode
    after.append(round(rss("VmRSS")))
    subprocess.run(argv, input=changes[run % 2], text=True, check=True)
print(json.dumps({"peak": rss("VmHWM"), "after": after}))
"""


def bench_memory(services: int, endpoints: int, backend: str, runs: int) -> str:
    ns = Netns(services, endpoints, backend)
    try:
        out = json.loads(ns.sh(sys.executable, "-c", MEMORY_INNER, str(REPO), backend, str(runs),
                               stdin=json.dumps(ns.changes)).splitlines()[0])
    finally:
        ns.close()
    after = " ".join(map(str, out["after"]))
    code = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=7", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "?"  # which code: old and new rows come from one script
    return f"| {services:,} x {endpoints} | {backend} | {code} | {runs} | {out['peak']:.0f} | {after} |"


class Netns:
    """A node with kube-proxy's rules through one iptables backend, or in nftables mode ("nftables":
    bench/gen_nftables.py's table, changed as kube-proxy changes it)."""

    def __init__(self, services: int, endpoints: int, backend: str) -> None:
        self.name = f"svcd-bench-{secrets.token_hex(4)}"
        self.backend = backend
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        if backend == "nftables":
            self.sh("nft", "-f", "-", stdin=nft_rules(services, endpoints)[0])
            self.changes = [nft_changes(services, endpoints, every=100, back=back) for back in (False, True)]
            return
        self.rules = "".join(generate(services, endpoints))
        self.changes = ["".join(changed_endpoints(services, endpoints, every=100, back=back)) for back in (False, True)]
        self.sh(f"iptables-{backend}-restore", "-w", "5", stdin=self.rules)
        self.sh(f"iptables-{backend}-restore", "-w", "5", "--noflush", stdin=NODE_BASE.read_text())

    def change(self, flip: int) -> None:
        """A partial sync: one endpoint of 1% of the Services moved (even flips), or moved back (odd)."""
        if self.backend == "nftables":
            self.sh("nft", "-f", "-", stdin=self.changes[flip % 2])
        else:
            self.sh(f"iptables-{self.backend}-restore", "-w", "5", "--noflush", stdin=self.changes[flip % 2])

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def sh(self, *cmd: str, stdin: str | None = None) -> str:
        done = subprocess.run(self.argv(*cmd), input=stdin, capture_output=True, text=True)
        if done.returncode not in (0, 1):  # svcdoctor check exits 1 when it finds something (no API: it may)
            raise SystemExit(f"{cmd[0]} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout + done.stderr

    def timed(self, *cmd: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        out = self.sh(*cmd)
        return time.perf_counter() - t0, out

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def bench_check(services: int, endpoints: int, backend: str, reads: int = READS) -> list[str]:
    ns = Netns(services, endpoints, backend)
    try:
        env = ("/usr/bin/env", f"SVCD_REPO={REPO}")
        bare, ours, rss = [], [], []
        for _ in range(ROUNDS):
            bare.append(ns.timed("sh", "-c", f"iptables-{backend}-save > /dev/null")[0])
            took, out = ns.timed(*env, sys.executable, "-c", CHECK)
            ours.append(took)
            rss.append(float(out.strip().splitlines()[-1]))
        seen = json.loads(ns.sh(sys.executable, "-c", READS_INNER, str(REPO), backend, str(reads),
                                stdin=json.dumps(ns.changes)).splitlines()[0])
    finally:
        ns.close()
    rows = [_row(services, endpoints, backend, "`svcdoctor check` (whole process)", bare, ours, max(rss),
                 seen["cold"]["rules"])]
    for label in ("cold", "unchanged", "changed"):
        rows.append(_row(services, endpoints, backend, f"reader: {label} read + checks", seen[label]["bare"],
                         seen[label]["ours"], seen["rss_mib"], seen["cold"]["rules"]))
    return rows


def _row(services: int, endpoints: int, backend: str, what: str, bare: list[float], ours: list[float], rss: float,
         rules: int) -> str:
    ratios = [t / b for t, b in zip(ours, bare, strict=True)]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    return (f"| {services:,} x {endpoints} | {backend} | {rules:,} | {what} | {len(ours)} "
            f"| {statistics.median(bare):.2f} | {statistics.median(ours):.2f} "
            f"| {statistics.median(ratios):.2f} ({spread}) | {rss:.0f} |")


def bench_serve(services: int, endpoints: int, backend: str, changing: bool, port: int,
                minutes: float = MINUTES) -> str:
    ns = Netns(services, endpoints, backend)
    proc = subprocess.Popen(ns.argv("/usr/bin/env", f"PYTHONPATH={REPO}", sys.executable, "-m", "agent", "serve",
                                    "--no-api", "--node-name", "bench", "--interval", "30s", "--port", str(port),
                                    "--listen", "127.0.0.1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ns.sh("ip", "link", "set", "lo", "up")
        _wait_first_run(ns, port)
        cpu0, t0 = _cpu(proc.pid), time.monotonic()
        flips = 0
        while time.monotonic() - t0 < minutes * 60:
            if changing:
                ns.change(flips)
                flips += 1
            time.sleep(30)
        share = (_cpu(proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    finally:
        proc.terminate()
        proc.wait(10)
        ns.close()
    what = "1% of Services changing every 30 s" if changing else "rules unchanged"
    return (f"| {services:,} x {endpoints} | {backend} | {what} | {minutes:g} min | {share:.2%} | {flips} | "
            f"{rss:.0f} |")


def _cpu(pid: int) -> float:
    """CPU seconds of a process and its waited-for children (the saves it ran)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def _wait_first_run(ns: Netns, port: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        out = subprocess.run(ns.argv("python3", "-c", f"import urllib.request as u; print(u.urlopen("
                                     f"'http://127.0.0.1:{port}/findings', timeout=5).status)"),
                             capture_output=True, text=True)
        if out.stdout.strip() == "200":
            return
        time.sleep(2)
    raise SystemExit("serve never completed a run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("check", "serve", "memory"))
    ap.add_argument("cases", nargs="+",
                    help="SERVICES:BACKEND (check, memory), SERVICES:BACKEND:unchanged|changing (serve)")
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=MINUTES, help="serve: how long to measure")
    ap.add_argument("--reads", type=int, default=READS, help="check: unchanged and changed reads of the reader")
    ap.add_argument("--runs", type=int, default=6, help="memory: runs, each with a whole read")
    args = ap.parse_args()
    if args.mode == "check":
        print("| Services x endpoints | backend | rules | what | runs | bare save (s) | svcdoctor (s) "
              "| ratio (min-max) | svcdoctor peak RSS (MiB) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for case in args.cases:
            n, backend = case.split(":")
            for row in bench_check(int(n), args.endpoints, backend, args.reads):
                print(row, flush=True)
    elif args.mode == "memory":
        print("| Services x endpoints | backend | code | runs (a whole read each) | peak RSS (MiB) "
              "| RSS after each run (MiB) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for case in args.cases:
            n, backend = case.split(":")
            print(bench_memory(int(n), args.endpoints, backend, args.runs), flush=True)
    else:
        print("| Services x endpoints | backend | rules | measured over | serve CPU (share of a core) "
              "| partial syncs | peak RSS (MiB) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for i, case in enumerate(args.cases):
            n, backend, kind = case.split(":")
            print(bench_serve(int(n), args.endpoints, backend, kind == "changing", 19100 + i, args.minutes),
                  flush=True)


if __name__ == "__main__":
    main()
