"""Live cluster state: list then watch Services, EndpointSlices, this Node and this node's Pods.

Uses the `kubernetes` client for configuration, auth and transport, but reads raw JSON
(`_preload_content=False`): measured on 10k Services + 10k EndpointSlices, the generated models cost
4.0 s and +250 MB, raw JSON 0.7 s and +107 MB; and only the compact model (agent/kubeobjects.py) is
kept. While the API is unreachable the last good state stands in, for at most `max_stale_s`.

Every node runs an agent, so what one agent asks of the API server is multiplied by the node count.
Each resource has one informer thread that asks what kube-proxy's informers (client-go's reflector)
ask, and no more (docs/design.md, "Cluster state"):
- the initial state is a streaming list (a watch with `sendInitialEvents=true`, served by the API
  server's watch cache, which then goes on as the watch) where the server has it; where it refuses one
  (HTTP 400/422, as kube-apiserver before 1.27 or with the WatchList gate off does) or ignores it (a
  plain bookmark or the end of the stream before the `k8s.io/initial-events-end` bookmark), every
  informer of the agent falls back, for good, to a list with `resourceVersion=0`, also from the cache;
- the watch resumes from the last resourceVersion seen (events and bookmarks) after a timeout or a
  dropped connection: no relist; only `410 Gone` relists, from the cache again ("not older than" the
  last resourceVersion); only a list that is itself too old (410) reads from etcd;
- the first request waits a random [0, start_jitter_s) after start; every failure waits a jittered
  exponential backoff; a 429 waits at least its `Retry-After` (agent/collect/kube_backoff.py).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent.collect import kube_backoff
from agent.kubeobjects import PROXIED_SELECTOR, compact_node, compact_pod, compact_service, compact_slice
from agent.model.cluster import ClusterState

log = logging.getLogger("svcdoctor.kubeapi")
PAGE = 500  # client-go's pager size: the watch cache ignores it for resourceVersion=0, etcd pages by it
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
SHORT_WATCH_S = 1.0  # a watch that ends this soon with nothing in it is a failure, not a timeout (client-go)
REFUSED_STATUSES = (400, 422)  # how API servers without streaming lists answer one (see StreamingSupport)


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410 / watch ERROR 410): list again."""

    def __init__(self, message: str, *, from_list: bool = False) -> None:
        super().__init__(message)
        self.from_list = from_list


class Throttled(Exception):
    """HTTP 429 (API priority and fairness): wait at least `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The server does not do streaming lists: list instead."""


class Dropped(Exception):
    """An established watch was cut (no final chunk: a load balancer, an API server restarting): watch
    again, after a backoff, from the last resourceVersion. Not an API failure: the state is as current as
    the stream was, and the reconnection says whether the API is still there."""


class StreamingSupport:
    """Whether this agent's API server does streaming lists, shared by the agent's informers: known
    after the first try, kept for the agent's life (a server upgraded meanwhile is used at the next start)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.refused: str | None = None
        self._lock = threading.Lock()

    @property
    def usable(self) -> bool:
        return self.enabled and self.refused is None

    def refuse(self, reason: str) -> None:
        with self._lock:
            if self.refused is None:
                log.info("streaming lists not available (%s): listing from the watch cache instead", reason)
                self.refused = reason


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


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def describe(exc: BaseException) -> str:
    """An API error in one short clause an operator can act on, not urllib3's nested repr: "connection
    refused by 10.96.0.1:443", "HTTP 403 Forbidden", "timed out"."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    reason: BaseException | None = getattr(exc, "reason", None) if isinstance(getattr(exc, "reason", None),
                                                                             BaseException) else None
    inner = reason or exc
    pool = getattr(exc, "pool", None) or getattr(inner, "pool", None) or getattr(inner, "conn", None)
    where = f"{getattr(pool, 'host', '')}:{getattr(pool, 'port', '')}" if getattr(pool, "host", None) else ""
    text = str(inner)
    for needle, said in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "name not resolved"), ("No route to host", "no route to host"),
                         ("Network is unreachable", "network unreachable"), ("CERTIFICATE_VERIFY_FAILED",
                                                                            "server certificate not trusted")):
        if needle in text:
            return f"{said} ({where})" if where else said
    return f"{type(inner).__name__}: {_first_line(inner)[:200]}"


