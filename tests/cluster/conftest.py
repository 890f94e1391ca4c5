"""The stand-in API server (it stands in for kube-apiserver: tests/standins/kube_apiserver.py), loaded with
the Overall fixture's cluster state, started and stopped around each test that asks for `api`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.test_kubeapi import items
from tests.standins.kube_apiserver import FakeApiServer


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer(items())
    server.start()
    yield server
    server.stop()
