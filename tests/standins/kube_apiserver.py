"""Stand-in for kube-apiserver's list/watch protocol, on loopback, for the real `kubernetes` client.

It serves Services, EndpointSlices, Nodes and Pods as the real API does: paginated lists
(`limit`/`continue`, list resourceVersion), `fieldSelector` on metadata.name / spec.nodeName, and
watches (`watch=true&resourceVersion=N`) as chunked newline-delimited JSON events, with BOOKMARK events
when `allowWatchBookmarks=true`, an ERROR event with code 410 for a compacted resourceVersion, and a
clean end at `timeoutSeconds`. Tests drive it: apply/delete objects, compact history, drop every open
watch connection, stop and restart on the same port.

Where a list is served from decides what it costs a real API server, so it follows kube-apiserver's
rules and says in its request log (`log`) where each request went: `resourceVersion=0` is served whole
from the watch cache (`limit` ignored); a given resourceVersion without `limit` from the cache too ("not
older than"); no resourceVersion (a consistent read), a `limit` with a resourceVersion other than 0, or a
`continue` go to "etcd", paginated. `labelSelector` takes `k=v`, `k!=v`, `k` and `!k` terms, as
kube-proxy's and `svcdoctor explain`'s selectors need. Watches with `sendInitialEvents=true` are
streaming lists (KEP-3157): the current objects as ADDED, then a BOOKMARK annotated
`k8s.io/initial-events-end: "true"`, then the watch. `streaming` makes it answer such a request as a
server without them does: "gate-off" (422 Invalid, kube-apiserver 1.27+ with the WatchList feature gate
off: "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"), "old"
(422 Invalid, 1.19-1.26, which rejects `resourceVersionMatch` on a watch), "bad-request" (400, as
fakes and proxies in front of an API server answer) or "ignored" (a server that does not know either
parameter: a plain watch, whose resourceVersion ""/0 starts with the current objects as ADDED, and no
annotated bookmark). `throttle()` answers the next requests 429 with a Retry-After, as API priority and
fairness does. Every request is logged with its client (User-Agent), where it was served from, its
status and the body bytes sent (a watch's grow while it streams).
"""

from __future__ import annotations

import bisect
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
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
STREAMING_REFUSALS = {
    "gate-off": (422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: '
                 "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"),
    "old": (422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
            "resourceVersionMatch is forbidden for watch"),
    "bad-request": (400, "BadRequest", "sendInitialEvents is not supported"),
}


