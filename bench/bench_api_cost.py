"""Benchmark: what one agent costs the API server, beside kube-proxy's informers (issue 21).

Three parts, one run:

1. **Start.** 10k Services x 5 endpoints (+ this node, 30 pods on it, 3,000 elsewhere) in the stand-in
   kube-apiserver (tests/standins/kube_apiserver.py), which logs every request with its client, where a
   real server would serve it from (watch cache, etcd, stream) and the body bytes sent. Measured until
   each client has its whole state: svcdoctor (streaming lists; and against a server that refuses them),
   svcdoctor before issue 21 (paginated lists with no resourceVersion: etcd), and kube-proxy's informer
   set for the same objects (client-go's reflector without the WatchListClient gate: Services and
   EndpointSlices with kube-proxy's label selector and this Node by name, each a resourceVersion=0 list
   then a watch), run as the same Informer code with streaming off and no pods.
2. **One hour of watching**, svcdoctor and kube-proxy side by side on the same stand-in, in scaled
   time (--scale 60: one hour in 60 s): watch lengths, bookmark pace (one a minute per watch, as the
   watch cache sends) and the event rates are all scaled. Assumed rates, for a busy 10k-Service
   cluster: an EndpointSlice changes every second, a Service every minute, a pod on this node every
   minute, this Node's status every 5 minutes. Every watch event goes to both clients alike; what
   differs is the requests (each watch ends after [5, 10) minutes and is resumed) and the pods.
3. **A 1,000-agent rollout**, simulated in virtual time: each agent's four informers are coroutines
   running the request sequence of agent/collect/kubeapi.py with the real agent/collect/kube_backoff.py
   (start jitter, Backoff, Retry-After floor) and seeded random draws, against a server model built from
   part 1's recorded costs (bytes per list, served by an API priority-and-fairness level of --seats
   seats at --mbps per seat, a queue of --queue, beyond which 429 with Retry-After: 1). Scenarios: a
   fresh DaemonSet (all pods start within 10 s, or within 1 s), and an API server restart (every watch cut, the
   server gone for 20 s, then every resumed watch answered 410 as a fresh watch cache does, so every
   informer relists). Each with and without jitter (start jitter 0 and Backoff jitter 0).

    .venv/bin/python bench/bench_api_cost.py [--services 10000] [--scale 60] [--agents 1000]
"""

from __future__ import annotations

import argparse
import copy
import heapq
import itertools
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.collect import kube_backoff
from agent.collect.kubeapi import Informer, KubeApiProvider, StreamingSupport, api_client_from
from agent.kubeobjects import PROXIED_SELECTOR, compact_node, compact_service, compact_slice
from bench.bench_cluster import NODE, objects
from tests.standins.kube_apiserver import FakeApiServer

KINDS = {"/api/v1/services": "services", "/apis/discovery.k8s.io/v1/endpointslices": "endpointslices",
         "/api/v1/nodes": "node", "/api/v1/pods": "pods"}


def cluster(n: int, e: int) -> list[dict[str, Any]]:
    out = objects(n, e)
    for i in range(3030):
        out.append({"kind": "Pod", "apiVersion": "v1", "metadata": {
            "namespace": f"ns{i % 100}", "name": f"pod-{i}", "labels": {"app": f"svc{i}"}},
            "spec": {"nodeName": NODE if i < 30 else f"node-{i % 50}", "containers": [{"name": "c", "image": "x"}]},
            "status": {"podIP": f"10.200.{i // 256}.{i % 256}", "podIPs": [{"ip": f"10.200.{i // 256}.{i % 256}"}],
                       "phase": "Running"}})
    return out


def client(api: FakeApiServer, tmp: Path, ua: str) -> tuple[Any, str]:
    kc = tmp / f"kubeconfig-{ua}"
    kc.write_text(api.kubeconfig())
    c, origin = api_client_from(str(kc))
    c.user_agent = ua
    return c, origin


