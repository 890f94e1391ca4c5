from __future__ import annotations

from agent.checks import CHECKS
from agent.config import Config
from agent.model import Finding, Snapshot
from agent.runner import Report, Runner


def run_checks(snap: Snapshot) -> list[Finding]:
    report: Report = Runner(Config(node_name=snap.node), collectors=(), checks=CHECKS).check(snap)
    return list(report.findings)


def found(snap: Snapshot, *, severities: tuple[str, ...] = ("critical", "warning")) -> set[tuple[str, str]]:
    return {(f.id, f.service or f.subject) for f in run_checks(snap) if f.severity in severities}