def label_match(labels: dict[str, str], selector: str | None) -> bool:
    """A labelSelector of `k=v`, `k==v`, `k!=v`, `k` and `!k` terms, comma-separated (all must hold)."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            k, _, v = term.partition("!=")
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, _, v = term.replace("==", "=").partition("=")
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeApiServer:
    def __init__(self, items: list[dict[str, Any]] | None = None) -> None:
        self.cond = threading.Condition()
        self.rv = 1
        self.compacted_rv = 0
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, object)
        self.drop_generation = 0
        self.requests: list[str] = []
        self.log: list[dict[str, Any]] = []  # one record per request: see the module docstring
        self.streaming = "on"  # or "gate-off", "old", "bad-request", "ignored"
        self.bookmark_every_s = BOOKMARK_EVERY_S
        self._throttles: list[list[Any]] = []  # [remaining, retry_after, path substring or None]
        self.watch_cache = True  # False: every list goes to etcd and pages by `limit` (--watch-cache=false)
        self.on_request: Callable[[dict[str, Any]], None] | None = None  # called with each new log record
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

    def throttle(self, times: int = 1, retry_after: str | None = "1", path_contains: str | None = None) -> None:
        """Answer the next `times` requests (whose path holds `path_contains`) 429 Too Many Requests."""
        with self.cond:
            self._throttles.append([times, retry_after, path_contains])

    def _throttled(self, path: str) -> tuple[bool, str | None]:
        with self.cond:
            for t in self._throttles:
                if t[0] > 0 and (t[2] is None or t[2] in path):
                    t[0] -= 1
                    return True, t[1]
        return False, None

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

    @property
    def reviews(self) -> Reviews:
        """TokenReview and SubjectAccessReview answers (for `serve --auth=kubernetes`), set by tests."""
        if not hasattr(self, "_reviews"):
            self._reviews = Reviews()
        return self._reviews

    # protocol ---------------------------------------------------------------------------------------
    @staticmethod
    def _selected(obj: dict[str, Any], selector: str | None, labels: str | None = None,
                  namespace: str | None = None) -> bool:
        meta = obj["metadata"]
        if namespace is not None and meta.get("namespace", "") != namespace:
            return False
        if not label_match(meta.get("labels") or {}, labels):
            return False
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

            rec: dict[str, Any]

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.rec.update(status=status, bytes=self.rec["bytes"] + len(data))

            def _status(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
                self.rec["served"] = "refused"
                self._json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                  "reason": reason, "message": message}, headers)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                api.requests.append(self.path)
                if any(route(self, url) for route in api.routes):
                    return
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self.rec = {"t": time.monotonic(), "agent": self.headers.get("User-Agent", ""), "path": url.path,
                            "query": q, "status": 0, "bytes": 0, "served": ""}
                with api.cond:
                    api.log.append(self.rec)
                if api.on_request is not None:
                    api.on_request(self.rec)
                path, namespace = url.path, None
                parts = path.split("/")
                if len(parts) == 7 and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "configmaps":
                    self._get_one(url.path)
                    return
                if len(parts) == 6 and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "pods":
                    path, namespace = "/api/v1/pods", parts[4]
                kind = PATHS.get(path)
                if kind is None:
                    self._status(404, "NotFound", f"{url.path} not found")
                    return
                throttled, retry_after = api._throttled(url.path)
                if throttled:
                    self._status(429, "TooManyRequests", "Too many requests, please try again later.",
                                 {"Retry-After": retry_after} if retry_after is not None else None)
                    return
                if q.get("watch") in ("true", "1"):
                    self._watch(kind, q, namespace)
                else:
                    self._list(kind, q, namespace)

            def _get_one(self, path: str) -> None:
                """GET /api/v1/namespaces/<ns>/configmaps/<name> (kube-proxy's ConfigMap)."""
                parts = path.split("/")  # "", api, v1, namespaces, ns, configmaps, name
                kinds = {"configmaps": "ConfigMap"}
                obj = None
                if len(parts) == 7 and parts[5] in kinds:
                    with api.cond:
                        obj = api.objects.get((kinds[parts[5]], parts[4], parts[6]))
                if obj is None:
                    self._json(404, {"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound"})
                else:
                    self._json(200, obj)

            def _list(self, kind: str, q: dict[str, str], namespace: str | None) -> None:
                limit = int(q.get("limit", "0") or 0)
                start, cont_rv = 0, None
                asked = q.get("resourceVersion", "")
                if q.get("continue"):
                    offset, _, rv = q["continue"].partition(":")
                    start, cont_rv = int(offset), int(rv)
                    if cont_rv < api.compacted_rv:
                        self._status(410, "Expired", "The provided continue parameter is too old")
                        return
                    self.rec["served"] = "etcd"
                elif not api.watch_cache:
                    self.rec["served"] = "etcd"
                elif asked == "0":
                    self.rec["served"], limit = "cache", 0  # the watch cache ignores limit
                elif asked and not limit:
                    self.rec["served"] = "cache"  # not older than `asked`
                    if int(asked) > api.rv:
                        self._status(504, "Timeout", f"Too large resource version: {asked}, current: {api.rv}")
                        return
                else:
                    self.rec["served"] = "etcd"
                    if asked and int(asked) < api.compacted_rv:
                        self._status(410, "Expired", f"too old resource version: {asked}")
                        return
                with api.cond:
                    objs = sorted((o for (k, _, _), o in api.objects.items() if k == kind),
                                  key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
                    rv = cont_rv or api.rv
                objs = [o for o in objs if api._selected(o, q.get("fieldSelector"), q.get("labelSelector"), namespace)]
                page = objs[start:start + limit] if limit else objs[start:]
                meta: dict[str, Any] = {"resourceVersion": str(rv)}
                if limit and start + limit < len(objs):
                    meta["continue"] = f"{start + limit}:{rv}"
                self._json(200, {"kind": f"{kind}List", "apiVersion": "v1", "metadata": meta, "items": page})

            def _chunk(self, obj: dict[str, Any]) -> None:
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                self.rec["bytes"] += len(data)

            def _watch(self, kind: str, q: dict[str, str], namespace: str | None) -> None:
                streaming = q.get("sendInitialEvents") == "true"
                if streaming and api.streaming in STREAMING_REFUSALS:
                    self._status(*STREAMING_REFUSALS[api.streaming])
                    return
                if streaming and api.streaming == "ignored":
                    streaming = False
                elif streaming and q.get("resourceVersionMatch") != "NotOlderThan":
                    self._status(422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: '
                                 "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")
                    return
                asked = q.get("resourceVersion") or ""
                since = int(asked or 0)
                # A watch from ""/0 (or a streaming list) starts with the current objects: the watch cache.
                initial = streaming or asked in ("", "0")
                self.rec["served"] = "stream" if streaming else "watch"
                deadline = time.monotonic() + float(q.get("timeoutSeconds", "1800"))
                bookmarks = q.get("allowWatchBookmarks") == "true"
                select = (q.get("fieldSelector"), q.get("labelSelector"), namespace)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.rec["status"] = 200
                generation = api.drop_generation
                try:
                    if initial:
                        with api.cond:
                            since = api.rv
                            objs = [o for (k, _, _), o in api.objects.items() if k == kind]
                        for obj in objs:
                            if api._selected(obj, *select):
                                self._chunk({"type": "ADDED", "object": obj})
                        if streaming:
                            self._chunk({"type": "BOOKMARK", "object": {
                                "kind": kind, "apiVersion": "v1", "metadata": {
                                    "resourceVersion": str(since), "annotations": {INITIAL_EVENTS_END: "true"}}}})
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
                            first = bisect.bisect_right(api.events, since, key=lambda e: e[0])
                            pending = [(rv, t, o) for rv, t, o in api.events[first:] if o["kind"] == kind]
                            if not pending:
                                api.cond.wait(0.05)
                            current = api.rv
                        for rv, etype, obj in pending:
                            if api._selected(obj, *select):
                                self._chunk({"type": etype, "object": obj})
                            since = rv
                        if bookmarks and time.monotonic() - last_bookmark > api.bookmark_every_s:
                            self._chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1",
                                         "metadata": {"resourceVersion": str(current)}}})
                            since = max(since, current)
                            last_bookmark = time.monotonic()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    return

            def do_POST(self) -> None:
                api.requests.append(self.path)
                self.rec = {"t": time.monotonic(), "agent": self.headers.get("User-Agent", ""), "path": self.path,
                            "query": {}, "status": 0, "bytes": 0, "served": "reviews"}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = api.reviews.answer(self.path, body, self.headers.get("Authorization", ""))
                self._json(status, answer)

        return Handler


