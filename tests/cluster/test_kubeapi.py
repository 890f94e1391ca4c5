"""The live cluster source against a stand-in for kube-apiserver (tests/standins/kube_apiserver.py).

It stands in for a real kube-apiserver, which cannot run here: same list/watch protocol (paginated
lists, chunked watch events, bookmarks, 410 Gone, dropped connections), and the agent talks to it
through the real `kubernetes` client, exactly as in a cluster.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.checks import CHECKS
from agent.collect.cluster import FileProvider
from agent.collect.kubeapi import KubeApiProvider, api_client_from
from agent.config import Config
from agent.kubeobjects import state_from_items
from agent.runner import Runner
from agent.serial import to_jsonable
from tests.standins.kube_apiserver import FakeApiServer
from tests.testbed import FIXTURES

OVERALL = FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.cluster.json"
NODE = "test-node"


def items() -> list[dict[str, Any]]:
    return list(json.loads(OVERALL.read_text())["items"])


def eventually(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a condition the watch must bring about; fail with the deadline, never pass on time alone."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def provider_for(api: FakeApiServer, tmp_path: Path, **kw: Any) -> KubeApiProvider:
    kc = tmp_path / "kubeconfig"
    kc.write_text(api.kubeconfig())
    client, origin = api_client_from(str(kc))
    kw.setdefault("start_jitter_s", 0.0)
    return KubeApiProvider(client, NODE, origin, backoff_max_s=0.2, **kw)


@pytest.fixture
def live(api: FakeApiServer, tmp_path: Path) -> Iterator[KubeApiProvider]:
    p = provider_for(api, tmp_path)
    p.start()
    eventually(lambda: p.state().usable)
    yield p
    p.stop()


def _services(p: KubeApiProvider) -> dict[str, Any]:
    return {f"{s.namespace}/{s.name}": to_jsonable(s) for s in p.state().services}


def _slice(ns: str, svc: str, ip: str, name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": name or f"{svc}-extra",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip]}]}


def test_initial_list_equals_the_kubectl_file_reading(live: KubeApiProvider) -> None:
    want = state_from_items(items(), NODE, "file", 0)
    got = live.state()
    key = lambda x: (x["namespace"], x["name"])  # noqa: E731
    assert sorted(map(to_jsonable, got.services), key=key) == sorted(map(to_jsonable, want.services), key=key)
    assert sorted(map(to_jsonable, got.slices), key=key) == sorted(map(to_jsonable, want.slices), key=key)
    assert got.node is not None and got.node.addresses == ["192.168.0.2"]
    assert got.api_error is None and got.usable


def test_pagination_lists_every_object(api: FakeApiServer, tmp_path: Path) -> None:
    base = next(o for o in items() if o["kind"] == "Service")
    for i in range(1203):
        svc = copy.deepcopy(base)
        svc["metadata"].update(namespace="bulk", name=f"svc-{i}")
        api.apply(svc)
    p = provider_for(api, tmp_path)
    p.sync_once()  # from the watch cache: one whole list, whatever the limit
    assert len([s for s in p.state().services if s.namespace == "bulk"]) == 1203
    lists = [r for r in api.log if r["path"] == "/api/v1/services"]
    assert [(r["query"].get("resourceVersion"), r["served"]) for r in lists] == [("0", "cache")]
    p.informers["services"].list_once(resource_version="")  # a consistent read goes to etcd, in pages
    assert len([s for s in p.state().services if s.namespace == "bulk"]) == 1203
    pages = [r for r in api.log if r["path"] == "/api/v1/services"][1:]
    assert [(r["served"], r["query"].get("limit"), bool(r["query"].get("continue"))) for r in pages] == [
        ("etcd", "500", False), ("etcd", "500", True), ("etcd", "500", True)]  # 500 + 500 + 203


def test_watch_events_add_modify_delete(api: FakeApiServer, live: KubeApiProvider) -> None:
    api.apply(_slice("ns1", "svc1", "10.180.0.99"))
    eventually(lambda: any(s.name == "svc1-extra" for s in live.state().slices))
    api.apply(_slice("ns1", "svc1", "10.180.0.98"))
    eventually(lambda: [e.address for s in live.state().slices if s.name == "svc1-extra" for e in s.endpoints]
               == ["10.180.0.98"])
    api.delete("EndpointSlice", "ns1", "svc1-extra")
    eventually(lambda: not any(s.name == "svc1-extra" for s in live.state().slices))


def test_bookmarks_advance_the_resource_version(api: FakeApiServer, live: KubeApiProvider) -> None:
    rv = api.apply(_slice("ns9", "other", "10.9.9.9"))  # a change the Services watch never sees as an event
    eventually(lambda: int(live.informers["services"].rv or 0) >= rv)
    assert any("allowWatchBookmarks=true" in r for r in api.requests)


def test_410_gone_relists(api: FakeApiServer, live: KubeApiProvider) -> None:
    api.compact()
    api.drop_watches()  # reconnecting watches now ask for a compacted resourceVersion
    eventually(lambda: live.informers["endpointslices"].relists >= 1)
    api.apply(_slice("ns1", "svc1", "10.180.0.77"))
    eventually(lambda: any(s.name == "svc1-extra" for s in live.state().slices))


def test_dropped_connection_reconnects_without_losing_events(api: FakeApiServer, live: KubeApiProvider) -> None:
    api.drop_watches()
    api.apply(_slice("ns1", "svc1", "10.180.0.55"))
    eventually(lambda: any(s.name == "svc1-extra" for s in live.state().slices))
    assert live.state().usable


def test_api_down_keeps_last_state_then_marks_it_unusable(api: FakeApiServer, tmp_path: Path) -> None:
    p = provider_for(api, tmp_path, max_stale_s=1.0)
    p.start()
    try:
        eventually(lambda: p.state().usable)
        before = _services(p)
        port = api.port
        api.stop()
        eventually(lambda: p.state().api_error is not None)
        down = p.state()
        assert _services(p) == before and down.usable  # the last good state stands in
        eventually(lambda: not p.state().usable)  # ... for at most max_stale_s
        api.start(port)
        eventually(lambda: p.state().usable and p.state().api_error is None)
    finally:
        p.stop()


def test_unreachable_api_reports_api_unreachable_and_node_checks_go_on(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    server = FakeApiServer([])
    server.port = 1  # nothing listens on port 1
    kc.write_text(server.kubeconfig())
    client, origin = api_client_from(str(kc))
    p = KubeApiProvider(client, NODE, origin)
    p.sync_once(timeout_s=2)
    from agent.collect import COLLECTORS

    runner = Runner(Config(node_name=NODE), collectors=tuple(c for c in COLLECTORS if c.name in ("cluster", "sysctl")),
                    cluster=p)
    report = runner.run_once()
    found = {f.id: f for f in report.findings}
    assert "api.unreachable" in found
    assert "not compared" in found["api.unreachable"].message
    assert "agent.source_failed" not in found


def test_watch_events_while_checks_run(api: FakeApiServer, live: KubeApiProvider) -> None:
    runner = Runner(Config(node_name=NODE), collectors=(), checks=CHECKS, cluster=live)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for i in range(200):
                api.apply(_slice("ns1", "svc1", f"10.181.0.{i % 250}", name=f"churn-{i % 7}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=churn)
    t.start()
    runs = 0
    while not stop.is_set() or runs == 0:
        from agent.collect import COLLECTORS

        Runner(Config(node_name=NODE), collectors=tuple(c for c in COLLECTORS if c.name == "cluster"),
               cluster=live).run_once()
        runner.check(runner.collect())
        runs += 1
    t.join()
    assert not errors
    eventually(lambda: sum(1 for s in live.state().slices if s.name.startswith("churn-")) == 7)


def test_file_provider_reads_kubectl_output(tmp_path: Path) -> None:
    state = FileProvider(OVERALL, NODE).state()
    assert {s.name for s in state.services} == {f"svc{i}" for i in range(1, 7)}
    assert state.origin == f"file {OVERALL}"


def test_unchanged_state_is_the_same_object_and_a_change_makes_a_new_one(api: FakeApiServer,
                                                                         live: KubeApiProvider) -> None:
    first = live.state()
    assert live.state() is first  # nothing changed: derived views (agent/checks/memo.py) are reused
    api.apply(_slice("ns1", "svc1", "10.180.0.44"))
    eventually(lambda: live.state() is not first)
    assert any(s.name == "svc1-extra" for s in live.state().slices)
