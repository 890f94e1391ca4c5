"""The cluster state the node is compared with: a live list/watch of the API server
(agent/collect/kubeapi.py), or a `kubectl get services,endpointslices,nodes,pods -A -o json` file.

The runner gives this collector a provider; the collector only asks it for the current compact state.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

from agent.collect.base import Absent, CollectContext, CollectError
from agent.kubeobjects import state_from_items
from agent.model.cluster import ClusterState


class ClusterProvider(Protocol):
    def state(self) -> ClusterState: ...


class FileProvider:
    """Cluster state from kubectl's JSON output: a support engineer can check a node with no API access."""

    def __init__(self, path: Path, node_name: str) -> None:
        self.path, self.node_name = path, node_name

    def state(self) -> ClusterState:
        try:
            raw = json.loads(self.path.read_text())
        except OSError as exc:
            raise CollectError(f"cannot read cluster state {self.path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise CollectError(f"cluster state {self.path} is not JSON: {exc}") from exc
        items = raw.get("items") if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise CollectError(f"cluster state {self.path} is not a kubectl `List` (no items)")
        return state_from_items(items, self.node_name, f"file {self.path}", self.path.stat().st_mtime
                                if self.path.exists() else time.time())


def collect(ctx: CollectContext) -> ClusterState:
    if ctx.cluster is None:
        raise Absent("no cluster state configured (--cluster-state FILE, in-cluster config or --kubeconfig)")
    provider: ClusterProvider = ctx.cluster
    return provider.state()
