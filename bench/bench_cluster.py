"""Benchmark: the cluster model at scale (issue 4).

N Services x E endpoints (default 10k x 5 = 50k endpoints, one EndpointSlice per Service) served by the
stand-in kube-apiserver (tests/standins/kube_apiserver.py) on loopback; the agent lists them through the
real `kubernetes` client (raw JSON, pages of 500). Reports, in one run: the initial list time, the memory
the compact cluster model retains (tracemalloc) and the process's peak RSS growth, and the time of the
expected-vs-actual diff over a node whose rules match (the comparison's full cost, no findings).

    .venv/bin/python bench/bench_cluster.py [--services 10000] [--endpoints 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.checks.derive import derive
from agent.checks.expected import expected_ports
from agent.checks.rules import compare_port
from agent.collect.kubeapi import KubeApiProvider, api_client_from
from agent.model import Snapshot, Source
from agent.model.programmed import Dispatch, ProgrammedPort
from tests.standins.kube_apiserver import FakeApiServer

NODE = "node-1"


def objects(n: int, e: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"kind": "Node", "metadata": {"name": NODE},
                                  "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.2"}]}}]
    for i in range(n):
        ns, name = f"ns{i % 100}", f"svc{i}"
        cip = f"172.{16 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        out.append({"kind": "Service", "apiVersion": "v1", "metadata": {
            "namespace": ns, "name": name, "uid": f"uid-{i}", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": name}, "annotations": {"note": "x" * 40}},
            "spec": {"type": "ClusterIP", "clusterIP": cip, "clusterIPs": [cip], "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                     "selector": {"app": name}, "sessionAffinity": "None"}, "status": {"loadBalancer": {}}})
        out.append({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {
            "namespace": ns, "name": f"{name}-abcde", "labels": {"kubernetes.io/service-name": name},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"10.{(i * e + j) // 65536 % 256}.{(i * e + j) // 256 % 256}."
                                         f"{(i * e + j) % 256}"],
                           "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": f"node-{j}", "targetRef": {"kind": "Pod", "name": f"{name}-{j}"}}
                          for j in range(e)]})
    return out



def _snapshot(state: object) -> Snapshot:
    """A snapshot holding only the cluster state (what the expected side is derived from)."""
    ok = {name: Source(name, ok=True, absent=True) for name in ("kube_proxy", "kubelet", "kube_proxy_http",
                                                                  "conntrack", "sysctl", "links")}
    return Snapshot(node=NODE, taken_at=0.0, agent_version="bench", cluster=Source("cluster", ok=True, data=state),
                    **ok)  # type: ignore[arg-type]

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=5)
    a = ap.parse_args()
    api = FakeApiServer(objects(a.services, a.endpoints))
    api.start()
    with tempfile.TemporaryDirectory() as tmp:
        kc = Path(tmp) / "kubeconfig"
        kc.write_text(api.kubeconfig())
        client, origin = api_client_from(str(kc))
        provider = KubeApiProvider(client, NODE, origin)
        gc.collect()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        provider.sync_once(timeout_s=300)  # timed without tracemalloc, which slows allocation-heavy code
        list_s = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        provider = KubeApiProvider(client, NODE, origin)
        gc.collect()
        tracemalloc.start()
        provider.sync_once(timeout_s=300)
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        state = provider.state()
        assert len(state.services) == a.services and state.usable
        t0 = time.perf_counter()
        exp = expected_ports(state, NODE)
        prog = {p.service: ProgrammedPort(p.service, p.protocol, p.family,
                                          dispatch=[Dispatch(k, addr, act, "")
                                                    for (k, addr), act in p.dispatch.items()],
                                          endpoints=sorted(p.cluster_endpoints or ())) for p in exp}
        t0 = time.perf_counter()
        found = [f for p in exp for f in compare_port(p, prog[p.service], "iptables")]
        diff_s = time.perf_counter() - t0  # only the comparison: `prog` stands in for a mode reader's output
        views = derive(_snapshot(state))  # the runner's first run
        t0 = time.perf_counter()
        again = provider.state()  # the same state object again: what serve sees while nothing changed
        assert again is state
        steady = derive(_snapshot(again), views)  # the runner passes its last views
        assert steady.expected is not None
        found += [f for p in steady.expected for f in compare_port(p, prog[p.service], "iptables")]
        steady_s = time.perf_counter() - t0
        fresh = dataclasses.replace(state)  # an equal but new state: what a change costs
        t0 = time.perf_counter()
        expected_ports(fresh, NODE)
        expected_s = time.perf_counter() - t0
    api.stop()
    assert not found
    print("| services x endpoints | initial list (s) | model retained (MiB) | list peak (MiB) | RSS growth (MiB) "
          "| expected build (s) | compare (s) | unchanged cluster: build + compare (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {a.services} x {a.endpoints} | {list_s:.2f} | {retained / 2**20:.1f} | {peak / 2**20:.1f} | "
          f"{(rss1 - rss0) / 1024:.1f} | {expected_s:.2f} | {diff_s:.2f} | {steady_s:.2f} |")


if __name__ == "__main__":
    main()
