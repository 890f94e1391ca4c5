"""Stand-in for kube-apiserver's list/watch protocol, on loopback, for the real `kubernetes` client.

It serves Services, EndpointSlices, Nodes and Pods as the real API does: paginated lists
(`limit`/`continue`, list resourceVersion), `fieldSelector` on metadata.name / spec.nodeName, and
watches (`watch=true&resourceVersion=N`) as chunked newline-delimited JSON events, with BOOKMARK events
when `allowWatchBookmarks=true`, an ERROR event with code 410 for a compacted resourceVersion, and a
clean end at `timeoutSeconds`. Tests drive it: apply/delete objects, compact history, drop every open
watch connection, stop and restart on the same port.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

PATHS = {
    "/api/v1/services": "Service",
    "/apis/discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "/api/v1/nodes": "Node",
    "/api/v1/pods": "Pod",
}
BOOKMARK_EVERY_S = 0.2


class FakeApiServer:
    def __init__(self, items: list[dict[str, Any]] | None = None) -> None:
        self.cond = threading.Condition()
        self.rv = 1
        self.compacted_rv = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, object)
        self.drop_generation = 0
        self.requests: list[str] = []
        for obj in items or []:
            self.apply(obj)
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        # Self-contained extra handlers (see the end of this file): each takes (handler, url) and returns
        # True when it answered the request.
        self.routes: list[Callable[[BaseHTTPRequestHandler, SplitResult], bool]] = []

    # test controls --------------------------------------------------------------------------------
    def _key(self, obj: dict[str, Any]) -> tuple[str, str, str]:
        m = obj["metadata"]
        return (obj["kind"], m.get("namespace", ""), m["name"])

    def apply(self, obj: dict[str, Any]) -> int:
        with self.cond:
            obj = copy.deepcopy(obj)
            self.rv += 1
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
            key = self._key(obj)
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            self.events.append((self.rv, kind, obj))
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, namespace: str, name: str) -> None:
        with self.cond:
            obj = self.objects.pop((kind, namespace, name))
            self.rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            self.events.append((self.rv, "DELETED", obj))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget history: every watch from an older resourceVersion gets 410 Gone."""
        with self.cond:
            self.rv += 1  # a write elsewhere, then etcd compacts up to it: every older revision is gone
            self.compacted_rv = self.rv
            self.events.clear()
            self.cond.notify_all()

    def drop_watches(self) -> None:
        """Cut every open watch connection without a goodbye (a load balancer idling it out)."""
        with self.cond:
            self.drop_generation += 1
            self.cond.notify_all()

    def start(self, port: int = 0) -> int:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            self.drop_watches()

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        })

    # protocol ---------------------------------------------------------------------------------------
    @staticmethod
    def _selected(obj: dict[str, Any], selector: str | None) -> bool:
        if not selector:
            return True
        field, _, value = selector.partition("=")
        if field == "metadata.name":
            return bool(obj["metadata"].get("name") == value)
        if field == "spec.nodeName":
            return bool(obj.get("spec", {}).get("nodeName") == value)
        raise ValueError(f"unsupported field selector {selector}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                api.requests.append(self.path)
                if any(route(self, url) for route in api.routes):
                    return
                kind = PATHS.get(url.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                if kind is None:
                    self._json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                if q.get("watch") in ("true", "1"):
                    self._watch(kind, q)
                else:
                    self._list(kind, q)

            def _list(self, kind: str, q: dict[str, str]) -> None:
                limit = int(q.get("limit", "0") or 0)
                start, cont_rv = 0, None
                if q.get("continue"):
                    offset, _, rv = q["continue"].partition(":")
                    start, cont_rv = int(offset), int(rv)
                    if cont_rv < api.compacted_rv:
                        self._json(410, {"kind": "Status", "code": 410, "reason": "Expired",
                                         "message": "The provided continue parameter is too old"})
                        return
                with api.cond:
                    objs = sorted((o for (k, _, _), o in api.objects.items() if k == kind),
                                  key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
                    rv = cont_rv or api.rv
                objs = [o for o in objs if api._selected(o, q.get("fieldSelector"))]
                page = objs[start:start + limit] if limit else objs[start:]
                meta: dict[str, Any] = {"resourceVersion": str(rv)}
                if limit and start + limit < len(objs):
                    meta["continue"] = f"{start + limit}:{rv}"
                self._json(200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": page})

            def _chunk(self, obj: dict[str, Any]) -> None:
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self, kind: str, q: dict[str, str]) -> None:
                since = int(q.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(q.get("timeoutSeconds", "1800"))
                bookmarks = q.get("allowWatchBookmarks") == "true"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                generation = api.drop_generation
                try:
                    if since < api.compacted_rv:
                        self._chunk({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "code": 410,
                                     "reason": "Expired", "message": f"too old resource version: {since}"}})
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    last_bookmark = time.monotonic()
                    while time.monotonic() < deadline:
                        with api.cond:
                            if api.drop_generation != generation:
                                self.connection.shutdown(socket.SHUT_RDWR)  # abrupt: no final chunk
                                return
                            pending = [(rv, t, o) for rv, t, o in api.events if rv > since and o["kind"] == kind]
                            if not pending:
                                api.cond.wait(0.05)
                            current = api.rv
                        for rv, etype, obj in pending:
                            if api._selected(obj, q.get("fieldSelector")):
                                self._chunk({"type": etype, "object": obj})
                            since = rv
                        if bookmarks and time.monotonic() - last_bookmark > BOOKMARK_EVERY_S:
                            self._chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1",
                                         "metadata": {"resourceVersion": str(current)}}})
                            since = max(since, current)
                            last_bookmark = time.monotonic()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

        return Handler


