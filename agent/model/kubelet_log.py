"""Snapshot data for the kubelet_log source: the line where kubelet states its effective hairpin mode."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class KubeletLog:
    file: str  # the host path that was read
    line: str | None = None  # the last line stating the effective hairpin mode (the latest kubelet start)
    mode: str | None = None  # the mode that line states
