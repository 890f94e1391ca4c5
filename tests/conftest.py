from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import Node, require_netns


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A fresh node in its own network namespace, always deleted afterwards."""
    require_netns()
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.destroy()
