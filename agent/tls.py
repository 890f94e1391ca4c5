"""TLS for `svcdoctor serve`, with the certificate and key reloaded when their files change.

cert-manager and kubelet rotate a mounted Secret by replacing the files; the agent must pick the new
pair up without a restart. The listening context's SNI callback (which OpenSSL calls for every
ClientHello, with or without a server name) hands each new handshake the current context; the files
are looked at (mtime, size, inode) at most every `check_every_s`. A pair that does not load (half
written, key not matching) is logged and the previous one stays in use.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path

log = logging.getLogger("svcdoctor.tls")
CHECK_EVERY_S = 5.0  # how often a handshake may stat the two files


class TlsError(Exception):
    pass


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load TLS certificate {cert} and key {key}: {exc}") from None
    return ctx


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class ReloadingTls:
    """`context` is what the server listens with; every handshake gets the latest good pair."""

    def __init__(self, cert: Path, key: Path, check_every_s: float | None = None) -> None:
        self.cert, self.key = cert, key
        self.check_every_s = CHECK_EVERY_S if check_every_s is None else check_every_s
        self._lock = threading.Lock()
        self._stamp = _stamp(cert, key)
        self._current = _context(cert, key)  # a bad pair at start is a start error (TlsError)
        self._checked = time.monotonic()
        self.reloads = 0
        self.context = _context(cert, key)
        self.context.sni_callback = self._on_hello

    def current(self) -> ssl.SSLContext:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self.check_every_s:
                self._checked = now
                stamp = _stamp(self.cert, self.key)
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._current = _context(self.cert, self.key)
                        self.reloads += 1
                        log.info("TLS certificate %s reloaded", self.cert)
                    except TlsError as exc:
                        log.error("%s; still serving the previous certificate", exc)
            return self._current

    def _on_hello(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                  ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current()
