"""Live cluster state: list then watch Services, EndpointSlices, this Node and this node's Pods.

Uses the `kubernetes` client for configuration, auth and transport, but reads raw JSON
(`_preload_content=False`): measured on 10k Services + 10k EndpointSlices, the generated models cost
4.0 s and +250 MB, raw JSON 0.7 s and +107 MB; and only the compact model (agent/kubeobjects.py) is
kept. Each resource has its own informer thread: paginated list, then watch from the list's
resourceVersion with bookmarks; `410 Gone` relists; any other failure reconnects with backoff. While the
API is unreachable the last good state stands in, for at most `max_stale_s`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.kubeobjects import compact_node, compact_pod, compact_service, compact_slice
from agent.model.cluster import ClusterState

log = logging.getLogger("svcdoctor.kubeapi")
PAGE = 500
WATCH_TIMEOUT_S = 300


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410 / watch ERROR 410): list again."""


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited watch events from a streaming urllib3 response (chunked or not)."""
    buf = b""
    for chunk in resp.stream(65536, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line
    if buf.strip():
        yield buf


class Informer(threading.Thread):
    def __init__(self, kind: str, list_fn: Callable[..., Any], compact: Callable[[dict[str, Any]], Any],
                 field_selector: str | None = None, backoff_max_s: float = 30.0) -> None:
        super().__init__(name=f"informer-{kind}", daemon=True)
        self.kind, self.list_fn, self.compact, self.field_selector = kind, list_fn, compact, field_selector
        self.backoff_max_s = backoff_max_s
        self.lock = threading.Lock()
        self.store: dict[str, Any] = {}
        self.rv = ""
        self.listed = False  # at least one full list succeeded
        self.error: str | None = None
        self.failing_since: float | None = None
        self.updated_at = 0.0
        self.stop = threading.Event()
        self.relists = 0
        self.changes = 0  # bumped on every list and every object event: "has anything changed?"

    def _call(self, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self.field_selector:
            kw["field_selector"] = self.field_selector
        try:
            return self.list_fn(_preload_content=False, **kw)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(str(exc.reason)) from exc
            raise

    def list_once(self, timeout_s: float = 30.0) -> None:
        items: dict[str, Any] = {}
        cont: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": PAGE, "_request_timeout": timeout_s}
            if cont:
                kw["_continue"] = cont
            resp = self._call(**kw)
            body = json.loads(resp.data)
            for obj in body.get("items") or []:
                items[_key(obj)] = self.compact(obj)
            meta = body.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                break
        with self.lock:
            self.store, self.rv, self.listed = items, str(meta.get("resourceVersion", "")), True
            self.changes += 1
            self._healthy()

    def _healthy(self) -> None:
        self.error, self.failing_since, self.updated_at = None, None, time.time()

    def watch_once(self) -> None:
        resp = self._call(watch=True, resource_version=self.rv, allow_watch_bookmarks=True,
                          timeout_seconds=WATCH_TIMEOUT_S, _request_timeout=(10, WATCH_TIMEOUT_S + 30))
        with self.lock:
            self._healthy()  # connected and answered: the API is reachable again
        try:
            for line in _lines(resp):
                if self.stop.is_set():
                    return
                ev = json.loads(line)
                kind, obj = ev.get("type"), ev.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(str(obj.get("message")))
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion", self.rv))
                with self.lock:
                    if kind in ("ADDED", "MODIFIED"):
                        self.store[_key(obj)] = self.compact(obj)
                        self.changes += 1
                    elif kind == "DELETED":
                        self.store.pop(_key(obj), None)
                        self.changes += 1
                    self.rv = rv
                    self._healthy()
        finally:
            resp.release_conn()

    def run(self) -> None:
        first = backoff = min(1.0, self.backoff_max_s)
        need_list = True
        while not self.stop.is_set():
            try:
                if need_list:
                    self.list_once()
                    need_list = False
                self.watch_once()  # ends at the server's timeout or a dropped connection: watch again from rv
                backoff = first
            except Gone:
                self.relists += 1
                need_list = True
            except Exception as exc:  # unreachable, refused, dropped, 5xx: keep the last good state, retry
                with self.lock:
                    self.error = f"{self.kind}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    self.failing_since = self.failing_since or time.time()
                log.warning("%s; retrying in %.1fs", self.error, backoff)
                self.stop.wait(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)

    def items(self) -> list[Any]:
        with self.lock:
            return list(self.store.values())


class KubeApiProvider:
    """A ClusterProvider backed by informers on a kubernetes ApiClient."""

    def __init__(self, api_client: Any, node_name: str, origin: str, max_stale_s: float = 300.0,
                 backoff_max_s: float = 30.0) -> None:
        from kubernetes import client

        core, discovery = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)
        self.api_client = api_client  # for on-demand reads (`explain`'s pods: agent/collect/service_pods.py)
        self.origin, self.max_stale_s = origin, max_stale_s
        self._last_lock = threading.Lock()
        self._last: tuple[tuple[Any, ...], ClusterState] | None = None
        self.informers = {
            "services": Informer("services", core.list_service_for_all_namespaces, compact_service,
                                 backoff_max_s=backoff_max_s),
            "endpointslices": Informer("endpointslices", discovery.list_endpoint_slice_for_all_namespaces,
                                       compact_slice, backoff_max_s=backoff_max_s),
            "node": Informer("node", core.list_node, compact_node, f"metadata.name={node_name}",
                             backoff_max_s=backoff_max_s),
            "pods": Informer("pods", core.list_pod_for_all_namespaces, compact_pod, f"spec.nodeName={node_name}",
                             backoff_max_s=backoff_max_s),
        }

    def start(self) -> None:
        for inf in self.informers.values():
            inf.start()

    def stop(self) -> None:
        for inf in self.informers.values():
            inf.stop.set()

    def sync_once(self, timeout_s: float = 30.0) -> None:
        """One list of everything, no watch (for the one-shot `svcdoctor check`)."""
        for inf in self.informers.values():
            try:
                inf.list_once(timeout_s)
            except Exception as exc:
                inf.error = f"{inf.kind}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                inf.failing_since = time.time()

    def state(self) -> ClusterState:
        """The current compact state. While nothing changed and the API answers, the very same object is
        returned, so what checks derive from it (agent/checks/memo.py) is not derived again."""
        infs = list(self.informers.values())
        key = tuple((i.changes, i.error, i.listed) for i in infs)
        healthy = all(i.failing_since is None for i in infs)
        with self._last_lock:
            if healthy and self._last is not None and self._last[0] == key:
                return self._last[1]
        state = self._build(infs)
        with self._last_lock:
            self._last = (key, state) if healthy else None
        return state

    def _build(self, infs: list[Informer]) -> ClusterState:
        now = time.time()
        errors = [i.error for i in infs if i.error]
        stale = max([now - i.failing_since for i in infs if i.failing_since is not None], default=0.0)
        listed = all(i.listed for i in infs)
        nodes = self.informers["node"].items()
        return ClusterState(
            origin=self.origin, fetched_at=max((i.updated_at for i in infs), default=0.0),
            services=self.informers["services"].items(), slices=self.informers["endpointslices"].items(),
            node=nodes[0] if nodes else None, pods=self.informers["pods"].items(),
            stale_seconds=stale, api_error="; ".join(errors) if errors else None,
            usable=listed and stale <= self.max_stale_s,
        )


def api_client_from(kubeconfig: str | None) -> tuple[Any, str]:
    """An ApiClient from in-cluster config (kubeconfig None) or a kubeconfig file, and its server URL."""
    from kubernetes import client, config

    conf = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=conf)  # type: ignore[no-untyped-call]
    return client.ApiClient(conf), f"api {conf.host}"
