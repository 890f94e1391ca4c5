"""Snapshot data for the iptables source (filled by agent/collect/iptables.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IptablesState:
    """Placeholder until the iptables source is built; plain dataclass fields only (JSON round-trip)."""
