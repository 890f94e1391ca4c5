"""The layers, as imports: collect -> model <- checks -> report.

- agent/model imports only agent.model and agent.serial (the data everything else shares);
- agent/checks never import the collectors, the parser (agent/collect/*), the runner or a reporter:
  a check sees only the snapshot and the derived views;
- agent/report never imports the collectors, the runner or check code: it renders a Report (whose
  views the runner derived), and computes nothing of its own at scrape time;
- agent/collect never imports check or report code.
Read from the source (every import statement, at any depth), so a lazy import inside a function counts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[1] / "agent"

# package -> agent modules (prefixes) it must not import
FORBIDDEN = {
    "agent.model": ("agent.checks", "agent.collect", "agent.report", "agent.runner", "agent.serve", "agent.cli",
                    "agent.persistence", "agent.settings", "agent.catalogue"),
    "agent.checks": ("agent.collect", "agent.report", "agent.runner", "agent.serve", "agent.cli",
                     "agent.persistence"),
    "agent.report": ("agent.collect", "agent.checks", "agent.runner", "agent.serve", "agent.cli",
                     "agent.persistence"),
    "agent.collect": ("agent.checks", "agent.report", "agent.runner", "agent.serve", "agent.cli"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def crossings(package: str) -> list[str]:
    bad = []
    for path in sorted((AGENT / package.split(".", 1)[1]).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(AGENT.parent)} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_crosses_a_layer(package: str) -> None:
    assert crossings(package) == []


def test_the_test_sees_a_crossing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check importing the parser, and a reporter importing the runner, are caught."""
    fake = tmp_path / "agent"
    for package, line in (("checks", "from agent.collect.iptables_parse import parse_text\n"),
                          ("report", "def f() -> None:\n    from agent.runner import Runner\n"),
                          ("model", "import agent.checks.derive\n"), ("collect", "from agent.report import text\n")):
        (fake / package).mkdir(parents=True)
        (fake / package / "bad.py").write_text(line)
    monkeypatch.setattr(sys.modules[__name__], "AGENT", fake)
    for package in FORBIDDEN:
        assert crossings(package), package
