"""An unreachable API server is said once, in words (issue 14): not urllib3's nested repr per resource."""

from __future__ import annotations

import socket

import pytest
import urllib3

from agent.collect.kubeapi import describe, fold_errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_a_refused_connection_reads_as_one_clause() -> None:
    port = _closed_port()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as exc:
        urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/api", retries=urllib3.Retry(0))
    assert describe(exc.value) == f"connection refused (127.0.0.1:{port})"


def test_an_http_error_reads_as_its_status() -> None:
    from kubernetes.client.exceptions import ApiException

    assert describe(ApiException(status=403, reason="Forbidden")) == "HTTP 403 Forbidden"


def test_one_cause_for_every_resource_is_said_once() -> None:
    errors = ["services: connection refused (10.96.0.1:443)", "endpointslices: connection refused (10.96.0.1:443)",
              "node: HTTP 403 Forbidden"]
    assert fold_errors(errors) == ("services, endpointslices: connection refused (10.96.0.1:443); "
                                   "node: HTTP 403 Forbidden")
    assert fold_errors([]) is None
