"""What the agent asks of the API server (issue 21), against the stand-in kube-apiserver.

The stand-in (tests/standins/kube_apiserver.py) stands in for kube-apiserver and its watch cache, which
cannot run here; it logs every request with its query and where a real server would serve it from.
Random draws are injected (a constant), and so are the pauses: the informers record each wait they
would take and the tests check them, without sleeping them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.collect import kube_backoff
from agent.collect.kubeapi import KubeApiProvider, api_client_from, pods_matching
from agent.kubeobjects import PROXIED_SELECTOR, state_from_items
from agent.serial import to_jsonable
from tests.cluster.test_kubeapi import NODE, eventually, items
from tests.standins.kube_apiserver import FakeApiServer

RNG = 0.5  # every random draw: start delay, backoff stretch, watch length


def client_for(api: FakeApiServer, tmp_path: Path) -> Any:
    kc = tmp_path / "kubeconfig"
    kc.write_text(api.kubeconfig())
    return api_client_from(str(kc))


class Agent:
    """A provider with injected randomness and pauses; stopped by the test's fixture."""

    def __init__(self, api: FakeApiServer, tmp_path: Path, **kw: Any) -> None:
        client, origin = client_for(api, tmp_path)
        self.halt = threading.Event()
        kw.setdefault("start_jitter_s", 0.0)
        kw.setdefault("backoff_max_s", 0.2)
        # A pause is recorded by the informer; here it only yields briefly, so a test never waits it out.
        self.p = KubeApiProvider(client, NODE, origin, rng=lambda: RNG, wait=lambda s: self.halt.wait(0.01), **kw)

    def __enter__(self) -> KubeApiProvider:
        self.p.start()
        return self.p

    def __exit__(self, *exc: object) -> None:
        self.p.stop()
        self.halt.set()


def requests(api: FakeApiServer, path: str, since: int = 0) -> list[dict[str, Any]]:
    return [r for r in api.log[since:] if r["path"] == path]


def watch_length_ok(q: dict[str, str]) -> bool:
    return kube_backoff.MIN_WATCH_TIMEOUT_S <= int(q["timeoutSeconds"]) < 2 * kube_backoff.MIN_WATCH_TIMEOUT_S


# -- the first requests ------------------------------------------------------------------------------------
def test_first_requests_are_streaming_lists_from_the_watch_cache(api: FakeApiServer, tmp_path: Path) -> None:
    with Agent(api, tmp_path) as p:
        eventually(lambda: p.state().usable)
    first = {r["path"]: r for r in reversed(api.log)}  # the first request of each path
    stream = {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
              "allowWatchBookmarks": "true"}
    for path, extra in (("/api/v1/services", {"labelSelector": PROXIED_SELECTOR}),
                        ("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": PROXIED_SELECTOR}),
                        ("/api/v1/nodes", {"fieldSelector": f"metadata.name={NODE}"}),
                        ("/api/v1/pods", {"fieldSelector": f"spec.nodeName={NODE}"})):
        q = dict(first[path]["query"])
        assert watch_length_ok(q), q
        del q["timeoutSeconds"]
        assert q == {**stream, **extra}, path  # no resourceVersion: "as fresh as when it was asked", from the cache
        assert first[path]["served"] == "stream"
    # no list at all: each stream went on as the watch
    assert not [r for r in api.log if r["query"].get("watch") != "true"]
    assert len(api.log) == 4


def test_first_list_without_streaming_is_a_resource_version_0_list(api: FakeApiServer, tmp_path: Path) -> None:
    with Agent(api, tmp_path, streaming=False) as p:
        eventually(lambda: p.state().usable)
        eventually(lambda: len(requests(api, "/api/v1/services")) >= 2)
        rv = p.informers["services"].rv
    lst, watch = requests(api, "/api/v1/services")[:2]
    assert lst["query"] == {"resourceVersion": "0", "limit": "500", "labelSelector": PROXIED_SELECTOR}
    assert lst["served"] == "cache"
    q = dict(watch["query"])
    assert watch_length_ok(q)
    del q["timeoutSeconds"]
    assert q["resourceVersion"] <= rv  # the list's, or a later bookmark's
    del q["resourceVersion"]
    assert q == {"watch": "true", "allowWatchBookmarks": "true", "labelSelector": PROXIED_SELECTOR}


