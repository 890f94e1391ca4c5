"""Benchmark: `svcdoctor explain` for one Service from the agent's cached state (issue 18).

N Services x E endpoints (default 10k x 5), the cluster objects and kube-proxy's iptables rules for them
(bench/gen_iptables.py: the same names, ClusterIPs and endpoints), built into a Report as `serve` holds
it after a run (the rules checks have derived the programmed view). Times GET /explain's work for one
Service without probes (explain_response: find the Service, walk the guide, compare its rules, render
JSON), warm (the run's views are there) and cold (the first explain after a new rules read), each the
median of several Services; and, as the bare tool, `grep -F` of the Service's name over the saved rules
(the guide's `iptables-save | grep NAME`) in the same run.

    .venv/bin/python bench/bench_explain.py [--services 10000] [--endpoints 5] [--repeat 15]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.iptables_parse import parse_text

from agent.checks.programmed import programmed
from agent.explain.run import explain_response
from agent.kubeobjects import state_from_items
from agent.model import IptablesState, Source
from agent.runner import Report
from bench.gen_iptables import CLUSTER_BASE, POD_BASE, generate
from tests.snapshots import NOW, healthy

NODE = "node-1"


def _ip(base: int, i: int) -> str:
    return str(ipaddress.IPv4Address(base + i))


def objects(n: int, e: int) -> list[dict[str, Any]]:
    """The API objects bench/gen_iptables.py's rules were written for."""
    out: list[dict[str, Any]] = [{"kind": "Node", "metadata": {"name": NODE}}]
    t = "2020-01-01T00:00:00Z"
    for i in range(n):
        port: dict[str, Any] = {"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080}
        typ = "ClusterIP"
        if i % 10 == 9 and i % 50 != 49:  # gen_iptables writes no NodePort for its Services without endpoints
            port["nodePort"], typ = 30000 + i % 2768, "NodePort"
        out.append({"kind": "Service", "metadata": {"namespace": f"ns{i}", "name": f"svc{i}", "creationTimestamp": t},
                    "spec": {"type": typ, "clusterIP": _ip(CLUSTER_BASE, i + 1), "ports": [port],
                             "selector": {"app": f"svc{i}"}}})
        eps = [] if i % 50 == 49 else [{"addresses": [_ip(POD_BASE, i * e + j)], "nodeName": f"node-{j}",
                                       "conditions": {"ready": True}} for j in range(e)]
        out.append({"kind": "EndpointSlice", "addressType": "IPv4", "metadata": {
            "namespace": f"ns{i}", "name": f"svc{i}-x", "labels": {"kubernetes.io/service-name": f"svc{i}"},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": t}},
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}], "endpoints": eps})
    return out


def report(rules: str, n: int, e: int) -> Report:
    state = state_from_items(objects(n, e), NODE, "bench", NOW)
    ipt = IptablesState(backend="legacy", backend_reason="bench", rulesets=[parse_text(rules)], read_at=NOW)
    snap = healthy(cluster=Source("cluster", ok=True, data=state), iptables=Source("iptables", ok=True, data=ipt))
    snap.node = NODE
    return Report(snapshot=snap, findings=(), proxy_mode="iptables", generated_at=NOW)


def _time(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=15)
    a = ap.parse_args()
    rules = "".join(generate(a.services, a.endpoints))
    picks = [(k * 7919) % a.services for k in range(a.repeat)]
    warm, cold, grep = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "rules"
        saved.write_text(rules)
        rep = report(rules, a.services, a.endpoints)
        programmed(rep.snapshot)  # what the agent's run derived already
        for i in picks:
            status, body = explain_response(rep, f"service=ns{i}/svc{i}&probes=0", prober=None)
            assert status == 200, body
            warm.append(_time(lambda i=i: explain_response(rep, f"service=ns{i}/svc{i}&probes=0", prober=None)))
            grep.append(_time(lambda i=i: subprocess.run(["grep", "-F", f"ns{i}/svc{i}:", str(saved)],
                                                         capture_output=True, check=False)))
        for i in picks[:5]:  # a fresh snapshot each: nothing derived yet
            fresh = report(rules, a.services, a.endpoints)
            cold.append(_time(lambda i=i, r=fresh: explain_response(r, f"service=ns{i}/svc{i}&probes=0", prober=None)))
    w, c, g = statistics.median(warm), statistics.median(cold), statistics.median(grep)
    print(f"| {a.services} x {a.endpoints} | {w * 1000:.1f} | {c:.2f} | {g * 1000:.1f} | {w / g:.2f} |")


if __name__ == "__main__":
    main()