class Informer(threading.Thread):
    """One resource's list+watch loop (see the module docstring for the rules).

    `rng`, `clock` and `wait` are injectable so tests see every jittered delay without sleeping it."""

    def __init__(self, kind: str, list_fn: Callable[..., Any], compact: Callable[[dict[str, Any]], Any],
                 field_selector: str | None = None, backoff_max_s: float = kube_backoff.BACKOFF_CAP_S, *,
                 label_selector: str | None = None, streaming: StreamingSupport | None = None,
                 start_delay_s: float = 0.0, min_watch_timeout_s: float = kube_backoff.MIN_WATCH_TIMEOUT_S,
                 rng: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], object] | None = None) -> None:
        super().__init__(name=f"informer-{kind}", daemon=True)
        self.kind, self.list_fn, self.compact = kind, list_fn, compact
        self.field_selector, self.label_selector = field_selector, label_selector
        self.streaming = streaming or StreamingSupport(enabled=False)
        self.start_delay_s, self.min_watch_timeout_s = start_delay_s, min_watch_timeout_s
        self.rng, self.clock = rng, clock
        self.backoff = kube_backoff.Backoff(initial=min(kube_backoff.BACKOFF_INITIAL_S, backoff_max_s),
                                            cap=backoff_max_s, rng=rng)
        self.lock = threading.Lock()
        self.store: dict[str, Any] = {}
        self.rv = ""
        self.listed = False  # at least one full list succeeded
        self.error: str | None = None
        self.failing_since: float | None = None
        self.updated_at = 0.0
        self.stop = threading.Event()
        self._wait = wait or self.stop.wait
        self.relists = 0
        self.waits: deque[tuple[str, float]] = deque(maxlen=64)  # (why, seconds) of the last pauses taken
        self.changes = 0  # bumped on every list and every object event: "has anything changed?"
        # What the next list asks for: "0" (the watch cache, any age) at first; after a watch's 410 the
        # last resourceVersion ("not older than", still the cache); "" (etcd, consistent) after a list's 410.
        self._list_rv = "0"
        self._need_sync = True  # no state yet, or a 410 made it unusable to watch on from

    # requests -----------------------------------------------------------------------------------------
    def _call(self, **kw: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        if self.field_selector:
            kw["field_selector"] = self.field_selector
        if self.label_selector:
            kw["label_selector"] = self.label_selector
        try:
            return self.list_fn(_preload_content=False, **kw)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(str(exc.reason), from_list=not kw.get("watch")) from exc
            if exc.status == 429:
                headers = dict(exc.headers or {})
                raise Throttled(f"429 {exc.reason}", kube_backoff.retry_after_s(headers, time.time())) from exc
            if exc.status == 504 and not kw.get("watch") and "too large resource version" in str(exc.body).lower():
                # The cache is behind what this agent saw (another API server, or etcd restored): read
                # etcd, as client-go's reflector does.
                raise Gone("too large resource version", from_list=True) from exc
            if kw.get("send_initial_events") and exc.status in REFUSED_STATUSES:
                raise Refused(f"HTTP {exc.status} {exc.reason}") from exc
            raise

    def list_once(self, timeout_s: float = 30.0, resource_version: str | None = None) -> None:
        """One list into a fresh store, at `resource_version` (by default what the rules above choose).
        Asks for pages of 500 where the list may come from etcd (resourceVersion "" or 0, as client-go's
        pager does: the watch cache ignores the limit for 0); a resourceVersion N asks the cache, unpaged."""
        items: dict[str, Any] = {}
        cont: str | None = None
        rv = self._list_rv if resource_version is None else resource_version
        while True:
            kw: dict[str, Any] = {"_request_timeout": timeout_s}
            if cont:
                kw.update(_continue=cont, limit=PAGE)  # the token carries the resourceVersion
            else:
                if rv:
                    kw["resource_version"] = rv
                if rv in ("", "0"):
                    kw["limit"] = PAGE
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
            self._need_sync = False
            self.changes += 1
            self._healthy()

    def _healthy(self) -> None:
        self.error, self.failing_since, self.updated_at = None, None, time.time()

    def _watch_kw(self) -> dict[str, Any]:
        timeout = kube_backoff.watch_timeout(self.min_watch_timeout_s, self.rng)
        return {"watch": True, "allow_watch_bookmarks": True, "timeout_seconds": timeout,
                "_request_timeout": (10, timeout + 30)}

    def stream_sync(self) -> None:
        """The initial state as a streaming list, then the watch on the same connection."""
        kw = self._watch_kw()
        kw.update(send_initial_events=True, resource_version_match="NotOlderThan")
        if self._list_rv not in ("", "0"):
            kw["resource_version"] = self._list_rv  # after a 410: "not older than" what this agent saw
        self._consume(self._call(**kw), initial={})

    def watch_once(self) -> None:
        kw = self._watch_kw()
        kw["resource_version"] = self.rv
        self._consume(self._call(**kw), initial=None)

    def _consume(self, resp: Any, initial: dict[str, Any] | None) -> None:
        """Apply a watch stream's events. With `initial` (a streaming list), objects go there until the
        initial-events-end bookmark makes it the store."""
        import urllib3

        started, events = self.clock(), 0
        if initial is None:
            with self.lock:
                self._healthy()  # connected and answered: the API is reachable again
        ended = False
        try:
            lines = _lines(resp)
            while True:
                try:
                    line = next(lines, None)
                except (OSError, urllib3.exceptions.HTTPError) as exc:  # cut mid-stream, no final chunk
                    raise Dropped(f"{type(exc).__name__}: {_first_line(exc)}") from exc
                if line is None:
                    ended = True
                    break
                if self.stop.is_set():
                    break
                events += 1
                initial = self._event(json.loads(line), initial)
        finally:
            if not ended:
                resp.close()  # left mid-stream: the rest of it must not be read as the next answer
            resp.release_conn()
        if self.stop.is_set():
            return
        if initial is not None:
            raise Refused("the stream ended before the initial-events-end bookmark")
        if not events and self.clock() - started < SHORT_WATCH_S:
            raise RuntimeError("very short watch: the server ended it at once, with nothing in it")

    def _event(self, ev: dict[str, Any], initial: dict[str, Any] | None) -> dict[str, Any] | None:
        kind, obj = ev.get("type"), ev.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(str(obj.get("message")))
            if obj.get("code") == 429:
                raise Throttled(str(obj.get("message")), None)
            raise RuntimeError(f"watch error: {obj.get('message')}")
        rv = str(meta.get("resourceVersion", self.rv))
        if initial is not None:
            if kind == "BOOKMARK":
                if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) != "true":
                    raise Refused("a bookmark came before the initial-events-end bookmark")
                with self.lock:
                    self.store, self.rv, self.listed = initial, rv, True
                    self._need_sync = False  # from here on the stream is a plain watch
                    self.changes += 1
                    self._healthy()
                return None
            if kind in ("ADDED", "MODIFIED"):
                initial[_key(obj)] = self.compact(obj)
            elif kind == "DELETED":
                initial.pop(_key(obj), None)
            return initial
        with self.lock:
            if kind in ("ADDED", "MODIFIED"):
                self.store[_key(obj)] = self.compact(obj)
                self.changes += 1
            elif kind == "DELETED":
                self.store.pop(_key(obj), None)
                self.changes += 1
            self.rv = rv
            self._healthy()
        return None

    # the loop ---------------------------------------------------------------------------------------
    def _pause(self, why: str, seconds: float) -> None:
        self.waits.append((why, seconds))
        self._wait(seconds)

    def _failed(self, exc: BaseException) -> None:
        with self.lock:
            self.error = f"{self.kind}: {describe(exc)}"
            self.failing_since = self.failing_since or time.time()

    def run(self) -> None:
        if self.start_delay_s > 0:
            self._pause("start", self.start_delay_s)
        while not self.stop.is_set():
            try:
                if not self._need_sync:
                    self.watch_once()  # ends at the server's timeout: watch again from rv at once
                elif self.streaming.usable:
                    self.stream_sync()  # synced, it goes on as the watch; cut or ended, watch_once resumes
                else:
                    self.list_once()
            except Refused as exc:
                self.streaming.refuse(str(exc))
            except Gone as exc:
                self.relists += 1
                self._need_sync = True
                # A list's 410: the continue token or resourceVersion is gone even from the cache: etcd.
                self._list_rv = "" if exc.from_list else (self.rv or "0")
            except Throttled as exc:
                self._failed(exc)
                self._pause("429", self.backoff.next_wait(self.clock(), at_least=exc.retry_after or 0.0))
            except Dropped as exc:
                log.info("%s watch ended early (%s); resuming from %s", self.kind, exc, self.rv)
                self._pause("dropped", self.backoff.next_wait(self.clock()))
            except Exception as exc:  # unreachable, refused, 5xx: keep the last good state, retry
                self._failed(exc)
                delay = self.backoff.next_wait(self.clock())
                log.warning("%s; retrying in %.1fs", self.error, delay)
                self._pause("error", delay)

    def items(self) -> list[Any]:
        with self.lock:
            return list(self.store.values())


