"""The finding catalogue: severity, title, message template and remedy per stable id.

Checks name an id and give structured evidence; the words come from here, so a check holds no prose
and an operator can re-grade an id (`--severity ID=LEVEL`) without a code change.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from agent.model import SEVERITIES, Finding, Severity


@dataclass(frozen=True)
class Entry:
    id: str
    severity: Severity
    title: str
    message: str
    remedy: str
    retired: bool = False
    # Compares reads taken at different instants (rules against the API, iptables against ipsets), so a
    # sync between them can show a difference for one run: reported only when the previous run of a
    # series found it too (agent/runner.py). Every rules.* id, and any entry with `persist = true`.
    persist: bool = False
    # evidence that describes the moment rather than the difference (a set's member count, the chain's rules
    # as they are now): left out when two runs' differences are compared, so it cannot hold a finding back
    persist_context: tuple[str, ...] = ()

    @property
    def doc(self) -> str:
        return "docs/runbooks.md#" + self.id.replace(".", "")


class UnknownFinding(KeyError):
    pass


@cache
def load() -> dict[str, Entry]:
    raw = tomllib.loads(resources.files("agent").joinpath("catalogue.toml").read_text())
    entries: dict[str, Entry] = {}
    for area, ids in raw.items():
        for cond, e in ids.items():
            fid = f"{area}.{cond}"
            if e["severity"] not in SEVERITIES:
                raise ValueError(f"catalogue: {fid} has unknown severity {e['severity']!r}")
            entries[fid] = Entry(fid, e["severity"], e["title"], e["message"], e["remedy"],
                                 bool(e.get("retired", False)), bool(e.get("persist", area == "rules")),
                                 tuple(e.get("persist_context", ())))
    return entries


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def finding(
    fid: str,
    subject: str,
    *,
    service: str | None = None,
    evidence: dict[str, Any] | None = None,
    severity: Severity | None = None,
) -> Finding:
    """Build a finding from the catalogue. Raises on an unknown or retired id, or a message field
    the evidence does not provide: both are bugs a test must catch, not text to ship."""
    entry = load().get(fid)
    if entry is None or entry.retired:
        raise UnknownFinding(fid)
    ev = dict(evidence or {})
    values = {"subject": subject, "service": service, **ev}
    return Finding(
        id=fid,
        severity=severity or entry.severity,
        subject=subject,
        service=service,
        title=entry.title,
        message=entry.message.format_map(values),
        remedy=entry.remedy,
        evidence=ev,
        doc=entry.doc,
    )
