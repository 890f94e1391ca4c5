"""The JSON document shared by `svcdoctor check --json` and `GET /findings` (schema svcdoctor/v1)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.model import SEVERITIES, Finding
from agent.model.report import Report
from agent.serial import to_jsonable

SCHEMA = "svcdoctor/v1"
FILTERS = ("severity", "id", "service")


class BadFilter(ValueError):
    pass


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_filters(params: Mapping[str, list[str]]) -> dict[str, str]:
    """Validate query parameters; an unknown name or severity is the caller's mistake (HTTP 400)."""
    out: dict[str, str] = {}
    for name, values in params.items():
        if name not in FILTERS:
            raise BadFilter(f"unknown parameter {name!r}; use one of {', '.join(FILTERS)}")
        value = values[-1]
        if name == "severity" and value not in SEVERITIES:
            raise BadFilter(f"severity must be one of {', '.join(SEVERITIES)}, not {value!r}")
        if not value:
            raise BadFilter(f"parameter {name!r} is empty")
        out[name] = value
    return out


def matches(f: Finding, filters: Mapping[str, str]) -> bool:
    if "severity" in filters and f.severity != filters["severity"]:
        return False
    if "id" in filters and not f.id.startswith(filters["id"]):
        return False
    return not ("service" in filters and f.service != filters["service"])


def document(report: Report, filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    flt = filters or {}
    return {
        "schema": SCHEMA,
        "node": report.snapshot.node,
        "generated_at": rfc3339(report.generated_at),
        "proxy_mode": report.proxy_mode,
        "sources": [
            {"name": s.name, "ok": s.ok, "absent": s.absent, "error": s.error,
             "duration_seconds": round(s.duration_s, 6)}
            for s in report.snapshot.sources()
        ],
        "findings": [to_jsonable(f) for f in report.findings if matches(f, flt)],
    }
