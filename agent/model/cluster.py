"""Snapshot data for the cluster source (filled by agent/collect/cluster.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusterState:
    """Placeholder until the cluster source is built; plain dataclass fields only (JSON round-trip)."""
