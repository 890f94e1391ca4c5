"""The human report for `svcdoctor check`: grouped by severity, colour only on a terminal."""

from __future__ import annotations

import json
from collections.abc import Iterator

from agent.model import SEVERITIES, Finding, Snapshot
from agent.model.report import Report

_COLOURS = {"critical": "\033[1;31m", "warning": "\033[33m", "info": "\033[36m"}
_RESET = "\033[0m"
FOLD_AT = 3  # info findings of one id beyond this many are one line with a count (--all lists them)
HOW_TO_COMPARE = ("give `--cluster-state FILE` (`kubectl get services,endpointslices,nodes,pods -A -o json`), "
                  "`--kubeconfig FILE`, or run in a pod with a ServiceAccount")


def render(report: Report, colour: bool = False, all_findings: bool = False) -> str:
    snap = report.snapshot
    lines = [f"svcdoctor {snap.agent_version} on node {snap.node}: proxy mode {report.proxy_mode or 'unknown'}"]
    failed = [s for s in snap.sources() if not s.ok]
    lines.append(f"sources: {len(snap.sources()) - len(failed)} read, {len(failed)} failed"
                 + (f" ({', '.join(s.name for s in failed)})" if failed else ""))
    scope = comparison_scope(snap)
    if scope:
        lines.append(scope)
    for sev in SEVERITIES:
        group = [f for f in report.findings if f.severity == sev]
        if not group:
            continue
        head = f"{sev.upper()} ({len(group)})"
        lines += ["", f"{_COLOURS[sev]}{head}{_RESET}" if colour else head]
        if sev == "info" and not all_findings:
            lines += _folded(group)
            continue
        for f in group:
            lines.append(f"  [{f.id}] {_about(f)}")
            if sev != "info":
                lines.append(f"      remedy: {f.remedy}")
                lines.append(f"      evidence: {json.dumps(f.evidence, sort_keys=True, default=str)[:400]}")
    problems = sum(1 for f in report.findings if f.severity != "info")
    lines += ["", "healthy: no warning or critical findings" if not problems else f"{problems} problem(s) found"]
    return "\n".join(lines) + "\n"


def _about(f: Finding) -> str:
    """The finding's message, led by its subject unless the message already names it first."""
    return f.message if f.message.startswith(f.subject) else f"{f.subject}: {f.message}"


def _folded(group: list[Finding]) -> Iterator[str]:
    """Info findings one line each, but a long run of one id as a count: 200 "has no endpoints" lines
    would drown the findings that matter."""
    by_id: dict[str, list[Finding]] = {}
    for f in group:
        by_id.setdefault(f.id, []).append(f)
    for fid, same in by_id.items():
        if len(same) <= FOLD_AT:
            yield from (f"  [{fid}] {_about(f)}" for f in same)
            continue
        subjects = ", ".join(f.subject for f in same[:FOLD_AT])
        yield f"  [{fid}] {len(same)} findings: {same[0].title} ({subjects}, ...; `--all` lists them)"


def comparison_scope(snap: Snapshot) -> str | None:
    """Say plainly when rules were not compared with the API, and how to make them so."""
    src = snap.cluster
    if src.ok and src.data is not None and src.data.comparable:
        return None
    if src.ok and src.absent:
        why, fix = "no API server or cluster state was given", f"to compare them, {HOW_TO_COMPARE}"
    elif not src.ok:
        why, fix = "the cluster state could not be read", "see agent.source_failed"
    elif src.data is not None and src.data.node is None:
        why, fix = f"the cluster state has no Node named {snap.node}", "see api.node_not_found"
    else:
        why, fix = "the API server's last state is too old to compare with", "see api.unreachable"
    return f"note: rules were checked for structure only, not against Services and EndpointSlices ({why}); {fix}."
