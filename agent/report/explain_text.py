"""The human form of `svcdoctor explain`: the guide's numbered walk, the first problem highlighted with its
remedy and evidence; and the `--all-nodes` comparison. Colour only on a terminal."""

from __future__ import annotations

import json
from typing import Any

from agent.explain.model import PROBLEM, Explanation

_BOLD_RED, _GREY, _GREEN, _RESET = "\033[1;31m", "\033[2m", "\033[32m", "\033[0m"
WIDTH = 8


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{_RESET}" if colour else text


def render(expl: Explanation, colour: bool = False) -> str:
    first = expl.first_problem
    lines = [f"svcdoctor explain {expl.query} on node {expl.node} (cluster state: {expl.cluster_origin})", ""]
    for number, s in enumerate(expl.steps, 1):
        is_first = s is first
        label = s.status.upper() if is_first else s.status
        mark = ">" if is_first else " "
        head = f"{mark}{number:2d}. {label:<{WIDTH}} {s.title}"
        code = _BOLD_RED if is_first else (_GREEN if s.status == "ok" else _GREY if s.status == "skipped" else "")
        lines.append(_paint(head, code, colour) if code else head)
        lines.append(f"     {'':<{WIDTH}} {s.summary}")
        if s.status == PROBLEM and len(s.findings) > 1:
            lines.append(f"     {'':<{WIDTH}} also: " + "; ".join(f"[{f.id}] {f.subject}" for f in s.findings[1:4]))
        if is_first and s.findings:
            f = s.findings[0]
            lines.append(f"     {'':<{WIDTH}} finding: {f.id} ({f.severity})")
            lines.append(f"     {'':<{WIDTH}} remedy: {f.remedy}")
            lines.append(f"     {'':<{WIDTH}} evidence: {json.dumps(f.evidence, sort_keys=True, default=str)[:600]}")
    lines.append("")
    if first is None:
        lines.append("Every step passed" + (" (some were skipped: see why above)."
                                              if any(s.status == "skipped" for s in expl.steps) else "."))
    else:
        n = sum(1 for s in expl.steps if s.status == PROBLEM)
        lines.append(f"First problem: step {expl.steps.index(first) + 1}, {first.title} "
                     f"({n} step(s) found problems).")
    return "\n".join(lines) + "\n"


def render_nodes(doc: dict[str, Any], colour: bool = False) -> str:
    lines = [f"svcdoctor explain {doc['service']} on {len(doc['nodes'])} node(s)", ""]
    for n in doc["nodes"]:
        if n["error"]:
            lines.append(f"  {n['node']:<24} could not ask: {n['error']}")
            continue
        first = n["first_problem"]
        expl = n["explanation"] or {}
        title = next((s["title"] for s in expl.get("steps", []) if s["id"] == first), "")
        text = "ok" if n["result"] == "ok" else f"problem at {first}: {title}"
        lines.append(f"  {n['node']:<24} " + (_paint(text, _BOLD_RED, colour) if n["result"] != "ok" and colour
                                              else text))
    lines.append("")
    if not doc["differences"]:
        lines.append("Every node that answered sees the same.")
    else:
        lines.append("Steps that differ between nodes:")
        for d in doc["differences"]:
            by_status: dict[str, list[str]] = {}
            for node, status in d["statuses"].items():
                by_status.setdefault(status, []).append(node)
            lines.append(f"  {d['title']} ({d['step']}): " + "; ".join(
                f"{status} on {', '.join(nodes)}" for status, nodes in sorted(by_status.items())))
    return "\n".join(lines) + "\n"