class KubeApiProvider:
    """A ClusterProvider backed by informers on a kubernetes ApiClient."""

    def __init__(self, api_client: Any, node_name: str, origin: str, max_stale_s: float = 300.0,
                 backoff_max_s: float = kube_backoff.BACKOFF_CAP_S, *, streaming: bool = True,
                 start_jitter_s: float = kube_backoff.START_JITTER_S,
                 min_watch_timeout_s: float = kube_backoff.MIN_WATCH_TIMEOUT_S,
                 rng: Callable[[], float] = random.random, wait: Callable[[float], object] | None = None) -> None:
        from kubernetes import client

        core, discovery = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)
        self.api_client = api_client  # for on-demand reads (`explain`'s pods: agent/collect/service_pods.py)
        self.origin, self.max_stale_s = origin, max_stale_s
        self._last_lock = threading.Lock()
        self._last: tuple[tuple[Any, ...], ClusterState] | None = None
        self.streaming = StreamingSupport(streaming)
        # One delay for the whole agent: its four first requests go together, the agents are spread.
        self.start_delay_s = kube_backoff.start_delay(start_jitter_s, rng)
        common: dict[str, Any] = {"backoff_max_s": backoff_max_s, "streaming": self.streaming,
                                  "start_delay_s": self.start_delay_s, "min_watch_timeout_s": min_watch_timeout_s,
                                  "rng": rng, "wait": wait}
        self.informers = {
            # kube-proxy's own label selector: no Services another proxy serves, no headless Services' slices
            "services": Informer("services", core.list_service_for_all_namespaces, compact_service,
                                 label_selector=PROXIED_SELECTOR, **common),
            "endpointslices": Informer("endpointslices", discovery.list_endpoint_slice_for_all_namespaces,
                                       compact_slice, label_selector=PROXIED_SELECTOR, **common),
            "node": Informer("node", core.list_node, compact_node, f"metadata.name={node_name}", **common),
            "pods": Informer("pods", core.list_pod_for_all_namespaces, compact_pod, f"spec.nodeName={node_name}",
                             **common),
        }

    def start(self) -> None:
        for inf in self.informers.values():
            inf.start()

    def stop(self) -> None:
        for inf in self.informers.values():
            inf.stop.set()

    def sync_once(self, timeout_s: float = 30.0) -> None:
        """One list of everything from the watch cache, no watch (for the one-shot `svcdoctor check`, which
        an operator starts: no start jitter)."""
        for inf in self.informers.values():
            try:
                inf.list_once(timeout_s)
            except Exception as exc:
                inf.error = f"{inf.kind}: {describe(exc)}"
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
            stale_seconds=stale, api_error=fold_errors(errors),
            usable=listed and stale <= self.max_stale_s,
        )


