"""What `svcdoctor serve` answers: /metrics, /findings, /healthz, over agent/http_server.py.

Each answer is rendered once per Report (and per query variant, and once more gzipped when a client
asks for it) by the existing reporters, in the worker pool, and then served from the cached bytes: a
thousand scrapers of a 3.2 MB document share one render and one copy. Concurrent requests for a body
not yet rendered wait for the same render. The cache is dropped whole when a new Report (or a crashed
run, which changes the run counters in /metrics) is published.

Everything here runs on the event loop thread except the `render` and `decide` calls handed to the
pool, so the cache needs no lock.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from agent.http_auth import Decision, KubernetesAuth
from agent.http_server import Request, Response
from agent.model.report import Report
from agent.report.document import BadFilter, document, parse_filters

log = logging.getLogger("svcdoctor.http")
JSON = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROTECTED = frozenset({"/findings", "/metrics", "/explain"})  # /healthz stays open for the kubelet's probe
GZIP_MIN_BYTES = 1024
Key = tuple[Any, ...]


class StateView(Protocol):
    started_at: float
    listeners: list[Callable[[], object]]  # called (on the scheduler's thread) after each publish or crash

    def current(self) -> tuple[int, Report | None]: ...


def health(report: Report | None, started_at: float, now: float, window_s: float) -> tuple[int, bytes]:
    """200 while checks complete; 503 when none has completed within `window_s`, counted from the
    last completed check or, before the first, from the agent's start (so a liveness probe restarts an
    agent whose every run crashes or hangs)."""
    if report is None:
        if now - started_at > window_s:
            return 503, f"no check has completed in the {now - started_at:.0f}s since start\n".encode()
        return 200, b"starting\n"
    if now - report.generated_at > window_s:
        return 503, f"stale: the last check completed {now - report.generated_at:.0f}s ago\n".encode()
    return 200, b"ok\n"


def health_window_s(interval_s: float, source_timeout_s: float) -> float:
    """The documented rule (README, Commands): 3 x --interval + 2 x --source-timeout + 60 s."""
    return 3 * interval_s + 2 * source_timeout_s + 60


def json_error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, (json.dumps({"error": message}, indent=1) + "\n").encode(), JSON, headers)


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


class RenderCache:
    """Rendered bodies of one generation of the state, by key; bounded in entries and bytes."""

    def __init__(self, pool: Executor, max_entries: int = 64, max_bytes: int = 96 << 20) -> None:
        self.pool, self.max_entries, self.max_bytes = pool, max_entries, max_bytes
        self._generation = -1
        self._entries: OrderedDict[Key, bytes] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[Key, asyncio.Future[bytes]] = {}
        self.renders: Counter[Key] = Counter()  # renders by key, since start

    async def get(self, generation: int, key: Key, render: Callable[[], bytes]) -> bytes:
        if generation != self._generation:
            self._generation = generation
            self._entries.clear()
            self._inflight.clear()
            self._bytes = 0
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
            return body
        fut = self._inflight.get(key)
        if fut is None:
            self.renders[key] += 1
            fut = asyncio.get_running_loop().run_in_executor(self.pool, render)
            self._inflight[key] = fut
            fut.add_done_callback(lambda f: self._store(generation, key, f))
        return await asyncio.shield(fut)  # one waiter hanging up must not cancel the others' render

    def _store(self, generation: int, key: Key, fut: asyncio.Future[bytes]) -> None:
        if generation != self._generation or self._inflight.get(key) is not fut:
            return
        del self._inflight[key]
        if fut.cancelled() or fut.exception() is not None:
            return
        body = fut.result()
        if len(body) > self.max_bytes:
            return
        self._entries[key] = body
        self._bytes += len(body)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old)


@dataclass
class App:
    state: StateView
    render_metrics: Callable[[], bytes]
    pool: Executor
    window_s: float
    auth: KubernetesAuth | None = None

    def __post_init__(self) -> None:
        self.cache = RenderCache(self.pool)
        self._auth_inflight: dict[tuple[str, str], asyncio.Future[Decision]] = {}
        # unfiltered bodies asked for: rendered ahead next time (Prometheus always asks for gzip)
        self._wanted: set[tuple[str, bool]] = {("metrics", True)}
        self._prewarming: set[asyncio.Task[Response]] = set()

    def start_prewarming(self) -> None:
        """On the loop: from now on, each new Report's bodies that scrapers asked for before (the whole
        /metrics and /findings, plain or gzipped) are rendered as soon as it is published, so the
        first scrape after a check does not wait for a render."""
        loop = asyncio.get_running_loop()
        self.state.listeners.append(lambda: loop.call_soon_threadsafe(self._prewarm))

    def _prewarm(self) -> None:
        generation, report = self.state.current()
        for kind, gz in sorted(self._wanted):
            if kind == "findings" and report is None:
                continue
            coro = self._findings(generation, report, {}, gz) if kind == "findings" else self._metrics(generation, gz)
            task = asyncio.ensure_future(coro)
            self._prewarming.add(task)  # keep a reference until done
            task.add_done_callback(self._prewarmed)

    def _prewarmed(self, task: asyncio.Task[Response]) -> None:
        self._prewarming.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("rendering ahead failed: %s", task.exception())  # a request will render and answer 500

    async def __call__(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return json_error(405, f"method {req.method} is not allowed; use GET or HEAD",
                              (("Allow", "GET, HEAD"),))
        url = urlsplit(req.target)
        if url.path in PROTECTED and self.auth is not None:
            decision = await self._authorize(req.headers.get("authorization"), url.path)
            if decision.status != 200:
                extra = (("WWW-Authenticate", 'Bearer realm="svcdoctor"'),) if decision.status == 401 else ()
                return json_error(decision.status, decision.reason, extra)
        gz = accepts_gzip(req.headers.get("accept-encoding", ""))
        if url.path == "/findings":
            return await self._findings_query(url.query, gz)
        if url.path == "/metrics":
            self._wanted.add(("metrics", gz))
            return await self._metrics(self.state.current()[0], gz)
        if url.path == "/healthz":
            _, report = self.state.current()
            status, body = health(report, self.state.started_at, time.time(), self.window_s)
            return Response(status, body)
        if url.path == "/explain":
            return await self._explain(url.query)
        if url.path == "/":
            return Response(200, b"svcdoctor: /metrics /findings /healthz /explain\n")
        return json_error(HTTPStatus.NOT_FOUND, f"no such path {url.path}")

    async def _explain(self, query: str) -> Response:
        """One Service's walk of the guide from the latest report; its probes block, so a worker runs it."""
        from agent.explain.run import explain_response

        _, report = self.state.current()
        options = getattr(self.state, "explain_options", {})
        status, body = await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: explain_response(report, query, **options))
        return Response(status, body, JSON)

    async def _findings_query(self, query: str, gz: bool) -> Response:
        generation, report = self.state.current()
        if report is None:
            return json_error(HTTPStatus.SERVICE_UNAVAILABLE, "no check has completed yet")
        params = parse_qs(query, keep_blank_values=True)
        repeated = sorted(name for name, values in params.items() if len(values) > 1)
        if repeated:
            return json_error(400, f"parameter {repeated[0]!r} is given more than once; give each at most once")
        try:
            filters = parse_filters(params)
        except BadFilter as exc:
            return json_error(400, str(exc))
        if not filters:
            self._wanted.add(("findings", gz))
        return await self._findings(generation, report, filters, gz)

    async def _findings(self, generation: int, report: Report | None, filters: dict[str, str], gz: bool
                        ) -> Response:
        def render() -> bytes:
            assert report is not None
            return (json.dumps(document(report, filters), indent=1) + "\n").encode()

        return await self._cached(generation, ("findings", *sorted(filters.items())), render, JSON, gz)

    async def _metrics(self, generation: int, gz: bool) -> Response:
        return await self._cached(generation, ("metrics",), self.render_metrics, METRICS_TYPE, gz)

    async def _cached(self, generation: int, key: Key, render: Callable[[], bytes], ctype: str, gz: bool
                      ) -> Response:
        body = await self.cache.get(generation, key, render)
        vary = (("Vary", "Accept-Encoding"),)
        if not gz or len(body) < GZIP_MIN_BYTES:
            return Response(200, body, ctype, vary)
        packed = await self.cache.get(generation, (*key, "gzip"), lambda: gzip.compress(body, 6, mtime=0))
        return Response(200, packed, ctype, (*vary, ("Content-Encoding", "gzip")))

    async def _authorize(self, authorization: str | None, path: str) -> Decision:
        auth = self.auth
        assert auth is not None
        early = auth.cached(authorization, path)
        if early is not None:
            return early
        key = (authorization or "", path)  # concurrent scrapes with one token ask the API server once
        fut = self._auth_inflight.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().run_in_executor(self.pool, auth.decide, authorization, path)
            self._auth_inflight[key] = fut
            fut.add_done_callback(lambda f: self._auth_inflight.pop(key, None))
        return await asyncio.shield(fut)
