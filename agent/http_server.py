"""HTTP/1.1 for `svcdoctor serve`: one asyncio loop holds every connection; a small pool of worker
threads does the blocking work (rendering a report, asking the API server about a token).

Why not `http.server`: it spends a thread per connection and has no read timeout, so 4,000 idle
connections held 4,000 threads and a 3.2 MB document rendered per request took 792 MB at 300
concurrent scrapes. Here a connection costs a few KiB while it waits; each phase has a deadline
(TLS handshake, request head, keep-alive idle, writing the response), so a slowloris client is cut
off; the number of open connections is capped, and at the cap the connection that has waited longest
for its request is closed to make room, so 1,000 idle connections cannot keep a scrape out. A body is
written from the cached bytes in slices (memoryview, no copy) with flow control, so 1,000 clients
reading one 3.2 MB document cost 1,000 x the transport's 64 KiB buffer at most, not 1,000 copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

log = logging.getLogger("svcdoctor.http")
WRITE_SLICE = 64 * 1024


class StartError(Exception):
    """The server cannot start as configured: one line for the operator, exit code 2."""


class PortInUse(StartError):
    pass


@dataclass(frozen=True)
class Limits:
    max_connections: int = 2048
    header_timeout_s: float = 10.0  # a new connection's first request head (and a TLS handshake)
    idle_timeout_s: float = 60.0  # between requests on a kept-alive connection (Prometheus scrapes every 15-60 s)
    write_timeout_s: float = 60.0  # the whole response: a client that stops reading is cut off
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    workers: int = 4


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    peer: str = ""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes, max_headers: int) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers of one request head (up to and including the blank line)."""
    text = head.decode("latin-1").lstrip("\r\n")  # RFC 9112 2.2: ignore empty lines before the request
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in (ln for ln in lines[1:] if ln):
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if len(headers) > max_headers:
            raise BadRequest(431, "too many header fields")
    return parts[0], parts[1], parts[2], headers


def response_head(resp: Response, length: int, keep_alive: bool) -> bytes:
    reason = HTTPStatus(resp.status).phrase
    lines = [f"HTTP/1.1 {resp.status} {reason}", "Server: svcdoctor", f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {resp.content_type}", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    requests: int = 0


@dataclass
class HttpServer:
    """Serves `handler` on already bound, listening sockets until `close()`."""

    handler: Handler
    sockets: list[socket.socket]
    limits: Limits = field(default_factory=Limits)
    tls: ssl.SSLContext | None = None
    on_start: Callable[[], None] | None = None  # called on the event loop once the server listens
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _open: set[_Conn] = field(default_factory=set)
    _waiting: dict[_Conn, None] = field(default_factory=dict)  # waiting for a request head, oldest first
    refused: int = 0  # connections closed at the cap with nobody to evict
    evicted: int = 0  # waiting connections closed to make room

    async def start(self) -> None:
        for sock in self.sockets:
            self._servers.append(await asyncio.start_server(
                self._connected, sock=sock, limit=self.limits.max_head_bytes, ssl=self.tls,
                ssl_handshake_timeout=self.limits.header_timeout_s if self.tls else None,
                backlog=4096))  # the kernel caps it at net.core.somaxconn
        if self.on_start is not None:
            self.on_start()

    async def serve_forever(self) -> None:
        await self.start()
        await asyncio.gather(*(s.serve_forever() for s in self._servers))

    def close(self) -> None:
        for s in self._servers:
            s.close()
        for conn in list(self._open):
            conn.writer.transport.abort()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # connections ----------------------------------------------------------------------------------
    def _admit(self, conn: _Conn) -> bool:
        if len(self._open) >= self.limits.max_connections:
            if not self._waiting:
                self.refused += 1
                return False
            oldest = next(iter(self._waiting))
            self._waiting.pop(oldest)
            oldest.writer.transport.abort()
            self.evicted += 1
        self._open.add(conn)
        return True

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        if not self._admit(conn):
            with contextlib.suppress(OSError):
                writer.write(response_head(Response(503), 0, keep_alive=False))
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()
            return
        peer = writer.get_extra_info("peername")
        try:
            while await self._one_request(conn, reader, str(peer[0]) if peer else ""):
                conn.requests += 1
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
            pass  # the client went away, or was too slow: nothing to answer
        finally:
            self._waiting.pop(conn, None)
            self._open.discard(conn)
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()

    async def _one_request(self, conn: _Conn, reader: asyncio.StreamReader, peer: str) -> bool:
        """Read, answer and write one request; True if the connection stays open for another."""
        self._waiting[conn] = None
        wait_s = self.limits.idle_timeout_s if conn.requests else self.limits.header_timeout_s
        try:
            async with asyncio.timeout(wait_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._write(conn, "GET", Response(431, b"request head too large\n", close=True), False)
            return False
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._write(conn, "GET", Response(400, b"incomplete request head\n", close=True), False)
            return False
        finally:
            self._waiting.pop(conn, None)
        try:
            method, target, version, headers = parse_head(head, self.limits.max_headers)
        except BadRequest as exc:
            await self._write(conn, "GET", Response(exc.status, f"{exc}\n".encode(), close=True), False)
            return False
        keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if "content-length" in headers or "transfer-encoding" in headers:
            keep_alive = False  # a body we do not read: the connection cannot carry another request
        try:
            resp = await self.handler(Request(method, target, headers, peer))
        except Exception:
            log.exception("request %s %s failed", method, target)
            resp = Response(500, b"internal error\n", close=True)
        keep_alive = keep_alive and not resp.close
        await self._write(conn, method, resp, keep_alive)
        return keep_alive

    async def _write(self, conn: _Conn, method: str, resp: Response, keep_alive: bool) -> None:
        writer = conn.writer
        body = b"" if method == "HEAD" else resp.body
        async with asyncio.timeout(self.limits.write_timeout_s):
            writer.write(response_head(resp, len(resp.body), keep_alive))
            view = memoryview(body)
            for start in range(0, len(view), WRITE_SLICE):
                writer.write(view[start:start + WRITE_SLICE])
                await writer.drain()
            await writer.drain()


# binding --------------------------------------------------------------------------------------------

def bind(listen: str, port: int) -> list[socket.socket]:
    """Listening sockets for `--listen`: an IPv4 or IPv6 address (`::` is dual-stack where the kernel
    allows it), or a host name bound on every address it resolves to. Errors are one line."""
    host = listen.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "::" and socket.has_dualstack_ipv6():
        addrs: list[tuple[int, tuple[str, int]]] = [(socket.AF_INET6, ("::", port))]
    else:
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            raise StartError(f"--listen {listen!r} is neither an IP address nor a host name that resolves "
                             f"({exc})") from None
        addrs = list(dict.fromkeys((int(fam), (str(sa[0]), port)) for fam, _, _, _, sa in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addrs:
            sockets.append(_listen_socket(family, address, dualstack=address[0] == "::", listen=listen, port=port))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def _listen_socket(family: int, address: tuple[str, int], *, dualstack: bool, listen: str, port: int
                   ) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(address)
        sock.listen(4096)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {listen or '*'} is already in use (node_exporter often holds 9100): "
                "choose another with --port or the SVCDOCTOR_PORT environment variable") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartError(f"--listen {listen!r}: {address[0]} is not an address of this host") from None
        raise StartError(f"cannot listen on {address[0]} port {port}: {exc.strerror or exc}") from None
    return sock