def fold_errors(errors: list[str]) -> str | None:
    """"services: X; endpointslices: X; ..." -> "services, endpointslices: X": one cause said once."""
    if not errors:
        return None
    by_cause: dict[str, list[str]] = {}
    for e in errors:
        kind, _, cause = e.partition(": ")
        by_cause.setdefault(cause, []).append(kind)
    return "; ".join(f"{', '.join(kinds)}: {cause}" for cause, kinds in by_cause.items())


def label_selector(selector: Mapping[str, str] | str) -> str:
    """A Service's `spec.selector` (a map of equalities) as a labelSelector query string."""
    if isinstance(selector, str):
        return selector
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def pods_matching(api_client: Any, namespace: str, selector: Mapping[str, str] | str, *,
                  compact: Callable[[dict[str, Any]], Any] = compact_pod, timeout_s: float = 10.0) -> list[Any]:
    """The pods of one namespace that a selector picks: for `svcdoctor explain`, on demand.

    One namespaced list from the watch cache (`/api/v1/namespaces/N/pods?labelSelector=S&resourceVersion=0`):
    never a cluster-wide list, never etcd, never paged. An empty selector selects nothing (a Service
    without one has no pods), so no request is made. `compact` turns each pod's JSON into what the caller
    keeps (the compact model by default). ApiException (403 without `list pods` in N, 429, ...) is the
    caller's to report."""
    text = label_selector(selector)
    if not text:
        return []
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)  # raw mode: the typed V1PodList is never built
    resp = core.list_namespaced_pod(
        namespace, label_selector=text, resource_version="0", _preload_content=False, _request_timeout=timeout_s)
    return [compact(obj) for obj in json.loads(resp.data).get("items") or []]


def api_client_from(kubeconfig: str | None) -> tuple[Any, str]:
    """An ApiClient from in-cluster config (kubeconfig None) or a kubeconfig file, and its server URL."""
    from kubernetes import client, config
    from urllib3.util.retry import Retry

    conf = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=conf)  # type: ignore[no-untyped-call]
    # urllib3 by default retries a request 3 times at once, and sleeps out a 429's Retry-After itself,
    # unjittered: 5,000 agents told "1 s" would come back in the same second. One retry of a failed
    # connection (a kept-alive one the server closed) stays; every other retry is the informer's, with
    # its backoff and jitter.
    conf.retries = Retry(total=1, connect=1, read=1, status=0, other=0, redirect=0,
                         respect_retry_after_header=False, raise_on_status=False)
    return client.ApiClient(conf), f"api {conf.host}"
