"""The result of one run: what the reporters render (text, JSON document, metrics, HTTP)."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    # True: made by served(), the snapshot holds no parsed rules (its checks were run before)
    served: bool = False

    def as_served(self) -> Report:
        """This report as `serve` keeps it until the next run's is published: the findings, the views, every
        source's status and data, but of the iptables rules only each table's rule count (the reporters and
        /explain read the views). A whole read of the rules (about 20 MiB at 10k Services) must not stay alive
        while the next read builds its own: the reader lets its last read go when the rules changed, the
        runner keeps only the views (which name their RuleSets by weak reference), and this is the rest."""
        snap = self.snapshot
        if self.served or snap.iptables.data is None:
            return replace(self, served=True)
        iptables = replace(snap.iptables, data=snap.iptables.data.rule_counts())
        return replace(self, snapshot=replace(snap, iptables=iptables), served=True)
