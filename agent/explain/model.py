"""An Explanation: the guide's steps for one Service, each with a status, evidence and, when it found a
problem, the catalogue findings that say what and what to do. Immutable once built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.model import Finding

Status = Literal["ok", "problem", "skipped"]
OK: Status = "ok"
PROBLEM: Status = "problem"
SKIPPED: Status = "skipped"

SCHEMA = "svcdoctor-explain/v1"


@dataclass(frozen=True)
class ServiceQuery:
    namespace: str
    name: str
    port: str | None = None  # a port name or number; None: every port

    @classmethod
    def parse(cls, text: str) -> ServiceQuery:
        """NAMESPACE/SERVICE[:PORT]; raises ValueError with a one-line reason."""
        ns, slash, rest = text.strip().partition("/")
        name, _, port = rest.partition(":")
        if not slash or not ns or not name:
            raise ValueError(f"not NAMESPACE/SERVICE[:PORT]: {text!r}")
        if "/" in name or (":" in port):
            raise ValueError(f"not NAMESPACE/SERVICE[:PORT]: {text!r}")
        return cls(ns, name, port or None)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class Step:
    id: str  # stable: service, dns_service, dns_any, by_ip, definition, endpoints, pods, kube_proxy, rules, ...
    title: str  # the guide's question
    status: Status
    summary: str  # one line: what was seen, or why the step was skipped
    evidence: dict[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()  # when status is problem: what, with the catalogue's remedy
    symptom: bool = False  # shows that something is wrong, not where (the guide's "does it work by IP?")


@dataclass(frozen=True)
class Explanation:
    query: ServiceQuery
    node: str
    generated_at: float
    steps: tuple[Step, ...]
    cluster_origin: str = ""

    @property
    def first_problem(self) -> Step | None:
        """The first step that found a cause; a symptom only when no later step found one."""
        problems = [s for s in self.steps if s.status == PROBLEM]
        causes = [s for s in problems if not s.symptom]
        return (causes or problems)[0] if problems else None

    @property
    def healthy(self) -> bool:
        return all(s.status != PROBLEM for s in self.steps)