class Reviews:
    """kube-apiserver's TokenReview and SubjectAccessReview for tokens and RBAC grants a test sets.

    A token names a user and groups; a grant lets a user or `group:<name>` use a verb on a
    non-resource URL (exact, or a prefix ending in `*`, as RBAC matches nonResourceURLs). Every review
    is logged with the reviewer's own Authorization header (the agent's credentials)."""

    TOKEN = "/apis/authentication.k8s.io/v1/tokenreviews"
    ACCESS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, dict[str, Any]] = {}
        self.grants: set[tuple[str, str, str]] = set()
        self.log: list[tuple[str, dict[str, Any], str]] = []  # (kind, spec, reviewer's Authorization)
        self.failing = False  # answer 500, as an overloaded API server would

    def token(self, token: str, username: str, groups: tuple[str, ...] = ()) -> None:
        self.users[token] = {"username": username, "uid": f"uid-{username}", "groups": list(groups)}

    def grant(self, who: str, path: str, verb: str = "get") -> None:
        self.grants.add((who, path, verb))

    def calls(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _, _ in self.log if k == kind)

    def _allowed(self, spec: dict[str, Any]) -> bool:
        attrs = spec.get("nonResourceAttributes") or {}
        subjects = {spec.get("user", "")} | {f"group:{g}" for g in spec.get("groups") or []}
        return any(who in subjects and verb == attrs.get("verb") and
                   (path == attrs.get("path") or (path.endswith("*") and str(attrs.get("path")).startswith(path[:-1])))
                   for who, path, verb in self.grants)

    def answer(self, path: str, body: bytes, reviewer: str) -> tuple[int, dict[str, Any]]:
        doc = json.loads(body or b"{}")
        spec = doc.get("spec") or {}
        kind = {self.TOKEN: "TokenReview", self.ACCESS: "SubjectAccessReview"}.get(path)
        if kind is None:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        with self.lock:
            self.log.append((kind, spec, reviewer))
        if self.failing:
            return 500, {"kind": "Status", "code": 500, "reason": "InternalError"}
        if kind == "TokenReview":
            user = self.users.get(spec.get("token", ""))
            status: dict[str, Any] = {"authenticated": True, "user": user} if user else {
                "authenticated": False, "error": "invalid bearer token"}
        else:
            status = {"allowed": self._allowed(spec)}
        return 201, {**doc, "status": status}


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
