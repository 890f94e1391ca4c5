"""The result of one run: what the reporters render (text, JSON document, metrics, HTTP)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import Finding, Snapshot
from agent.model.views import Views

# A rules.* difference as the next run compares it: (id, subject, evidence as sorted JSON)
DiffKey = tuple[str, str, str]


@dataclass(frozen=True)
class Report:
    """One immutable result. Replaced whole, never mutated."""

    snapshot: Snapshot
    findings: tuple[Finding, ...]
    proxy_mode: str | None
    generated_at: float
    check_duration_s: float = 0.0
    views: Views | None = None  # None only for a Report made by hand (tests)
    # every rules.* difference this run found, reported or not: the next run's `previous` (agent/runner.py)
    rule_differences: frozenset[DiffKey] = frozenset()
