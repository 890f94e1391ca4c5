"""`serve --auth=kubernetes` against the stand-in API server (it stands in for kube-apiserver's
TokenReview and SubjectAccessReview, with RBAC grants on non-resource URLs set by the test)."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.harness import Running, config, report_with
from tests.standins.kube_apiserver import FakeApiServer

PROM = "prometheus-token"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    fake.start()
    fake.reviews.token(PROM, "system:serviceaccount:monitoring:prometheus-k8s",
                       ("system:serviceaccounts", "system:serviceaccounts:monitoring"))
    fake.reviews.token("nobody-token", "system:serviceaccount:default:default", ("system:serviceaccounts",))
    fake.reviews.grant("system:serviceaccount:monitoring:prometheus-k8s", "/metrics")
    fake.reviews.grant("group:system:serviceaccounts:monitoring", "/findings")
    yield fake
    fake.stop()


@pytest.fixture
def server(api: FakeApiServer, tmp_path: Path) -> Iterator[Running]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    srv = Running(config(auth="kubernetes", kubeconfig=kubeconfig))
    srv.publish(report_with([]))
    yield srv
    srv.stop()


def get(srv: Running, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    res = conn.getresponse()
    out = res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    conn.close()
    return out


def test_granted_token_reads_findings_and_metrics_and_healthz_stays_open(server: Running, api: FakeApiServer) -> None:
    assert get(server, "/metrics", PROM)[0] == 200
    status, _, body = get(server, "/findings", PROM)
    assert status == 200 and json.loads(body)["schema"] == "svcdoctor/v1"
    assert get(server, "/healthz")[0] == 200  # the kubelet's probe has no token
    kinds = [(kind, spec) for kind, spec, _ in api.reviews.log]
    assert kinds[0] == ("TokenReview", {"token": PROM})
    sar = kinds[1][1]
    assert sar["user"] == "system:serviceaccount:monitoring:prometheus-k8s"
    assert sar["nonResourceAttributes"] == {"path": "/metrics", "verb": "get"}
    assert "system:serviceaccounts:monitoring" in sar["groups"] and sar["uid"]
    assert {reviewer for _, _, reviewer in api.reviews.log} == {"Bearer test-token"}  # the agent's credentials


def test_no_token_is_401_a_bad_token_401_an_ungranted_user_403(server: Running, api: FakeApiServer) -> None:
    status, headers, body = get(server, "/findings")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert "bearer token" in json.loads(body)["error"]
    assert api.reviews.log == []  # no token: nothing to ask
    assert get(server, "/metrics", "forged")[0] == 401
    status, _, body = get(server, "/findings", "nobody-token")
    assert status == 403 and "system:serviceaccount:default:default may not get /findings" in json.loads(body)["error"]
    assert get(server, "/metrics", "nobody-token")[0] == 403


def test_answers_are_cached_both_ways(server: Running, api: FakeApiServer) -> None:
    for _ in range(5):
        assert get(server, "/metrics", PROM)[0] == 200
        assert get(server, "/findings", "nobody-token")[0] == 403
    assert api.reviews.calls("TokenReview") == 2 and api.reviews.calls("SubjectAccessReview") == 2


def test_concurrent_scrapes_with_one_token_ask_once(server: Running, api: FakeApiServer) -> None:
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(get(server, "/findings", PROM)[0]))
               for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 30
    assert api.reviews.calls("TokenReview") == 1


def test_an_api_server_that_cannot_answer_is_503_and_not_cached(server: Running, api: FakeApiServer) -> None:
    api.reviews.failing = True
    status, _, body = get(server, "/metrics", PROM)
    assert status == 503 and "HTTP 500" in json.loads(body)["error"]
    api.reviews.failing = False
    assert get(server, "/metrics", PROM)[0] == 200


def test_default_is_no_auth(api: FakeApiServer) -> None:
    srv = Running()
    srv.publish(report_with([]))
    try:
        assert get(srv, "/findings")[0] == 200 and get(srv, "/metrics")[0] == 200
    finally:
        srv.stop()
