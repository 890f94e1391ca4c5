"""api.unreachable: the API server could not be reached; say what that leaves unchecked."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.cluster
    if not src.ok or src.data is None or src.data.api_error is None:
        return
    state = src.data
    consequence = (f"Service rules are compared with the last state it sent, {state.stale_seconds:.0f}s old"
                   if state.usable else "Service rules are not compared with the API on this node")
    yield finding("api.unreachable", snap.node, evidence={
        "error": state.api_error, "origin": state.origin, "stale_seconds": round(state.stale_seconds, 1),
        "consequence": consequence})
