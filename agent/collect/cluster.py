"""The cluster state the node is compared with: a live list/watch of the API server
(agent/collect/kubeapi.py), or a `kubectl get services,endpointslices,nodes,pods -A -o json` file.

The runner gives this collector a provider; the collector only asks it for the current compact state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from agent.collect.base import Absent, CollectContext, CollectError
from agent.kubeobjects import state_from_items
from agent.model.cluster import ClusterState
from agent.serial import SchemaError, load_strict, to_jsonable


class ClusterProvider(Protocol):
    def state(self) -> ClusterState: ...


class FileProvider:
    """Cluster state from kubectl's JSON output: a support engineer can check a node with no API access."""

    def __init__(self, path: Path, node_name: str) -> None:
        self.path, self.node_name = path, node_name

    def state(self) -> ClusterState:
        try:
            text = self.path.read_text()
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise CollectError(f"cannot read cluster state {self.path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise CollectError(f"cluster state {self.path} is not text") from None
        try:
            raw = json.loads(text)
        except RecursionError:
            raise CollectError(f"cluster state {self.path} is nested too deeply to be kubectl output") from None
        except ValueError as exc:
            raise CollectError(f"cluster state {self.path} is not JSON: {exc}") from None
        problem = list_problem(raw)
        if problem:
            raise CollectError(f"cluster state {self.path} {problem}")
        items: list[dict[str, Any]] = raw["items"]
        try:
            state = state_from_items(items, self.node_name, f"file {self.path}", mtime)
        except (AttributeError, KeyError, TypeError, ValueError):  # a field of the wrong shape: say which object
            raise CollectError(f"cluster state {self.path} {_malformed(items, self.node_name)}") from None
        try:  # a field that loaded with the wrong type (a list where a name belongs) would crash a check later
            load_strict(ClusterState, to_jsonable(state), "state")
        except SchemaError as exc:
            raise CollectError(f"cluster state {self.path} has a field of the wrong type ({exc})") from None
        return state


def _malformed(items: list[dict[str, Any]], node_name: str) -> str:
    """Which object failed to load, found by loading them one at a time (only after a failure)."""
    for i, item in enumerate(items):
        try:
            state_from_items([item], node_name, "", 0.0)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            meta = item["metadata"]
            name = f"{meta['namespace']}/{meta['name']}" if isinstance(meta.get("namespace"), str) else meta["name"]
            return f"has a malformed {item['kind']} {name} (items[{i}]: {_shape_error(exc)})"
    return "has a malformed object"


HOW_TO_MAKE = "make it with `kubectl get services,endpointslices,nodes,pods -A -o json`"


def list_problem(raw: object) -> str | None:
    """Why a parsed file is not a cluster state svcdoctor can compare with, in words; None when it is.

    It must be kubectl's `List` holding Services and EndpointSlices: an empty list, objects without a
    kind, or Services alone would load "fine" and make every Service look like it has no endpoints.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        return f"is not a kubectl `List` (no items): {HOW_TO_MAKE}"
    if not str(raw.get("kind", "List")).endswith("List"):
        return f"is a {raw.get('kind')!r}, not a `List`: {HOW_TO_MAKE}"
    kinds: dict[str, int] = {}
    for i, item in enumerate(raw["items"]):
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
            return f"has an item without a kind (items[{i}]): {HOW_TO_MAKE}"
        meta = item.get("metadata")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return f"has a {item['kind']} without metadata.name (items[{i}])"
        for part in ("spec", "status"):
            if part in item and not isinstance(item[part], dict):
                return f"has a {item['kind']} whose {part} is not an object (items[{i}], {meta['name']})"
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    if not kinds.get("Service"):
        return f"holds no Services: {HOW_TO_MAKE}"
    if not kinds.get("EndpointSlice"):
        return f"holds Services but no EndpointSlices, so every Service would look empty: {HOW_TO_MAKE}"
    return None


def _shape_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def collect(ctx: CollectContext) -> ClusterState:
    if ctx.cluster is None:
        raise Absent("no cluster state configured (--cluster-state FILE, in-cluster config or --kubeconfig)")
    provider: ClusterProvider = ctx.cluster
    return provider.state()
