"""The catalogue is the single source of finding words: every id a check emits is in it, docs are fresh."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agent.checks
from agent.catalogue import UnknownFinding, finding, load, template_fields
from agent.checks import CHECKS

REPO = Path(__file__).resolve().parents[1]


def _emitted_ids() -> set[str]:
    ids: set[str] = set()
    for path in (REPO / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "finding" and node.args:
                arg = node.args[0]
                assert isinstance(arg, ast.Constant), f"{path}: finding id must be a literal, not built"
                ids.add(str(arg.value))
    return ids


def test_every_emitted_id_is_catalogued() -> None:
    assert _emitted_ids() - set(load()) == set()


def test_ids_are_area_dot_condition_snake_case() -> None:
    for fid in load():
        assert re.fullmatch(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*", fid), fid


def test_entries_have_words_and_templates_parse() -> None:
    for e in load().values():
        assert e.title and e.message and e.remedy, e.id
        template_fields(e.message)  # raises on a malformed template


def test_unknown_id_raises() -> None:
    with pytest.raises(UnknownFinding):
        finding("rules.no_such_thing", "x")


def test_missing_message_field_raises() -> None:
    with pytest.raises(KeyError):
        finding("node.ip_forward_disabled", "n1", evidence={})


def test_every_check_module_is_registered() -> None:
    registered = {fn.__module__ for fn in CHECKS}
    modules = {f"agent.checks.{m.name}" for m in pkgutil.iter_modules(agent.checks.__path__)}
    with_check = {m for m in modules if hasattr(__import__(m, fromlist=["check"]), "check")}
    assert with_check - registered == set()


def test_readme_findings_table_and_runbooks_are_fresh() -> None:
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_docs.py"), "--check"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


def test_readme_overview_and_findings_reference_name_every_finding_id() -> None:
    readme = (REPO / "README.md").read_text()
    reference = (REPO / "docs" / "findings.md").read_text()
    assert {fid for fid in load() if f"`{fid}`" not in readme and not load()[fid].retired} == set()
    assert {fid for fid in load() if f"`{fid}`" not in reference} == set()


def test_readme_is_the_front_door_and_its_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 15 * 1024
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to missing {target}"


def test_metrics_reference_documents_every_metric_name_in_the_code() -> None:
    names: set[str] = set()
    for path in (REPO / "agent").rglob("*.py"):
        names |= set(re.findall(r'"(svcdoctor_[a-z0-9_]+)"', path.read_text()))
    reference = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(svcdoctor_[a-z0-9_]+)`", reference))
    # counters are exposed with `_total`, which is how the reference names them
    missing = {n for n in names if n not in documented and f"{n}_total" not in documented}
    assert len(names) > 20 and missing == set()
