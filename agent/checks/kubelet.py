"""Is kubelet running, and could its settings be read (hairpin checks build on them)."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot


def check(snap: Snapshot) -> Iterator[Finding]:
    src = snap.kubelet
    if not src.ok:
        return
    if src.data is None:
        yield finding("kubelet.not_running", snap.node, evidence={"note": src.note or ""})
        return
    if src.data.config_error:
        yield finding("kubelet.config_unreadable", snap.node,
                      evidence={"path": src.data.config_path, "error": src.data.config_error})