def test_the_informers_see_what_kube_proxy_sees_live_and_from_a_file(api: FakeApiServer, tmp_path: Path) -> None:
    extra = [
        {"kind": "Service", "apiVersion": "v1", "metadata": {
            "namespace": "ns1", "name": "other-proxy", "labels": {"service.kubernetes.io/service-proxy-name": "x"}},
         "spec": {"type": "ClusterIP", "clusterIP": "172.30.9.9", "ports": [{"port": 80, "protocol": "TCP"}]}},
        {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {
            "namespace": "ns1", "name": "headless-abc", "labels": {"kubernetes.io/service-name": "headless",
                                                                    "service.kubernetes.io/headless": ""}},
         "addressType": "IPv4", "endpoints": [{"addresses": ["10.9.9.9"]}]},
    ]
    for obj in extra:
        api.apply(obj)
    with Agent(api, tmp_path) as p:
        eventually(lambda: p.state().usable)
        got = p.state()
    want = state_from_items(items() + extra, NODE, "file", 0)
    key = lambda x: (x["namespace"], x["name"])  # noqa: E731
    assert sorted(map(to_jsonable, got.services), key=key) == sorted(map(to_jsonable, want.services), key=key)
    assert sorted(map(to_jsonable, got.slices), key=key) == sorted(map(to_jsonable, want.slices), key=key)
    assert "other-proxy" not in {s.name for s in got.services}
    assert "headless-abc" not in {s.name for s in got.slices}


# -- streaming refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize("refusal, status", [("gate-off", 422), ("old", 422), ("bad-request", 400), ("ignored", 200)])
def test_refused_streaming_list_falls_back_to_a_cache_list(api: FakeApiServer, tmp_path: Path, refusal: str,
                                                           status: int) -> None:
    api.streaming = refusal
    paths = ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/nodes", "/api/v1/pods")

    def after_refusal(path: str) -> list[dict[str, Any]]:
        """An informer's requests after its streaming try, if it made one before another's was refused."""
        reqs = requests(api, path)
        return reqs[1:] if reqs and "sendInitialEvents" in reqs[0]["query"] else reqs

    with Agent(api, tmp_path) as p:
        eventually(lambda: p.state().usable)
        eventually(lambda: all(len(after_refusal(path)) >= 2 for path in paths))
        assert p.streaming.refused is not None
        state = p.state()
        api.compact()
        api.drop_watches()
        eventually(lambda: p.informers["services"].relists >= 1 and p.informers["services"].listed)
        eventually(lambda: len(after_refusal("/api/v1/services")) >= 4)
    want = state_from_items(items(), NODE, "file", 0)
    assert sorted(s.name for s in state.services) == sorted(s.name for s in want.services)
    tried = [r for r in api.log if "sendInitialEvents" in r["query"]]
    assert 1 <= len(tried) <= 4 and {r["status"] for r in tried} == {status}  # at most one try per informer
    for path in paths:
        lst, watch, *_ = after_refusal(path)
        assert lst["query"].get("resourceVersion") == "0" and lst["served"] == "cache"
        assert watch["query"].get("watch") == "true" and "sendInitialEvents" not in watch["query"]
    # Known refused for good: after the 410 the relist is a list again, never another streaming try.
    relist = after_refusal("/api/v1/services")[3]
    assert "watch" not in relist["query"] and relist["served"] == "cache"


