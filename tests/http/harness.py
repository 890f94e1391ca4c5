"""An in-process `svcdoctor serve` HTTP server on loopback, fed synthetic Reports (no collection).

The server, app, cache, TLS and auth are the agent's own (agent.serve.build_server); only the
scheduler is replaced by `publish()`. Used by tests/http/ and bench/bench_http.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.catalogue import finding
from agent.config import Config
from agent.http_server import HttpServer, Limits
from agent.model import Finding, Snapshot
from agent.model.views import Views
from agent.runner import Runner
from agent.serve import State, build_server


def service_findings(count: int) -> list[Finding]:
    """`count` critical findings about distinct Service ports, ~800 bytes each in the JSON document."""
    out = []
    for i in range(count):
        svc = f"namespace-{i % 97:03d}/service-{i:05d}:https"
        out.append(finding("rules.endpoint_missing", svc, service=svc, evidence={
            "endpoint": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:8443", "mode": "iptables",
            "chain": f"KUBE-SEP-{i:016X}", "slice": f"service-{i:05d}-abcde"}))
    return out


def report_with(findings: list[Finding], snapshot: Snapshot | None = None) -> Any:
    """A Report as the runner makes it (whatever module the Report class lives in)."""
    from tests.snapshots import healthy

    def fixed(_: Snapshot, __: Views) -> Iterator[Finding]:
        yield from findings

    return Runner(Config(node_name="test-node"), collectors=(), checks=(fixed,)).check(snapshot or healthy())


class Running:
    """build_server() on 127.0.0.1, its event loop in a thread; `stop()` closes everything."""

    def __init__(self, cfg: Config | None = None, limits: Limits | None = None, state: State | None = None) -> None:
        self.cfg = cfg or config()
        self.state = state or State()
        self.pool = ThreadPoolExecutor(max_workers=(limits or Limits()).workers)
        self.server: HttpServer = build_server(self.state, self.cfg, self.pool, limits)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="test-http", daemon=True)
        self.thread.start()
        if not started.wait(30):
            raise AssertionError("server did not start")

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def publish(self, report: Any) -> None:
        self.state.publish(report)

    def call(self, fn: Any) -> Any:
        """Run `fn()` on the server's loop (to read its counters) and return the result."""
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for s in self.server.sockets:
            s.close()


    async def _shutdown(self) -> None:
        self.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)


def config(**kw: Any) -> Config:
    """The agent's Config for a server on a free loopback port."""
    return Config(**{"node_name": "test-node", "listen": "127.0.0.1", "port": 0, **kw})


async def _call(fn: Any) -> Any:
    return fn()
