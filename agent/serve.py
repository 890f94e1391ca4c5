"""`svcdoctor serve`: checks on a background schedule; HTTP serves the latest result.

Scrapes and /findings never trigger a collection (a slow iptables-save must not be multiplied by
every scraper): they read the latest immutable Report, swapped in whole under a lock, and are
answered from bytes rendered once per Report (agent/http_app.py) by an event-loop server with a
small worker pool (agent/http_server.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from agent.config import Config
from agent.http_app import App, health_window_s
from agent.http_auth import KubernetesAuth
from agent.http_server import HttpServer, Limits, PortInUse, StartError, bind
from agent.model.report import Report
from agent.persistence import LagTracker
from agent.report.metrics import ReportCollector
from agent.runner import Runner
from agent.tls import ReloadingTls, TlsError

__all__ = ["PortInUse", "StartError", "State", "serve"]
log = logging.getLogger("svcdoctor")
FD_RESERVE = 64  # descriptors kept for the collectors' pipes, netlink sockets and the API client


class State:
    """The latest Report and run counters, shared between the scheduler and the server.

    `generation` changes whenever anything a response shows changes (a publish, a crash): the
    server's rendered bytes are valid for one generation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: Report | None = None
        self._ok = 0
        self._crashed = 0
        self._generation = 0
        self.started_at = time.time()
        self.last_attempt = 0.0
        self.lag = LagTracker()
        self.listeners: list[Callable[[], object]] = []  # told after each publish or crash (the server renders)
        self.explain_options: dict[str, Any] = {}  # agent/explain/run.py serve_options

    def publish(self, report: Report) -> None:
        with self._lock:
            self._report = report
            self._ok += 1
            self._generation += 1
        self._tell()

    def crashed(self) -> None:
        with self._lock:
            self._crashed += 1
            self._generation += 1
        self._tell()

    def _tell(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a server that has gone away must not fail the check run
                log.exception("publish listener failed")

    def latest(self) -> Report | None:
        with self._lock:
            return self._report

    def current(self) -> tuple[int, Report | None]:
        with self._lock:
            return self._generation, self._report

    def runs(self) -> tuple[int, int]:
        with self._lock:
            return self._ok, self._crashed


class Scheduler(threading.Thread):
    def __init__(self, runner: Runner, state: State, interval_s: float) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.runner, self.state, self.interval_s = runner, state, interval_s
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.state.last_attempt = time.time()
            try:
                # rules.* differences persisting over two runs only; kept without the parsed rules (as_served)
                report = self.runner.run_once().as_served()
                self.state.lag.observe(report)
                self.state.publish(report)
            except Exception:  # keep serving the last good result; the counter shows the crash
                log.exception("check run crashed")
                self.state.crashed()
            self.stop.wait(max(1.0, self.interval_s - (time.monotonic() - started)))


def metrics_renderer(state: State) -> Callable[[], bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(state.latest, state.runs, state.lag.snapshot))
    return lambda: bytes(generate_latest(registry))


def connection_limits(limits: Limits) -> Limits:
    """Raise the descriptor limit to its hard maximum and keep the connection cap below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    cap = max(16, min(limits.max_connections, soft - FD_RESERVE))
    if cap < limits.max_connections:
        log.warning("open files limited to %d: at most %d HTTP connections", soft, cap)
    return replace(limits, max_connections=cap)


def authenticator(cfg: Config) -> KubernetesAuth | None:
    if cfg.auth == "none":
        return None
    if cfg.auth != "kubernetes":
        raise StartError(f"--auth must be none or kubernetes, not {cfg.auth!r}")
    from agent.collect.kubeapi import api_client_from

    try:
        client, _ = api_client_from(str(cfg.kubeconfig) if cfg.kubeconfig else None)
    except Exception as exc:  # the kubernetes client raises its own ConfigException, and OSError
        raise StartError(f"--auth=kubernetes needs the API server: {str(exc).splitlines()[0]}") from None
    return KubernetesAuth(client)


def tls_from(cfg: Config) -> ReloadingTls | None:
    if cfg.tls_cert_file is None and cfg.tls_key_file is None:
        return None
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        raise StartError("TLS needs both --tls-cert-file and --tls-key-file")
    try:
        return ReloadingTls(cfg.tls_cert_file, cfg.tls_key_file)
    except TlsError as exc:
        raise StartError(str(exc)) from None


def build_server(state: State, cfg: Config, pool: ThreadPoolExecutor, limits: Limits | None = None
                 ) -> HttpServer:
    """Everything that can fail on bad configuration fails here, before any check runs."""
    tls = tls_from(cfg)
    auth = authenticator(cfg)
    sockets = bind(cfg.listen, cfg.port)
    window_s = health_window_s(cfg.interval_s, cfg.source_timeout_s)
    app = App(state, metrics_renderer(state), pool, window_s=window_s, auth=auth)
    return HttpServer(app, sockets, limits or Limits(), tls=tls.context if tls else None,
                      on_start=app.start_prewarming)


def serve(runner: Runner) -> None:
    from agent.explain.run import serve_options

    cfg = runner.cfg
    state = State()
    state.explain_options = serve_options(runner.cfg, runner.cluster)
    limits = connection_limits(Limits())
    with ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="http-worker") as pool:
        server = build_server(state, cfg, pool, limits)
        sched = Scheduler(runner, state, cfg.interval_s)
        sched.start()
        log.info("serving on %s port %d%s%s, checking every %gs", cfg.listen, cfg.port,
                 " (TLS)" if server.tls else "", f" (auth {cfg.auth})" if cfg.auth != "none" else "", cfg.interval_s)
        try:
            asyncio.run(server.serve_forever())
        finally:
            sched.stop.set()
            server.close()
