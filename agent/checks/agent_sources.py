"""agent.source_failed: one finding per source that could not be read, saying what went unchecked."""

from __future__ import annotations

from collections.abc import Iterator

from agent.catalogue import finding
from agent.model import Finding, Snapshot


def check(snap: Snapshot) -> Iterator[Finding]:
    for src in snap.sources():
        if not src.ok:
            yield finding("agent.source_failed", src.name,
                          evidence={"source": src.name, "error": src.error or "unknown error"})
