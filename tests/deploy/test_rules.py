"""The alert rules: promtool-valid, unit-tested, mixin-shaped, and each finding id paged exactly once."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.catalogue import load
from tests.deploy.manifests import (
    PROM,
    RULES,
    RULES_TEST,
    SCRAPE_EXAMPLE,
    STANDALONE,
    alerts,
    kind,
    static_scrape_config,
)
from tests.testbed import REPO, require

# Alerts that stand for a finding id through a metric rather than svcdoctor_finding(s).
METRIC_ALERTS = {"SvcdoctorConntrackTableFull": "conntrack.table_full", "SvcdoctorSourceFailing": "agent.source_failed"}
# Alerts about the agent or about aggregates: they name no single node, or no finding.
NOT_PER_NODE = {"SvcdoctorServiceOutOfSyncClusterWide", "SvcdoctorAgentAbsent"}
RUNBOOK_BASE = "https://github.com/svcdoctor/svcdoctor/blob/main/docs/"
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def promtool(*args: str, cwd: Path = STANDALONE) -> subprocess.CompletedProcess[str]:
    require(shutil.which("promtool") is not None, "needs promtool (Debian package prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_plain_rules() -> None:
    res = promtool("check", "rules", RULES.name)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_checks_the_prometheusrule_spec(tmp_path: Path) -> None:
    spec = kind(PROM / "prometheusrule.yaml", "PrometheusRule")["spec"]
    (tmp_path / "spec.yml").write_text(yaml.safe_dump(spec))
    res = promtool("check", "rules", "spec.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert spec == yaml.safe_load(RULES.read_text())


def test_promtool_unit_tests_pass() -> None:
    res = promtool("test", "rules", RULES_TEST.name)
    assert res.returncode == 0, res.stdout + res.stderr


def test_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    tested: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            tested.setdefault(t["alertname"], set()).add(bool(t.get("exp_alerts")))
    assert {a["alert"]: {True, False} for a in alerts()} == tested


def test_scrape_config_example_is_valid(tmp_path: Path) -> None:
    example = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    assert example["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(static_scrape_config(example, "10.0.0.1:9100", "n1")))
    res = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_is_mixin_shaped(alert: dict[str, Any]) -> None:
    assert re.fullmatch(r"Svcdoctor[A-Z][A-Za-z]+", alert["alert"])
    if alert["labels"]["severity"] == "{{ $labels.severity }}":  # the finding's own severity, never info
        assert 'severity=~"warning|critical"' in alert["expr"]
    else:
        assert alert["labels"]["severity"] in ("warning", "critical")
    assert re.fullmatch(r"\d+m", alert["for"])
    ann = alert["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert ann["runbook_url"].startswith(RUNBOOK_BASE)
    if alert["alert"] not in NOT_PER_NODE:
        assert "{{ $labels.node }}" in ann["description"]
    if "svcdoctor_finding{" in alert["expr"]:
        assert "{{ $labels.service }}" in ann["description"]


def id_selectors(alert: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, op, value) of the id/severity matchers of a finding alert's selector."""
    out = []
    for label, op, raw in MATCHER.findall(alert["expr"]):
        if label in ("id", "severity"):
            out.append((label, op, raw.encode().decode("unicode_escape")))
    return out


def selects(alert: dict[str, Any], fid: str, severity: str) -> bool:
    if alert["alert"] in METRIC_ALERTS:
        return METRIC_ALERTS[alert["alert"]] == fid
    if not re.search(r"svcdoctor_findings?\{", alert["expr"]):
        return False
    value = {"id": fid, "severity": severity}
    for label, op, want in id_selectors(alert):
        hit = re.fullmatch(want, value[label]) is not None if op in ("=~", "!~") else value[label] == want
        if hit != (op in ("=", "=~")):
            return False
    return True


@pytest.mark.parametrize("entry", [e for e in load().values() if not e.retired], ids=lambda e: e.id)
def test_each_finding_id_pages_exactly_once(entry: Any) -> None:
    paging = [a["alert"] for a in alerts() if selects(a, entry.id, entry.severity)]
    if entry.severity == "info":
        assert paging == []
    else:
        assert len(paging) == 1, f"{entry.id} ({entry.severity}) is paged by {paging}"


def test_matcher_parsing_sees_the_catchall_exclusions() -> None:
    (critical,) = [a for a in alerts() if a["alert"] == "SvcdoctorNodeCriticalFinding"]
    assert ("id", "!~", r"rules\..+") in id_selectors(critical)
    assert selects(critical, "node.ip_forward_disabled", "critical")
    assert not selects(critical, "kube_proxy.not_running", "critical")


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.read_text().splitlines() if line.startswith("#")}


def rendered_runbook_urls() -> set[str]:
    """Fixed runbook URLs in the rules, plus the templated ones as promtool's tests render them."""
    urls = {a["annotations"]["runbook_url"] for a in alerts() if "{{" not in a["annotations"]["runbook_url"]}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            urls |= {e["exp_annotations"]["runbook_url"] for e in t.get("exp_alerts") or []}
    return urls


def test_runbook_urls_point_at_existing_sections() -> None:
    missing = []
    for url in sorted(rendered_runbook_urls()):
        page, _, anchor = url.removeprefix(RUNBOOK_BASE).partition("#")
        if anchor not in anchors(REPO / "docs" / page):
            missing.append(url)
    assert missing == []


@pytest.mark.parametrize("entry", [e for e in load().values() if not e.retired and e.severity != "info"],
                         ids=lambda e: e.id)
def test_templated_runbook_url_of_each_paged_id_exists(entry: Any) -> None:
    (alert,) = [a for a in alerts() if selects(a, entry.id, entry.severity)]
    url = alert["annotations"]["runbook_url"]
    if "{{" in url:
        assert entry.id.replace(".", "") in anchors(REPO / "docs" / "runbooks.md")
