"""The API side itself: the API server could not be reached, or it does not know this node."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.cluster
    if not src.ok or src.data is None:
        return
    state = src.data
    if state.usable and state.node is None:
        yield finding("api.node_not_found", snap.node, evidence={
            "node": snap.node, "origin": state.origin, "nodes": state.node_names,
            "names": ", ".join(state.node_names) or "no Node at all"})
    if state.api_error is None:
        return
    consequence = (f"Service rules are compared with the last state it sent, {state.stale_seconds:.0f}s old"
                   if state.usable else "Service rules are not compared with the API on this node")
    yield finding("api.unreachable", snap.node, evidence={
        "error": state.api_error, "origin": state.origin, "stale_seconds": round(state.stale_seconds, 1),
        "consequence": consequence})
