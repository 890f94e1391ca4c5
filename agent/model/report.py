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
        source's status and data, but of the iptables rules only each table's rule count and of kube-proxy's
        nftables tables only their chain counts (the reporters and /explain read the views). A whole read of
        the rules (about 20 MiB at 10k Services) must not stay alive while the next read builds its own: the
        readers let their last read go when the rules changed, the runner keeps only the views (which name
        the rules by weak reference), and this is the rest."""
        snap = self.snapshot
        if self.served:
            return self
        ipt, nft = snap.iptables, snap.nftables
        snap = replace(snap, iptables=ipt if ipt.data is None else replace(ipt, data=ipt.data.rule_counts()),
                       nftables=nft if nft.data is None else replace(nft, data=nft.data.counts_only()))
        return replace(self, snapshot=snap, served=True)
