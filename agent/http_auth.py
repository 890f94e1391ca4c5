"""`--auth=kubernetes`: who may read /findings and /metrics, decided the way kube-rbac-proxy does.

A request carries a bearer token (Prometheus sends its service account's). The API server says whose
it is (TokenReview), then whether that user may `get` the non-resource URL (SubjectAccessReview, path
`/findings` or `/metrics`), so access is granted with ordinary RBAC:

    rules: [{nonResourceURLs: ["/metrics", "/findings"], verbs: ["get"]}]

Answers are cached briefly, both ways (a scrape every 15 s must not cost two API calls; a revoked grant
or a wrong token is honoured within `allow_ttl_s` / `deny_ttl_s`), in a bounded cache keyed by a hash
of the token, never the token itself. An API server that cannot be asked is nobody's answer: the
request gets 503 and nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

TOKEN_REVIEW = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEW = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass(frozen=True)
class Decision:
    status: int  # 200 allowed, 401 no or bad token, 403 not allowed, 503 could not ask
    reason: str
    user: str = ""


class ApiUnavailable(Exception):
    pass


class TtlCache:
    """At most `max_entries` answers, each good for its own time to live; thread-safe."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()

    def get(self, key: tuple[str, ...], now: float) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[str, ...], value: Any, ttl_s: float, now: float) -> None:
        with self._lock:
            self._items[key] = (now + ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class KubernetesAuth:
    """TokenReview + SubjectAccessReview through the `kubernetes` client's ApiClient (raw JSON)."""

    def __init__(self, api_client: Any, *, allow_ttl_s: float = 60.0, deny_ttl_s: float = 10.0,
                 max_entries: int = 1024, timeout_s: float = 5.0) -> None:
        self.api = api_client
        self.allow_ttl_s, self.deny_ttl_s, self.timeout_s = allow_ttl_s, deny_ttl_s, timeout_s
        self.cache = TtlCache(max_entries)
        self.api_calls = 0

    def cached(self, authorization: str | None, path: str) -> Decision | None:
        """The answer if it needs no API call (no token, or cached); None otherwise."""
        token = bearer_token(authorization)
        if token is None:
            return Decision(401, "a bearer token is required (Authorization: Bearer <token>)")
        hit: Decision | None = self.cache.get((_digest(token), path), time.monotonic())
        return hit

    def decide(self, authorization: str | None, path: str) -> Decision:
        """Blocking: may ask the API server twice. Run it off the event loop."""
        early = self.cached(authorization, path)
        if early is not None:
            return early
        token = bearer_token(authorization)
        assert token is not None  # cached() answered 401 otherwise
        try:
            decision = self._ask(token, path)
        except ApiUnavailable as exc:
            return Decision(503, f"cannot check the token with the API server: {exc}")
        ttl = self.allow_ttl_s if decision.status == 200 else self.deny_ttl_s
        self.cache.put((_digest(token), path), decision, ttl, time.monotonic())
        return decision

    def _ask(self, token: str, path: str) -> Decision:
        review = self._post(TOKEN_REVIEW, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                           "spec": {"token": token}})
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return Decision(401, "the token was not accepted by the API server")
        user = status.get("user") or {}
        name = str(user.get("username", ""))
        spec: dict[str, Any] = {"user": name, "groups": user.get("groups") or [],
                                "nonResourceAttributes": {"path": path, "verb": "get"}}
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        access = self._post(ACCESS_REVIEW, {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                            "spec": spec})
        if not (access.get("status") or {}).get("allowed"):
            return Decision(403, f"{name} may not get {path}", name)
        return Decision(200, "allowed", name)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.api_calls += 1
        try:
            method, url, headers, data, _ = self.api.param_serialize(
                "POST", path, header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, headers, data, _request_timeout=self.timeout_s)
            raw = resp.read()
        except Exception as exc:  # urllib3's errors, timeouts, TLS: the API server could not be asked
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise ApiUnavailable(f"{type(exc).__name__}: {first[:200]}") from None
        if not 200 <= resp.status < 300:
            raise ApiUnavailable(f"{path} answered HTTP {resp.status}")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiUnavailable(f"{path} answered something that is not JSON") from None
        if not isinstance(doc, dict):
            raise ApiUnavailable(f"{path} answered JSON that is not an object")
        return doc


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
