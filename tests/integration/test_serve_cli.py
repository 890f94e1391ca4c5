"""`svcdoctor serve` flags in a node's netns: --listen (IPv6, dual-stack, host names, bad values),
positive durations, TLS flags. A bad value is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.testbed import PY, REPO, STANDINS, Node


def serve_on(node: Node, *args: str, port: int = 9100) -> subprocess.Popen[str]:
    proc = subprocess.Popen(node.argv(PY, "-m", "agent", "serve", "--node-name", "test-node", "--no-api",
                                      "--port", str(port), *args),
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    node.procs.append(proc)
    return proc


def answers(node: Node, url: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    """GET `url` from inside the netns once the server is up (bounded wait for its start)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        res = node.sh(PY, str(STANDINS / "http_get.py"), url, check=False)
        if res.returncode == 0:
            out: dict[str, object] = json.loads(res.stdout)[0]
            return out
        time.sleep(0.1)  # waiting for the port to open, bounded by the deadline
    raise AssertionError(f"nothing answered on {url}")


def test_listen_on_ipv6_loopback(node: Node) -> None:
    proc = serve_on(node, "--listen", "::1")
    assert answers(node, "http://[::1]:9100/healthz", proc)["status"] == 200
    res = node.sh(PY, str(STANDINS / "http_get.py"), "http://127.0.0.1:9100/healthz", check=False)
    assert res.returncode != 0  # bound to ::1 only


def test_listen_on_the_ipv6_wildcard_is_dual_stack(node: Node) -> None:
    proc = serve_on(node, "--listen", "::")
    assert answers(node, "http://[::1]:9100/healthz", proc)["status"] == 200
    assert answers(node, "http://127.0.0.1:9100/healthz", proc)["status"] == 200


def test_listen_on_a_host_name(node: Node) -> None:
    proc = serve_on(node, "--listen", "localhost")
    assert answers(node, "http://127.0.0.1:9100/healthz", proc)["status"] == 200


@pytest.mark.parametrize(("args", "words"), [
    (["--listen", "192.0.2.1"], "not an address of this host"),
    (["--listen", "2001:db8::1"], "not an address of this host"),
    (["--listen", "300.1.2.3"], "neither an IP address nor a host name"),
    (["--listen", "no-such-host.invalid"], "neither an IP address nor a host name"),
    (["--interval", "0"], "must be positive"),
    (["--interval=-5"], "must be positive"),
    (["--source-timeout", "0s"], "must be positive"),
    (["--tls-cert-file", "/nonexistent.crt"], "both --tls-cert-file and --tls-key-file"),
    (["--tls-cert-file", "/nonexistent.crt", "--tls-key-file", "/nonexistent.key"], "cannot load TLS"),
    (["--auth", "oidc"], "invalid choice"),
])
def test_bad_serve_settings_are_one_line_and_exit_2(node: Node, args: list[str], words: str) -> None:
    res = node.svcdoctor("serve", "--no-api", "--port", "9100", *args, timeout=60)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr
    assert "Traceback" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ("svcdoctor" in ln and "error" in ln.lower())
                or ln.startswith("svcdoctor:")]) == 1


def test_bad_interval_from_the_environment_is_one_line(node: Node) -> None:
    res = subprocess.run(["ip", "netns", "exec", node.name, "env", "SVCDOCTOR_INTERVAL=soon", PY, "-m", "agent",
                          "serve", "--no-api"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2 and "not a duration: 'soon'" in res.stderr and "Traceback" not in res.stderr
