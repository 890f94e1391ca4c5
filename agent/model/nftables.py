"""Snapshot data for the nftables source (filled by agent/collect/nftables.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NftablesState:
    """Placeholder until the nftables source is built; plain dataclass fields only (JSON round-trip)."""