# -- reconnects -------------------------------------------------------------------------------------------
def test_a_cut_watch_resumes_from_the_last_resource_version_without_a_list(api: FakeApiServer,
                                                                           tmp_path: Path) -> None:
    with Agent(api, tmp_path) as p:
        eventually(lambda: p.state().usable)
        inf = p.informers["endpointslices"]
        mark = len(api.log)
        rv = inf.rv
        api.drop_watches()
        api.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {
            "namespace": "ns1", "name": "svc1-extra", "labels": {"kubernetes.io/service-name": "svc1"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.180.0.55"]}]})
        eventually(lambda: any(s.name == "svc1-extra" for s in p.state().slices))
        assert p.state().api_error is None  # a cut is not an outage
    again = requests(api, "/apis/discovery.k8s.io/v1/endpointslices", mark)
    assert again, "no reconnect"
    q = again[0]["query"]
    assert q["watch"] == "true" and q["allowWatchBookmarks"] == "true" and int(q["resourceVersion"]) >= int(rv)
    assert "sendInitialEvents" not in q
    assert all(r["query"].get("watch") == "true" for r in api.log[mark:])  # no informer listed again
    assert inf.relists == 0
    # the reconnect waited one jittered backoff step: [step, 2 step), here step 0.2 and the draw 0.5
    assert ("dropped", pytest.approx(0.2 * (1 + RNG))) in inf.waits


def test_a_watch_that_times_out_is_resumed_at_once(api: FakeApiServer, tmp_path: Path) -> None:
    with Agent(api, tmp_path, streaming=False, min_watch_timeout_s=1) as p:
        eventually(lambda: p.state().usable)
        inf = p.informers["services"]
        eventually(lambda: len(requests(api, "/api/v1/services")) >= 3, timeout=10)
        waits = list(inf.waits)
    lst, *watches = requests(api, "/api/v1/services")
    assert lst["query"]["resourceVersion"] == "0"
    assert all(w["query"]["watch"] == "true" and w["query"]["timeoutSeconds"] == "1" for w in watches)
    assert int(watches[1]["query"]["resourceVersion"]) >= int(watches[0]["query"]["resourceVersion"])
    assert waits == []  # a watch's own end is not a failure: no backoff


# -- 410 Gone --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [True, False])
def test_410_relists_from_the_watch_cache_not_older_than_the_last_resource_version(
        api: FakeApiServer, tmp_path: Path, streaming: bool) -> None:
    with Agent(api, tmp_path, streaming=streaming) as p:
        eventually(lambda: p.state().usable)
        inf = p.informers["services"]
        eventually(lambda: int(inf.rv or 0) > 0)
        api.compact()
        mark, rv = len(api.log), inf.rv
        api.drop_watches()
        eventually(lambda: inf.relists >= 1 and inf.listed and int(inf.rv) >= api.compacted_rv)
        eventually(lambda: len(requests(api, "/api/v1/services", mark)) >= 2 + (not streaming))
    watch, relist, *rest = requests(api, "/api/v1/services", mark)
    assert watch["query"]["watch"] == "true" and int(watch["query"]["resourceVersion"]) < api.compacted_rv
    q = relist["query"]
    assert int(q["resourceVersion"]) >= int(rv) and int(q["resourceVersion"]) < api.compacted_rv
    assert relist["served"] == ("stream" if streaming else "cache")
    if streaming:
        assert q["sendInitialEvents"] == "true" and q["resourceVersionMatch"] == "NotOlderThan"
    else:
        assert "limit" not in q and "watch" not in q  # unpaged: the cache, "not older than" rv
        assert rest[0]["query"]["watch"] == "true"
        assert int(rest[0]["query"]["resourceVersion"]) >= api.compacted_rv


def test_a_list_410_reads_etcd_in_pages(api: FakeApiServer, tmp_path: Path) -> None:
    base = next(o for o in items() if o["kind"] == "Service")
    for i in range(1100):
        api.apply({**base, "metadata": {**base["metadata"], "namespace": "bulk", "name": f"svc-{i}"}})
    api.watch_cache = False  # every list pages from etcd: a continue token can expire
    expired = []

    def compact_once(rec: dict[str, Any]) -> None:
        if rec["path"] == "/api/v1/services" and rec["query"].get("continue") and not expired:
            expired.append(rec)
            api.compact()

    api.on_request = compact_once
    with Agent(api, tmp_path, streaming=False) as p:
        eventually(lambda: p.state().usable)
        assert len([s for s in p.state().services if s.namespace == "bulk"]) == 1100
    lists = [r for r in requests(api, "/api/v1/services") if r["query"].get("watch") != "true"]
    assert [(r["status"], r["query"].get("resourceVersion"), bool(r["query"].get("continue"))) for r in lists] == [
        (200, "0", False), (410, None, True),  # the continue token expired mid-list
        (200, None, False), (200, None, True), (200, None, True)]  # a consistent read, 500 a page
    assert all(r["query"]["limit"] == "500" for r in lists)
    assert p.informers["services"].relists == 1


# -- 429 and Retry-After ---------------------------------------------------------------------------------
def test_429_waits_at_least_retry_after_with_jitter_on_top(api: FakeApiServer, tmp_path: Path) -> None:
    api.throttle(times=2, retry_after="3", path_contains="/api/v1/services")
    with Agent(api, tmp_path) as p:
        eventually(lambda: p.state().usable)
        inf = p.informers["services"]
        assert p.state().api_error is None  # cleared by the answer that came
    assert list(inf.waits) == [("429", 3 * (1 + RNG)), ("429", 3 * (1 + RNG))]
    svc = requests(api, "/api/v1/services")
    assert [r["status"] for r in svc[:3]] == [429, 429, 200]  # urllib3 did not retry behind the informer's back


def test_429_without_retry_after_backs_off(api: FakeApiServer, tmp_path: Path) -> None:
    api.throttle(times=3, retry_after=None, path_contains="/api/v1/nodes")
    with Agent(api, tmp_path, backoff_max_s=30.0) as p:
        eventually(lambda: p.state().usable)
        waits = list(p.informers["node"].waits)
    assert waits == [("429", 0.8 * 1.5), ("429", 1.6 * 1.5), ("429", 3.2 * 1.5)]


# -- jitter ----------------------------------------------------------------------------------------------
def test_first_request_waits_the_agents_start_jitter(api: FakeApiServer, tmp_path: Path) -> None:
    with Agent(api, tmp_path, start_jitter_s=10.0) as p:
        eventually(lambda: p.state().usable)
        assert p.start_delay_s == 10.0 * RNG
        assert all(inf.waits[0] == ("start", 5.0) for inf in p.informers.values())


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999999])
def test_jitter_bounds(draw: float) -> None:
    assert 0.0 <= kube_backoff.start_delay(10.0, lambda: draw) < 10.0
    assert 300 <= kube_backoff.watch_timeout(300, lambda: draw) < 600
    b = kube_backoff.Backoff(rng=lambda: draw)
    steps = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    for i, step in enumerate(steps):
        wait = b.next_wait(float(i))
        assert step <= wait < 2 * step
    assert b.next_wait(200.0) < 2 * 0.8  # two quiet minutes: back to the first step
    assert 10.0 <= b.next_wait(201.0, at_least=10.0) < 20.0  # Retry-After is a floor