def kube_proxy_informers(c: Any, min_watch_s: float) -> dict[str, Informer]:
    """kube-proxy's informer set, as client-go's reflector runs it (no streaming: WatchListClient is off)."""
    from kubernetes import client as k

    core, disc = k.CoreV1Api(c), k.DiscoveryV1Api(c)
    kw: dict[str, Any] = {"streaming": StreamingSupport(False), "min_watch_timeout_s": min_watch_s}
    return {"services": Informer("services", core.list_service_for_all_namespaces, compact_service,
                                 label_selector=PROXIED_SELECTOR, **kw),
            "endpointslices": Informer("endpointslices", disc.list_endpoint_slice_for_all_namespaces, compact_slice,
                                       label_selector=PROXIED_SELECTOR, **kw),
            "node": Informer("node", core.list_node, compact_node, f"metadata.name={NODE}", **kw)}


def tally(api: FakeApiServer, ua: str, base: dict[int, int] | None = None, since: int = 0) -> dict[str, Any]:
    """Requests (made since log index `since`) and bytes (sent since `base`, a snapshot) of one client."""
    reqs, nbytes, served = 0, 0, Counter()
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i, rec in enumerate(api.log):
        if rec["agent"] != ua:
            continue
        b = rec["bytes"] - (base or {}).get(i, 0)
        nbytes += b
        per_kind[KINDS.get(rec["path"], rec["path"])][1] += b
        if i >= since:
            reqs += 1
            served[rec["served"] + (f" {rec['status']}" if rec["status"] >= 400 else "")] += 1
            per_kind[KINDS.get(rec["path"], rec["path"])][0] += 1
    return {"requests": reqs, "bytes": nbytes, "served": dict(served), "per_kind": dict(per_kind)}


