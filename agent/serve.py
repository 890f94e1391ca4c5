"""`svcdoctor serve`: checks on a background schedule; HTTP serves the latest result.

Scrapes and /findings never trigger a collection (a slow iptables-save must not be multiplied by
every scraper): they read the latest immutable Report, swapped in whole under a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from agent.heap import HeapKeeper
from agent.persistence import LagTracker, Persistence
from agent.report.document import BadFilter, document, parse_filters
from agent.report.metrics import ReportCollector
from agent.runner import Report, Runner

log = logging.getLogger("svcdoctor")


class PortInUse(OSError):
    pass


class State:
    """The latest Report and run counters, shared between the scheduler and request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: Report | None = None
        self._ok = 0
        self._crashed = 0
        self.last_attempt = 0.0
        self.persistence = Persistence()
        self.lag = LagTracker()
        self.explain_options: dict[str, Any] = {}  # agent/explain/run.py serve_options

    def publish(self, report: Report) -> None:
        with self._lock:
            self._report = report
            self._ok += 1

    def crashed(self) -> None:
        with self._lock:
            self._crashed += 1

    def latest(self) -> Report | None:
        with self._lock:
            return self._report

    def runs(self) -> tuple[int, int]:
        with self._lock:
            return self._ok, self._crashed


class Scheduler(threading.Thread):
    def __init__(self, runner: Runner, state: State, interval_s: float) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.runner, self.state, self.interval_s = runner, state, interval_s
        self.stop = threading.Event()
        self.heap = HeapKeeper()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.state.last_attempt = time.time()
            self.heap.hold()  # no garbage collection while the run builds its million objects
            try:
                report = self.state.persistence.filter(self.runner.run_once())
                self.state.lag.observe(report)
                self.state.publish(report)
            except Exception:  # keep serving the last good result; the counter shows the crash
                log.exception("check run crashed")
                self.state.crashed()
            self.heap.settle()  # what this run left is what the next one builds on: out of the gc's way
            self.stop.wait(max(1.0, self.interval_s - (time.monotonic() - started)))


def make_handler(state: State, registry: CollectorRegistry, stale_after_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "svcdoctor"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, (json.dumps(obj, indent=1) + "\n").encode(), "application/json")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif url.path == "/findings":
                report = state.latest()
                if report is None:
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no check has completed yet"})
                    return
                try:
                    filters = parse_filters(parse_qs(url.query, keep_blank_values=True))
                except BadFilter as exc:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                    return
                self._json(200, document(report, filters))
            elif url.path == "/healthz":
                report = state.latest()
                if report is not None and time.time() - report.generated_at > stale_after_s:
                    self._send(503, b"stale: no check completed recently\n", "text/plain")
                else:
                    self._send(200, b"ok\n" if report else b"starting\n", "text/plain")
            elif url.path == "/explain":
                from agent.explain.run import explain_response

                status, body = explain_response(state.latest(), url.query, **state.explain_options)
                self._send(status, body, "application/json")
            elif url.path == "/":
                self._send(200, b"svcdoctor: /metrics /findings /healthz /explain\n", "text/plain")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path}"})

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 refuses bursts of concurrent scrapes/curl


def bind(listen: str, port: int, state: State, stale_after_s: float) -> Server:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(state.latest, state.runs, state.lag.snapshot))
    try:
        return Server((listen, port), make_handler(state, registry, stale_after_s))
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE
            raise PortInUse(
                f"port {port} on {listen or '*'} is already in use (node_exporter often holds 9100): "
                "choose another with --port or the SVCDOCTOR_PORT environment variable") from exc
        raise


def serve(runner: Runner, listen: str, port: int, interval_s: float) -> None:
    from agent.explain.run import serve_options

    state = State()
    state.explain_options = serve_options(runner.cfg, runner.cluster)
    server = bind(listen, port, state, stale_after_s=3 * interval_s + 2 * runner.cfg.source_timeout_s + 60)
    sched = Scheduler(runner, state, interval_s)
    sched.start()
    log.info("serving on %s:%d, checking every %gs", listen, port, interval_s)
    try:
        server.serve_forever()
    finally:
        sched.stop.set()
        server.server_close()