# Pod proxy and namespaced pod lists (for `svcdoctor explain --all-nodes`) --------------------------------

def _send_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _labels_match(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (part.split("=", 1) for part in (selector or "").split(",") if part))


def namespaced_pods(api: FakeApiServer) -> Callable[[BaseHTTPRequestHandler, SplitResult], bool]:
    """GET /api/v1/namespaces/NS/pods?labelSelector=k=v,... (equality selectors only), one page."""

    def route(handler: BaseHTTPRequestHandler, url: SplitResult) -> bool:
        parts = url.path.strip("/").split("/")
        if len(parts) != 5 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
            return False
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with api.cond:
            pods = [o for (k, ns, _), o in sorted(api.objects.items()) if k == "Pod" and ns == parts[3]]
            rv = api.rv
        items = [o for o in pods if _labels_match(o, q.get("labelSelector"))]
        _send_json(handler, 200, json.dumps({"kind": "PodList", "apiVersion": "v1",
                                             "metadata": {"resourceVersion": str(rv)}, "items": items}).encode())
        return True

    return route


def pod_proxy(api: FakeApiServer, seen_auth: list[str]) -> Callable[[BaseHTTPRequestHandler, SplitResult], bool]:
    """GET /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH?QUERY, forwarded to the pod's status.podIP as the
    real API server does (an unreachable pod is a 503 Status). Records each caller's Authorization header."""
    import http.client

    def route(handler: BaseHTTPRequestHandler, url: SplitResult) -> bool:
        parts = url.path.strip("/").split("/", 7)
        if len(parts) < 7 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods" or parts[6] != "proxy":
            return False
        seen_auth.append(handler.headers.get("Authorization", ""))
        name, _, port = parts[5].partition(":")
        with api.cond:
            pod = api.objects.get(("Pod", parts[3], name))
        if pod is None:
            _send_json(handler, 404, json.dumps({"kind": "Status", "code": 404, "reason": "NotFound"}).encode())
            return True
        target = "/" + (parts[7] if len(parts) > 7 else "") + (f"?{url.query}" if url.query else "")
        try:
            conn = http.client.HTTPConnection(pod["status"]["podIP"], int(port or 80), timeout=30)
            conn.request("GET", target)
            resp = conn.getresponse()
            body, status = resp.read(), resp.status
            conn.close()
        except OSError as exc:
            body = json.dumps({"kind": "Status", "code": 503, "message": f"error trying to reach service: {exc}"})
            _send_json(handler, 503, body.encode())
            return True
        _send_json(handler, status, body)
        return True

    return route
