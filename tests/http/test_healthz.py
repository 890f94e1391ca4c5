"""/healthz: 503 when no check completed within its window, from the last check or from the start."""

from __future__ import annotations

import dataclasses
import http.client
import re
import time
from pathlib import Path

from agent.http_app import health, health_window_s
from agent.serve import State
from tests.http.harness import Running, config, report_with

README = Path(__file__).resolve().parents[2] / "README.md"


def get_healthz(srv: Running) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/healthz")
    res = conn.getresponse()
    out = res.status, res.read()
    conn.close()
    return out


def test_the_window_is_the_one_the_readme_states() -> None:
    sentence = " ".join(README.read_text().split())
    assert "within 3 x `--interval` + 2 x `--source-timeout` + 60 s" in sentence
    m = re.search(r"\((\d+) min (\d+) s with the defaults\)", sentence)
    assert m is not None
    assert health_window_s(30, 20) == int(m.group(1)) * 60 + int(m.group(2)) == 190


def test_503_when_no_check_completed_within_the_window_since_start() -> None:
    state = State()
    window = health_window_s(30, 20)
    state.started_at = time.time() - window - 5  # an agent whose every run crashed or hung since
    srv = Running(config(interval_s=30, source_timeout_s=20), state=state)
    try:
        status, body = get_healthz(srv)
        assert status == 503 and b"no check has completed" in body
        state.started_at = time.time() - window + 30  # the same agent, still inside the window
        assert get_healthz(srv) == (200, b"starting\n")
    finally:
        srv.stop()


def test_503_when_the_last_check_is_stale() -> None:
    srv = Running(config(interval_s=10, source_timeout_s=5))
    window = health_window_s(10, 5)
    try:
        fresh = report_with([])
        srv.publish(dataclasses.replace(fresh, generated_at=time.time() - window - 5))
        status, body = get_healthz(srv)
        assert status == 503 and body.startswith(b"stale")
        srv.publish(dataclasses.replace(fresh, generated_at=time.time() - window + 30))
        assert get_healthz(srv) == (200, b"ok\n")
    finally:
        srv.stop()


def test_health_rule_at_its_edges() -> None:
    assert health(None, started_at=1000.0, now=1100.0, window_s=100.0)[0] == 200
    assert health(None, started_at=1000.0, now=1100.5, window_s=100.0)[0] == 503
    report = report_with([])
    at = report.generated_at
    assert health(report, started_at=0.0, now=at + 100.0, window_s=100.0) == (200, b"ok\n")
    assert health(report, started_at=0.0, now=at + 100.5, window_s=100.0)[0] == 503
