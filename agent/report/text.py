"""The human report for `svcdoctor check`: grouped by severity, colour only on a terminal."""

from __future__ import annotations

import json

from agent.model import SEVERITIES
from agent.model.report import Report

_COLOURS = {"critical": "\033[1;31m", "warning": "\033[33m", "info": "\033[36m"}
_RESET = "\033[0m"


def render(report: Report, colour: bool = False) -> str:
    snap = report.snapshot
    lines = [f"svcdoctor {snap.agent_version} on node {snap.node}: proxy mode {report.proxy_mode or 'unknown'}"]
    failed = [s for s in snap.sources() if not s.ok]
    lines.append(f"sources: {len(snap.sources()) - len(failed)} read, {len(failed)} failed"
                 + (f" ({', '.join(s.name for s in failed)})" if failed else ""))
    for sev in SEVERITIES:
        group = [f for f in report.findings if f.severity == sev]
        if not group:
            continue
        head = f"{sev.upper()} ({len(group)})"
        lines += ["", f"{_COLOURS[sev]}{head}{_RESET}" if colour else head]
        for f in group:
            lines.append(f"  [{f.id}] {f.subject}: {f.message}")
            if sev != "info":
                lines.append(f"      remedy: {f.remedy}")
                lines.append(f"      evidence: {json.dumps(f.evidence, sort_keys=True, default=str)[:400]}")
    problems = sum(1 for f in report.findings if f.severity != "info")
    lines += ["", "healthy: no warning or critical findings" if not problems else f"{problems} problem(s) found"]
    return "\n".join(lines) + "\n"
