"""Snapshot data for the cni source (filled by agent/collect/cni.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CniState:
    """Placeholder until the cni source is built; plain dataclass fields only (JSON round-trip)."""
