"""The serve HTTP server on loopback: methods, parameters, caching, gzip, keep-alive, timeouts, the
connection cap. In-process (tests/http/harness.py) so counters such as renders can be asserted."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from agent.http_server import Limits
from tests.http.harness import Running, report_with, service_findings


@pytest.fixture
def server() -> Iterator[Running]:
    srv = Running()
    srv.publish(report_with(service_findings(300)))
    yield srv
    srv.stop()


def request(srv: Running, method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (recv sees EOF) before the socket's own timeout."""
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_head_answers_like_get_without_a_body(server: Running) -> None:
    status, headers, body = request(server, "GET", "/findings")
    hstatus, hheaders, hbody = request(server, "HEAD", "/findings")
    assert (hstatus, hbody) == (status, b"")
    assert hheaders["content-length"] == headers["content-length"] == str(len(body))
    assert hheaders["content-type"] == "application/json"
    assert request(server, "HEAD", "/healthz")[0] == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_a_json_error(server: Running, method: str) -> None:
    status, headers, body = request(server, method, "/findings")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert method in json.loads(body)["error"]


def test_a_repeated_findings_parameter_is_400(server: Running) -> None:
    status, _, body = request(server, "GET", "/findings?severity=critical&severity=info")
    assert status == 400 and "'severity'" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/findings?id=rules.&id=rules.")
    assert status == 400 and "'id'" in json.loads(body)["error"]
    assert request(server, "GET", "/findings?severity=critical&id=rules.")[0] == 200


def test_each_body_is_rendered_once_per_report_and_variant(server: Running) -> None:
    def many(path: str, headers: dict[str, str] | None = None, n: int = 40) -> set[bytes]:
        bodies: list[bytes] = []
        threads = [threading.Thread(target=lambda: bodies.append(request(server, "GET", path, headers)[2]))
                   for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return set(bodies)

    def renders() -> dict[tuple[object, ...], int]:
        counts = server.call(lambda: dict(server.server.handler.cache.renders))  # type: ignore[attr-defined]
        return {k: n for k, n in counts.items() if k[0] == "findings"}

    (plain,) = many("/findings")
    assert renders() == {("findings",): 1}
    assert len(many("/findings", {"Accept-Encoding": "gzip"})) == 1
    assert renders() == {("findings",): 1, ("findings", "gzip"): 1}
    many("/findings?severity=critical", n=5)
    many("/findings?severity=critical", n=5)
    assert renders()[("findings", ("severity", "critical"))] == 1 and len(renders()) == 3

    server.publish(report_with(service_findings(2)))  # a new report: rendered anew, not served stale
    (fresh,) = many("/findings", n=5)
    assert len(json.loads(fresh)["findings"]) == 2 and len(json.loads(plain)["findings"]) == 300


def test_gzip_when_the_client_accepts_it(server: Running) -> None:
    _, _, plain = request(server, "GET", "/findings")
    status, headers, packed = request(server, "GET", "/findings", {"Accept-Encoding": "deflate, gzip;q=0.8"})
    assert (status, headers["content-encoding"], headers["vary"]) == (200, "gzip", "Accept-Encoding")
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) / 4
    _, headers, body = request(server, "GET", "/findings", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in headers and body == plain
    _, headers, metrics = request(server, "GET", "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and b"svcdoctor_findings{" in gzip.decompress(metrics)


def test_one_connection_carries_several_requests(server: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for path in ("/healthz", "/findings?severity=critical", "/metrics", "/nope", "/healthz"):
        conn.request("GET", path)
        res = conn.getresponse()
        res.read()
        assert res.status in (200, 404)
    assert server.call(lambda: server.server.open_connections) == 1
    conn.close()


def test_bad_request_line_is_400_and_an_oversized_head_431(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 40000 + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")


def test_a_slow_request_head_and_an_idle_connection_are_cut_off() -> None:
    srv = Running(limits=Limits(header_timeout_s=0.3, idle_timeout_s=0.3))
    try:
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line (slowloris)
        assert closed_by_server(slow)
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(1000).startswith(b"HTTP/1.1 200 ")
        assert closed_by_server(idle)  # kept alive, then closed when idle
        assert srv.call(lambda: srv.server.open_connections) == 0
        slow.close()
        idle.close()
    finally:
        srv.stop()


def test_at_the_cap_the_connection_waiting_longest_makes_room() -> None:
    srv = Running(limits=Limits(max_connections=20))
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=20) for _ in range(20)]
    try:
        for s in idle:  # wait until the server holds them all (one round trip each)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 200 ")
        assert srv.call(lambda: srv.server.open_connections) == 20
        status, _, body = request(srv, "GET", "/healthz")
        assert (status, body) == (200, b"starting\n")
        assert closed_by_server(idle[0])
        assert srv.call(lambda: srv.server.evicted) >= 1
    finally:
        for s in idle:
            s.close()
        srv.stop()


def test_a_thousand_idle_connections_do_not_keep_a_request_out(server: Running) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(1000)]
    try:
        idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the last one is served: all accepted
        assert idle[-1].recv(1000).startswith(b"HTTP/1.1 200 ")
        status, _, body = request(server, "GET", "/findings?severity=critical")
        assert status == 200 and len(json.loads(body)["findings"]) == 300
        assert server.call(lambda: server.server.open_connections) >= 1000
    finally:
        for s in idle:
            s.close()


def test_bodies_scrapers_asked_for_are_rendered_when_a_report_is_published(server: Running) -> None:
    def renders() -> int:  # renders of the whole /findings, plain and gzipped
        counts = server.call(lambda: dict(server.server.handler.cache.renders))  # type: ignore[attr-defined]
        return int(counts.get(("findings",), 0) + counts.get(("findings", "gzip"), 0))

    request(server, "GET", "/findings", {"Accept-Encoding": "gzip"})
    request(server, "GET", "/findings?severity=warning")  # a filtered variant: rendered on demand only
    before = renders()
    server.publish(report_with(service_findings(3)))
    deadline = time.monotonic() + 30
    while renders() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the pool renders in the background; bounded wait
    assert renders() == before + 2  # /findings and its gzip, with no request
    status, _, body = request(server, "GET", "/findings", {"Accept-Encoding": "gzip"})
    assert status == 200 and len(json.loads(gzip.decompress(body))["findings"]) == 3
    assert renders() == before + 2  # served from what was rendered ahead
