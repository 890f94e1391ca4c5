"""Load test of `svcdoctor serve`'s HTTP server (issue 15.6), on loopback, bounded, stops by itself.

A server process serves a synthetic Report of N findings (4,000: a 3.2 MB /findings document) and a
client process (this one, asyncio, one connection per request) measures:

  - burst: C connections opened, then all send `GET /findings` at once; latency from sending the
    request to its last byte, errors, and the server's peak RSS. Three rounds with gzip accepted (as
    Prometheus and `curl --compressed` ask; round 1 is the first request after the server started,
    so it waits for the render) and one without.
  - idle: I connections opened and left idle, then 20 ordinary requests one after another
    (`/healthz`, `/metrics`, `/findings`, gzip accepted): their latency.

The same runs against the bare tool: the standard library's ThreadingHTTPServer (a thread per
connection, no timeouts, no cap) writing the same pre-rendered bytes, which is the floor of what
serving those bytes from Python costs, without svcdoctor's rendering cache or limits.

    python bench/bench_http.py                      # 4000 findings, 1000 concurrent, 1000 idle
    python bench/bench_http.py --findings 1000 --concurrency 300 --idle 300

Every phase has a deadline; the server exits when this process closes its stdin or after 15 min.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERVER_LIFETIME_S = 900
PHASE_DEADLINE_S = 300


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# server side (a child process) ---------------------------------------------------------------------

def run_server(kind: str, findings: int) -> None:
    raise_fd_limit()
    from tests.http.harness import Running, report_with, service_findings

    report = report_with(service_findings(findings))
    if kind == "svcdoctor":
        srv = Running()
        srv.publish(report)
        port = srv.port
    else:
        port = bare_server(report)
    print(port, flush=True)
    stopper = threading.Timer(SERVER_LIFETIME_S, lambda: os._exit(0))
    stopper.daemon = True
    stopper.start()
    sys.stdin.read()  # the parent closes stdin (or dies): stop
    os._exit(0)


def bare_server(report: Any) -> int:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from agent.report.document import document

    plain = (json.dumps(document(report), indent=1) + "\n").encode()
    packed = gzip.compress(plain, 6, mtime=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            gz = "gzip" in self.headers.get("Accept-Encoding", "") and self.path == "/findings"
            body = packed if gz else plain if self.path == "/findings" else b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if gz:
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 4096

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


# client side ----------------------------------------------------------------------------------------

async def fetch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, gz: bool
                ) -> tuple[int, int]:
    """One request on an open connection: (status, body bytes)."""
    extra = "Accept-Encoding: gzip\r\n" if gz else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:"))
    remaining = length
    while remaining:  # read and drop: the client must not hold 1,000 copies itself
        chunk = await reader.read(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("closed mid-body")
        remaining -= len(chunk)
    return status, length


async def burst(port: int, concurrency: int, gz: bool) -> dict[str, Any]:
    conns = []
    for _ in range(concurrency):
        conns.append(await asyncio.open_connection("127.0.0.1", port, limit=1 << 20))
    go = asyncio.Event()
    latencies: list[float] = []
    errors: list[str] = []
    sizes: set[int] = set()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        t0 = time.perf_counter()
        try:
            status, size = await fetch(reader, writer, "/findings", gz)
            if status != 200:
                errors.append(f"HTTP {status}")
            sizes.add(size)
            latencies.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(r, w)) for r, w in conns]
    t0 = time.perf_counter()
    go.set()
    async with asyncio.timeout(PHASE_DEADLINE_S):
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"ok": len(latencies), "errors": len(errors), "first_errors": sorted(set(errors))[:3],
            "p50": quantile(latencies, 0.5), "p99": quantile(latencies, 0.99), "max": latencies[-1] if latencies else 0,
            "wall": wall, "bytes": max(sizes) if sizes else 0}


async def idle_then_requests(port: int, idle: int) -> dict[str, Any]:
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(idle)]
    latencies: list[float] = []
    errors = 0
    async with asyncio.timeout(PHASE_DEADLINE_S):
        for i in range(20):
            path = ("/healthz", "/metrics", "/findings")[i % 3]
            t0 = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                status, _ = await fetch(reader, writer, path, gz=True)
                writer.close()
                errors += status != 200
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - t0)
    for _, w in held:
        w.close()
    return {"idle": idle, "median": statistics.median(latencies), "max": max(latencies), "errors": errors}


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def peak_rss_mib(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {ln.split(":")[0]: ln.split()[1] for ln in status.splitlines() if ln.startswith(("VmHWM", "VmRSS"))}
    return int(fields["VmHWM"]) / 1024, int(fields["VmRSS"]) / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far: what serving cost, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--findings", str(args.findings)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        base = peak_rss_mib(proc.pid)[1]
        rows = []
        for label, gz in (("gzip, first after start", True), ("gzip, 2", True), ("gzip, 3", True),
                          ("identity", False)):
            cpu0 = cpu_s(proc.pid)
            res = asyncio.run(burst(port, args.concurrency, gz))
            rows.append({"server": kind, "run": f"{args.concurrency} x /findings, {label}", **res,
                         "cpu": cpu_s(proc.pid) - cpu0, "rss_peak": peak_rss_mib(proc.pid)[0], "rss_start": base})
        cpu0 = cpu_s(proc.pid)
        res = asyncio.run(idle_then_requests(port, args.idle))
        rows.append({"server": kind, "run": f"{args.idle} idle + 20 requests", **res, "cpu": cpu_s(proc.pid) - cpu0,
                     "rss_peak": peak_rss_mib(proc.pid)[0], "rss_start": base})
        return rows
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--findings", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--serve", choices=("svcdoctor", "bare"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        run_server(args.serve, args.findings)
        return
    raise_fd_limit()
    load_before = f"{os.getloadavg()[0]:.1f}"
    rows = measure("svcdoctor", args) + measure("bare", args)
    bare = {r["run"]: r for r in rows if r["server"] == "bare"}
    print(f"load average before: {load_before}, after: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print("| server | run | body (bytes) | errors | p50 (s) | p99 (s) | max (s) | p99 / bare | server CPU (s) | "
          "CPU / bare | server RSS start -> peak (MiB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        b = bare.get(r["run"], {})
        cpu_ratio = r["cpu"] / b["cpu"] if b.get("cpu") else float("nan")
        if "p99" in r:
            ratio = r["p99"] / b["p99"] if b.get("p99") else float("nan")
            print(f"| {r['server']} | {r['run']} | {r['bytes']:,} | {r['errors']} | {r['p50']:.3f} | {r['p99']:.3f} "
                  f"| {r['max']:.3f} | {ratio:.2f} | {r['cpu']:.2f} | {cpu_ratio:.2f} "
                  f"| {r['rss_start']:.0f} -> {r['rss_peak']:.0f} |")
        else:
            ratio = r["max"] / b["max"] if b.get("max") else float("nan")
            print(f"| {r['server']} | {r['run']} | | {r['errors']} | {r['median']:.3f} | | {r['max']:.3f} "
                  f"| {ratio:.2f} (max) | {r['cpu']:.2f} | {cpu_ratio:.2f} "
                  f"| {r['rss_start']:.0f} -> {r['rss_peak']:.0f} |")
    for r in rows:
        if r.get("first_errors"):
            print(f"{r['server']} {r['run']}: {r['first_errors']}", file=sys.stderr)


if __name__ == "__main__":
    main()
