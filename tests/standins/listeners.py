"""Real listeners for explain's tests, run inside a pod's netns: an application on a TCP port, and a
small DNS server answering A/AAAA for a table of cluster names (NXDOMAIN otherwise), as CoreDNS would.

    python listeners.py tcp 0.0.0.0 8080
    python listeners.py dns 0.0.0.0 53 '{"web.default.svc.cluster.local": ["10.96.0.20"]}'

Prints "ready" once listening; serves until killed. The DNS server counts the queries it answered in
a file given with --count (for tests that assert how many probes arrived).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.dnswire import answer


def tcp(host: str, port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(128)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=lambda c=conn: (c.recv(1024), c.close()), daemon=True).start()


def dns(host: str, port: int, table: dict[str, list[str]], count: Path | None) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((host, port))
    print("ready", flush=True)
    served = 0
    while True:
        data, peer = srv.recvfrom(4096)
        try:
            srv.sendto(answer(data, {k.lower(): v for k, v in table.items()}), peer)
        except Exception:  # a malformed query: a real server would answer FORMERR; drop it
            continue
        served += 1
        if count is not None:
            count.write_text(str(served))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["tcp", "dns"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("table", nargs="?", default="{}")
    p.add_argument("--count", type=Path)
    a = p.parse_args()
    if a.kind == "tcp":
        tcp(a.host, a.port)
    else:
        dns(a.host, a.port, json.loads(a.table), a.count)


if __name__ == "__main__":
    main()
