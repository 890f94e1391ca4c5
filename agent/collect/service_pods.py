"""A Service's pods, read on demand for `svcdoctor explain` (the agent's informers keep only this node's).

Namespace-scoped, by the Service's label selector (agent/collect/kubeapi.py `pods_matching`: one list
from the watch cache); when nothing matches, one page of the namespace's pods instead, so the walk can
say which labels differ. Bounded: one request each, with a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.collect.base import CollectError
from agent.kubeobjects import compact_pod, pods_from_items
from agent.model.cluster import PodSpec

PAGE = 500
PodsSource = Callable[[str, str], list[PodSpec]]  # (namespace, selector string) -> pods


def api_pods(api_client: Any, timeout_s: float = 10.0) -> PodsSource:
    from kubernetes import client

    from agent.collect.kubeapi import pods_matching

    core: Any = client.CoreV1Api(api_client)  # raw JSON (_preload_content=False), not the typed models

    def near_misses(namespace: str) -> list[PodSpec]:
        # Only when the selector matched nothing: one page, so a namespace of 10k pods costs 500.
        resp = core.list_namespaced_pod(namespace, limit=PAGE, _preload_content=False, _request_timeout=timeout_s)
        return [compact_pod(o) for o in json.loads(resp.data).get("items") or []]

    def fetch(namespace: str, selector: str) -> list[PodSpec]:
        try:
            pods: list[PodSpec] = pods_matching(api_client, namespace, selector, timeout_s=timeout_s)
            return pods or near_misses(namespace)
        except Exception as exc:  # the client raises ApiException, urllib3 errors, OSError
            raise CollectError(f"cannot list pods in {namespace}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc

    return fetch


def file_pods(path: Path) -> PodsSource:
    """Pods from a `kubectl get services,endpointslices,nodes,pods -A -o json` file."""

    def fetch(namespace: str, selector: str) -> list[PodSpec]:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CollectError(f"cannot read cluster state {path}: {exc}") from exc
        return pods_from_items(raw.get("items") or [] if isinstance(raw, dict) else [], namespace)

    return fetch


def pods_source_for(provider: Any) -> PodsSource | None:
    """The pods source that goes with a cluster provider: the same file, or the same API client."""
    from agent.collect.cluster import FileProvider

    if isinstance(provider, FileProvider):
        return file_pods(provider.path)
    api_client = getattr(provider, "api_client", None)
    return api_pods(api_client) if api_client is not None else None
