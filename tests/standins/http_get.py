"""Test client run inside a node's netns: GET each URL `--concurrency` times at once, print JSON results.

Output: [{"url", "status", "body"}...] for a single request, or {"ok": n, "failed": n, "errors": [...]}
with --concurrency > 1 (every request opened at the same moment, released by a barrier).
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.request


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("urls", nargs="+")
    p.add_argument("--concurrency", type=int, default=1)
    a = p.parse_args()
    if a.concurrency == 1:
        out = []
        for u in a.urls:
            status, body = get(u)
            out.append({"url": u, "status": status, "body": body})
        print(json.dumps(out))
        return
    barrier = threading.Barrier(a.concurrency)
    results: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        url = a.urls[i % len(a.urls)]
        barrier.wait()
        try:
            status, _ = get(url)
            res = "ok" if status == 200 else f"HTTP {status}"
        except Exception as exc:
            res = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(res)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = results.count("ok")
    print(json.dumps({"ok": ok, "failed": len(results) - ok, "errors": sorted(set(results) - {"ok"})[:5]}))


if __name__ == "__main__":
    main()
