"""Snapshot data for the ipvs source (filled by agent/collect/ipvs.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IpvsState:
    """Placeholder until the ipvs source is built; plain dataclass fields only (JSON round-trip)."""