def test_retry_after_header_forms() -> None:
    now = 1_700_000_000.0
    assert kube_backoff.retry_after_s({"Retry-After": "7"}, now) == 7.0
    assert kube_backoff.retry_after_s({"retry-after": "Tue, 14 Nov 2023 22:13:40 GMT"}, now) == 20.0
    assert kube_backoff.retry_after_s({"Retry-After": "99999"}, now) == kube_backoff.RETRY_AFTER_MAX_S
    assert kube_backoff.retry_after_s({"Retry-After": "soon"}, now) is None
    assert kube_backoff.retry_after_s({}, now) is None


# -- explain's pod lookups --------------------------------------------------------------------------------
def test_pods_matching_is_one_namespaced_cache_list(api: FakeApiServer, tmp_path: Path) -> None:
    for ns, name, app in (("ns1", "a", "web"), ("ns1", "b", "db"), ("ns2", "c", "web")):
        api.apply({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": ns, "name": name,
                   "labels": {"app": app, "tier": "x"}}, "spec": {"nodeName": "elsewhere"},
                   "status": {"podIP": "10.1.1.1"}})
    client, _ = client_for(api, tmp_path)
    mark = len(api.log)
    pods = pods_matching(client, "ns1", {"app": "web", "tier": "x"})
    assert [(p.namespace, p.name) for p in pods] == [("ns1", "a")]
    (req,) = api.log[mark:]
    assert req["path"] == "/api/v1/namespaces/ns1/pods"
    assert req["query"] == {"labelSelector": "app=web,tier=x", "resourceVersion": "0"}
    assert req["served"] == "cache"
    assert pods_matching(client, "ns1", {}) == [] and len(api.log) == mark + 1  # no selector: no pods, no request


def test_request_log_counts_bytes(api: FakeApiServer, tmp_path: Path) -> None:
    client, _ = client_for(api, tmp_path)
    pods_matching(client, "ns1", "app=none")
    deadline = time.monotonic() + 5  # the server thread notes the bytes just after the client has them
    while not api.log[-1]["bytes"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.log[-1]["bytes"] == len(json.dumps({"kind": "PodList", "apiVersion": "v1",
                                                   "metadata": {"resourceVersion": str(api.rv)}, "items": []}))



def test_explains_pods_come_from_the_cache_list_and_a_near_miss_page_only_when_none_match(
        api: FakeApiServer, tmp_path: Path) -> None:
    from agent.collect.service_pods import api_pods

    for name, app in (("a", "web"), ("b", "db")):
        api.apply({"kind": "Pod", "apiVersion": "v1", "metadata": {"namespace": "ns1", "name": name,
                   "labels": {"app": app}}, "spec": {"nodeName": "elsewhere"}, "status": {"podIP": "10.1.1.1"}})
    client, _ = client_for(api, tmp_path)
    fetch = api_pods(client)
    mark = len(api.log)
    assert [p.name for p in fetch("ns1", "app=web")] == ["a"]
    (req,) = api.log[mark:]
    assert req["query"] == {"labelSelector": "app=web", "resourceVersion": "0"}  # explain's lookup: the cache
    mark = len(api.log)
    assert sorted(p.name for p in fetch("ns1", "app=nothing")) == ["a", "b"]  # none match: the near misses
    assert [r["query"] for r in api.log[mark:]] == [{"labelSelector": "app=nothing", "resourceVersion": "0"},
                                                    {"limit": "500"}]
