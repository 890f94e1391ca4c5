"""`svcdoctor explain --json` and `GET /explain`: the Explanation as a document (schema
docs/explain.schema.json, `svcdoctor-explain/v1`), and the cross-node comparison of `--all-nodes`."""

from __future__ import annotations

from typing import Any

from agent.explain.model import SCHEMA, Explanation
from agent.report.document import rfc3339
from agent.serial import to_jsonable

NODES_SCHEMA = "svcdoctor-explain-nodes/v1"


def explain_document(expl: Explanation) -> dict[str, Any]:
    first = expl.first_problem
    steps = []
    for number, s in enumerate(expl.steps, 1):
        steps.append({
            "number": number, "id": s.id, "title": s.title, "status": s.status, "symptom": s.symptom,
            "summary": s.summary, "evidence": to_jsonable(s.evidence),
            "findings": [to_jsonable(f) for f in s.findings],
            "remedy": s.findings[0].remedy if s is first and s.findings else None,
        })
    return {
        "schema": SCHEMA,
        "service": f"{expl.query.namespace}/{expl.query.name}",
        "port": expl.query.port,
        "node": expl.node,
        "generated_at": rfc3339(expl.generated_at),
        "cluster": expl.cluster_origin,
        "result": "ok" if expl.healthy else "problem",
        "first_problem": first.id if first is not None else None,
        "steps": steps,
    }


def differences(per_node: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps whose status is not the same on every node that answered: {step, title, statuses}."""
    answered = {n: d for n, d in per_node.items() if d.get("steps")}
    out = []
    ids: list[str] = []
    for doc in answered.values():
        ids += [s["id"] for s in doc["steps"] if s["id"] not in ids]
    for sid in ids:
        statuses = {n: next((s["status"] for s in d["steps"] if s["id"] == sid), "missing")
                    for n, d in sorted(answered.items())}
        if len(set(statuses.values())) > 1:
            title = next(s["title"] for d in answered.values() for s in d["steps"] if s["id"] == sid)
            out.append({"step": sid, "title": title, "statuses": statuses})
    return out


def nodes_document(service: str, agents: list[dict[str, Any]]) -> dict[str, Any]:
    """agents: [{"node", "pod", "explanation": doc | None, "error": str | None}]"""
    per_node = {a["node"]: a["explanation"] for a in agents if a.get("explanation")}
    return {
        "schema": NODES_SCHEMA,
        "service": service,
        "nodes": [{"node": a["node"], "pod": a["pod"], "error": a.get("error"),
                   "result": (a["explanation"] or {}).get("result", "error") if not a.get("error") else "error",
                   "first_problem": (a["explanation"] or {}).get("first_problem"),
                   "explanation": a.get("explanation")} for a in agents],
        "differences": differences(per_node),
    }
