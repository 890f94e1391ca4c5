"""`serve --tls-cert-file/--tls-key-file`: HTTPS only, and a replaced certificate is picked up."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.tls
from agent.http_server import StartError
from agent.serve import State, build_server
from tests.http.harness import Running, config, report_with
from tests.testbed import require_tool


def make_cert(directory: Path, cn: str) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 made by openssl."""
    require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def install(src: tuple[Path, Path], dest: tuple[Path, Path]) -> None:
    """Replace the served pair as kubelet updates a mounted Secret: new files moved into place."""
    for s, d in zip(src, dest, strict=True):
        shutil.copy(s, d.with_suffix(".new"))
        os.replace(d.with_suffix(".new"), d)


def served_cn(port: int, trust: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(trust))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    conn.request("GET", "/findings")
    res = conn.getresponse()
    assert res.status == 200
    res.read()
    assert conn.sock is not None
    cert = conn.sock.getpeercert()
    conn.close()
    return dict(x[0] for x in cert["subject"])["commonName"]  # type: ignore[index, arg-type]


@pytest.fixture
def pairs(tmp_path: Path) -> Iterator[dict[str, tuple[Path, Path]]]:
    yield {name: make_cert(tmp_path / name, name) for name in ("one", "two", "three")}


def test_https_serves_and_picks_up_a_replaced_certificate(tmp_path: Path, pairs: dict[str, tuple[Path, Path]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent.tls, "CHECK_EVERY_S", 0.0)  # look at the files on every handshake
    live = (tmp_path / "tls.crt", tmp_path / "tls.key")
    install(pairs["one"], live)
    srv = Running(config(tls_cert_file=live[0], tls_key_file=live[1]))
    srv.publish(report_with([]))
    try:
        assert served_cn(srv.port, pairs["one"][0]) == "one"
        plain = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        with pytest.raises((http.client.HTTPException, ConnectionError)):  # no plain HTTP on a TLS port
            plain.request("GET", "/findings")
            plain.getresponse()
        install(pairs["two"], live)
        assert served_cn(srv.port, pairs["two"][0]) == "two"
        # half a rotation (new certificate, old key) does not load: the last good pair stays in use
        shutil.copy(pairs["three"][0], live[0])
        assert served_cn(srv.port, pairs["two"][0]) == "two"
    finally:
        srv.stop()


def test_unloadable_or_half_tls_configuration_is_a_start_error(tmp_path: Path,
                                                               pairs: dict[str, tuple[Path, Path]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        for cfg, words in ((config(tls_cert_file=pairs["one"][0]), "both"),
                           (config(tls_cert_file=tmp_path / "none.crt", tls_key_file=pairs["one"][1]), "none.crt"),
                           (config(tls_cert_file=pairs["one"][0], tls_key_file=pairs["two"][1]), "cannot load")):
            with pytest.raises(StartError, match=words):
                build_server(State(), cfg, pool)