def wait_for(cond: Callable[[], bool], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def snapshot(api: FakeApiServer) -> dict[int, int]:
    with api.cond:
        return {i: r["bytes"] for i, r in enumerate(api.log)}


def metadata_only(objs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per kind, the JSON bytes of the whole objects and of their metadata alone (what a metadata-only
    list, `as=PartialObjectMetadataList`, would send), over the objects the stand-in serves."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in objs:
        whole = len(json.dumps(o))
        meta = len(json.dumps({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": o["metadata"]}))
        out[o["kind"]][0] += whole
        out[o["kind"]][1] += meta
    return {k: (v[0], v[1]) for k, v in out.items()}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


# -- part 1 and 2 -----------------------------------------------------------------------------------------
def measured(a: argparse.Namespace) -> dict[str, Any]:
    objs = cluster(a.services, a.endpoints)
    api = FakeApiServer(objs)
    api.bookmark_every_s = 60.0 / a.scale
    api.start()
    out: dict[str, Any] = {"metadata_only": metadata_only(objs)}
    min_watch = kube_backoff.MIN_WATCH_TIMEOUT_S / a.scale
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # svcdoctor before issue 21: every informer's list paginated, no resourceVersion (etcd); label-less.
        c, origin = client(api, tmp, "before")
        old = KubeApiProvider(c, NODE, origin, streaming=False, start_jitter_s=0)
        for inf in old.informers.values():
            inf.label_selector = None
            inf.list_once(300, resource_version="")
        out["before"] = tally(api, "before")
        out["before"]["requests"] += 4  # and then one watch each
        # against a server that refuses streaming lists (kube-apiserver with the WatchList gate off)
        api.streaming = "gate-off"
        c, origin = client(api, tmp, "refused")
        refused = KubeApiProvider(c, NODE, origin, start_jitter_s=0, min_watch_timeout_s=min_watch)
        refused.start()
        wait_for(lambda: refused.state().usable)
        wait_for(lambda: len([r for r in api.log if r["agent"] == "refused" and r["served"] == "watch"]) >= 4)
        refused.stop()
        out["refused"] = tally(api, "refused")
        api.streaming = "on"
        # svcdoctor and kube-proxy, both measured up to their whole state, then watching for an hour
        c, origin = client(api, tmp, "svcdoctor")
        agent = KubeApiProvider(c, NODE, origin, start_jitter_s=0, min_watch_timeout_s=min_watch)
        kc, _ = client(api, tmp, "kube-proxy")
        kp = kube_proxy_informers(kc, min_watch)
        agent.start()
        wait_for(lambda: agent.state().usable)
        out["svcdoctor"] = tally(api, "svcdoctor")
        for inf in kp.values():
            inf.start()
        wait_for(lambda: all(i.listed for i in kp.values()))
        wait_for(lambda: len([r for r in api.log if r["agent"] == "kube-proxy"]) >= 6)
        out["kube-proxy"] = tally(api, "kube-proxy")
        base, since = snapshot(api), len(api.log)
        events = churn(api, a)
        agent.stop()
        for inf in kp.values():
            inf.stop.set()
        out["hour"] = {ua: tally(api, ua, base, since) for ua in ("svcdoctor", "kube-proxy")}
        out["events"] = events
    api.stop()
    return out


def churn(api: FakeApiServer, a: argparse.Namespace) -> Counter[str]:
    """One scaled hour of changes at the assumed rates (module docstring)."""
    rng = random.Random(21)
    with api.cond:
        slices = [o for (k, _, _), o in api.objects.items() if k == "EndpointSlice"]
        services = [o for (k, _, _), o in api.objects.items() if k == "Service"]
        pods = [o for (k, _, _), o in api.objects.items() if k == "Pod" and o["spec"]["nodeName"] == NODE]
        node = next(o for (k, _, _), o in api.objects.items() if k == "Node")
    rates = {"EndpointSlice": 1.0, "Service": 1 / 60, "Pod": 1 / 60, "Node": 1 / 300}  # per simulated second
    done: Counter[str] = Counter()
    start = time.monotonic()
    hour_real = 3600.0 / a.scale
    while (elapsed := time.monotonic() - start) < hour_real:
        sim = elapsed * a.scale
        for kind, rate in rates.items():
            while done[kind] < int(sim * rate):
                done[kind] += 1
                if kind == "EndpointSlice":
                    obj = copy.deepcopy(rng.choice(slices))
                    obj["endpoints"][0]["conditions"]["ready"] = not obj["endpoints"][0]["conditions"]["ready"]
                elif kind == "Service":
                    obj = copy.deepcopy(rng.choice(services))
                    obj["metadata"]["annotations"]["note"] = f"change {done[kind]}"
                elif kind == "Pod":
                    obj = copy.deepcopy(rng.choice(pods))
                    obj["metadata"]["labels"]["rev"] = str(done[kind])
                else:
                    obj = copy.deepcopy(node)
                    obj.setdefault("status", {})["heartbeat"] = str(done[kind])
                api.apply(obj)
        time.sleep(0.02)
    return done


# -- part 3: the rollout simulation ----------------------------------------------------------------------
@dataclass
class SimInformer:
    list_bytes: int
    rv_time: float = -1.0  # when its state was last current (its resourceVersion, as a time)
    synced_at: float | None = None


@dataclass
class ServerModel:
    """An API priority-and-fairness level: `seats` initial lists at a time, `queue` waiting, 429 beyond."""

    seats: int
    queue: int
    bytes_per_s: float
    up_at: float = 0.0  # before this, connections are refused (nothing reaches the server)
    gone_before: float = -1.0  # a watch from state older than this gets 410 (a fresh watch cache)
    busy: int = 0
    waiting: list[tuple[float, int, Any]] = field(default_factory=list)
    arrivals: Counter[int] = field(default_factory=Counter)  # second -> requests that reached the server
    rejected: int = 0


Step = Generator[tuple[str, Any], tuple[str | None, float], None]


def sim_informer(inf: SimInformer, backoff: kube_backoff.Backoff, start: float, rng: random.Random,
                 resumed: bool) -> Step:
    """kubeapi.Informer.run's request sequence (streaming lists on): yields ("wait", seconds) or
    ("request", "stream" | "watch") and is sent (outcome, now); outcomes "ok", "410", "429", "down"."""
    _, now = yield "wait", start
    need_sync = not resumed
    if resumed:  # its watch was just cut: Dropped, one backoff step, then the watch from its rv
        _, now = yield "wait", backoff.next_wait(now)
    while True:
        outcome, now = yield "request", "stream" if need_sync else "watch"
        if outcome == "ok":
            if need_sync:
                inf.synced_at, need_sync = now, False
            length = kube_backoff.watch_timeout(kube_backoff.MIN_WATCH_TIMEOUT_S, rng.random)
            _, now = yield "wait", length
            inf.rv_time = now  # bookmarks kept it current until the watch's own end
        elif outcome == "410":
            need_sync = True
        elif outcome == "429":
            _, now = yield "wait", backoff.next_wait(now, at_least=1.0)  # APF's Retry-After: 1
        else:
            _, now = yield "wait", backoff.next_wait(now)


def simulate(scenario: str, jitter: bool, costs: dict[str, int], a: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(f"{scenario}-{jitter}")
    server = ServerModel(a.seats, a.queue, a.mbps * 2**20)
    if scenario == "restart":
        server.up_at = server.gone_before = 20.0
    queue: list[tuple[float, int, Any, Any]] = []  # (time, seq, generator or "release", (outcome, informer))
    seq = 0

    def push(t: float, gen: Any, outcome: str | None = None, inf: SimInformer | None = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queue, (t, seq, gen, (outcome, inf)))

    def serve(t: float, gen: Step, inf: SimInformer) -> None:
        server.busy += 1
        done = t + inf.list_bytes / server.bytes_per_s
        push(done, "release")
        push(done, gen, "ok" if done >= server.gone_before else "410", inf)

    infs: list[SimInformer] = []
    gens: dict[int, SimInformer] = {}
    for _ in range(a.agents):
        pod_start = rng.uniform(0, float(scenario.split("-")[1].rstrip("s"))) if scenario != "restart" else 0.0
        start = kube_backoff.start_delay(kube_backoff.START_JITTER_S if jitter else 0.0, rng.random)
        for nbytes in costs.values():
            inf = SimInformer(nbytes, rv_time=-10.0)
            backoff = kube_backoff.Backoff(jitter=kube_backoff.BACKOFF_JITTER if jitter else 0.0, rng=rng.random)
            gen = sim_informer(inf, backoff, 0.0 if scenario == "restart" else pod_start + start, rng,
                               resumed=scenario == "restart")
            _, first_wait = next(gen)
            infs.append(inf)
            gens[id(gen)] = inf
            push(first_wait, gen)
    order = itertools.count()
    t_end = float(a.sim_seconds)
    while queue:
        t, _, gen, (outcome, _inf) = heapq.heappop(queue)
        if t > t_end:
            break
        if gen == "release":
            server.busy -= 1
            if server.waiting:
                _, _, (g, i) = heapq.heappop(server.waiting)
                serve(t, g, i)
            continue
        kind, arg = gen.send((outcome, t))
        if kind == "wait":
            push(t + arg, gen)
            continue
        inf = gens[id(gen)]
        if t < server.up_at:
            push(t + 0.001, gen, "down")
            continue
        server.arrivals[int(t)] += 1
        if arg == "watch":
            push(t + 0.005, gen, "410" if inf.rv_time < server.gone_before else "ok")
        elif server.busy < server.seats:
            serve(t, gen, inf)
        elif len(server.waiting) < server.queue:
            heapq.heappush(server.waiting, (t, next(order), (gen, inf)))  # first come, first served
        else:
            server.rejected += 1
            push(t + 0.001, gen, "429")
    synced = sorted(i.synced_at for i in infs if i.synced_at is not None)
    per_s = [server.arrivals.get(s, 0) for s in range(int(t_end))]
    return {"peak_rps": max(per_s), "requests": sum(per_s), "rejected": server.rejected, "synced": len(synced),
            "all_synced_s": synced[-1] if len(synced) == len(infs) else None,
            "p50_synced_s": synced[len(synced) // 2] if synced else None, "per_s": per_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--scale", type=float, default=60.0)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seats", type=int, default=50)
    ap.add_argument("--queue", type=int, default=200)
    ap.add_argument("--mbps", type=float, default=50.0, help="MiB/s one seat serialises a list at")
    ap.add_argument("--sim-seconds", type=int, default=300)
    ap.add_argument("--skip-measure", action="store_true", help="simulate with --costs only")
    ap.add_argument("--costs", default="", help="services,endpointslices,node,pods list bytes")
    a = ap.parse_args()
    if a.skip_measure:
        costs = dict(zip(("services", "endpointslices", "node", "pods"), map(int, a.costs.split(",")), strict=True))
    else:
        m = measured(a)
        report_measured(m, a)
        sv = m["svcdoctor"]["per_kind"]
        costs = {k: sv[k][1] for k in ("services", "endpointslices", "node", "pods")}
    print(f"\nrollout simulation: {a.agents} agents x 4 informers, list bytes {costs}, {a.seats} seats at "
          f"{a.mbps:.0f} MiB/s, queue {a.queue}")
    print(f"| scenario | jitter | peak requests/s | requests in {a.sim_seconds} s | 429s | informers synced "
          "| median synced (s) | all synced (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    series = {}
    for scenario in ("rollout-10s", "rollout-1s", "restart"):
        for jitter in (False, True):
            r = simulate(scenario, jitter, costs, a)
            series[(scenario, jitter)] = r["per_s"]
            print(f"| {scenario} | {'yes' if jitter else 'no'} | {r['peak_rps']:,} | {r['requests']:,} | "
                  f"{r['rejected']:,} | {r['synced']:,}/{a.agents * 4:,} | "
                  f"{r['p50_synced_s'] if r['p50_synced_s'] is None else round(r['p50_synced_s'], 1)} | "
                  f"{'-' if r['all_synced_s'] is None else round(r['all_synced_s'], 1)} |")
    print("\nrequests per second, 5-second bins (first 60 s):")
    for (scenario, jitter), per_s in series.items():
        bins = [max(per_s[i:i + 5]) for i in range(0, 60, 5)]
        print(f"{scenario:8} jitter={'yes' if jitter else 'no ':3}  max/s per bin: {bins}")


def report_measured(m: dict[str, Any], a: argparse.Namespace) -> None:
    kp = m["kube-proxy"]
    print(f"start, {a.services} Services x {a.endpoints} endpoints (JSON body bytes):")
    print("| client | requests | served from | MiB | ratio to kube-proxy (requests, bytes) |")
    print("| --- | ---: | --- | ---: | --- |")
    for name, label in (("kube-proxy", "kube-proxy informers (Services, EndpointSlices, Node)"),
                        ("svcdoctor", "svcdoctor, streaming lists"),
                        ("refused", "svcdoctor, server refuses streaming (422)"),
                        ("before", "svcdoctor before issue 21 (limit=500, no resourceVersion)")):
        r = m[name]
        served = ", ".join(f"{k} {v}" for k, v in sorted(r["served"].items()))
        print(f"| {label} | {r['requests']} | {served} | {mib(r['bytes'])} | "
              f"{r['requests'] / kp['requests']:.2f}, {r['bytes'] / kp['bytes']:.2f} |")
    print("\nmetadata-only lists would send (MiB, whole objects -> metadata alone):",
          {k: f"{mib(w)} -> {mib(md)}" for k, (w, md) in m["metadata_only"].items()})
    ev = m["events"]
    print(f"\none scaled hour (x{a.scale:.0f}): events applied {dict(ev)}")
    print("| client | requests/h | MiB/h | of which pods | ratio to kube-proxy (requests, bytes) |")
    print("| --- | ---: | ---: | ---: | --- |")
    h = m["hour"]
    for ua in ("kube-proxy", "svcdoctor"):
        r = h[ua]
        pods = r["per_kind"].get("pods", [0, 0])
        print(f"| {ua} | {r['requests']} | {mib(r['bytes'])} | {pods[0]} req, {pods[1] / 1024:.0f} KiB | "
              f"{r['requests'] / h['kube-proxy']['requests']:.2f}, {r['bytes'] / h['kube-proxy']['bytes']:.2f} |")
    for ua in ("kube-proxy", "svcdoctor"):
        print(ua, {k: (v[0], mib(v[1])) for k, v in sorted(h[ua]["per_kind"].items())})


if __name__ == "__main__":
    main()
