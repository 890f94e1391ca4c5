"""Where deploy/ lives and how its files are read, for the deploy tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.testbed import REPO

DEPLOY = REPO / "deploy"
DAEMONSET = DEPLOY / "daemonset.yaml"
PROM = DEPLOY / "prometheus"
STANDALONE = PROM / "standalone"
RULES = STANDALONE / "svcdoctor.rules.yml"
RULES_TEST = STANDALONE / "svcdoctor.rules.test.yml"
SCRAPE_EXAMPLE = STANDALONE / "prometheus.example.yml"
YAMLLINT_CONFIG = Path(__file__).resolve().parent / "yamllint.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kind(path: Path, name: str) -> dict[str, Any]:
    (doc,) = [d for d in documents(path) if d["kind"] == name]
    return doc


def agent_container() -> dict[str, Any]:
    (container,) = kind(DAEMONSET, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = kind(DAEMONSET, "DaemonSet")["spec"]["template"]["spec"]
    return spec


POD_SPEC = pod_spec()


def daemonset_capabilities() -> list[str]:
    """The capabilities the DaemonSet adds, as setpriv/capsh spell them (net_admin, ...)."""
    return [c.lower() for c in agent_container()["securityContext"]["capabilities"]["add"]]


def claimed_kubernetes_minors() -> list[str]:
    """The Kubernetes minors README's Deploy section claims ("Kubernetes 1.29 to 1.35")."""
    readme = (REPO / "README.md").read_text()
    deploy = readme.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"Kubernetes 1\.(\d+) to 1\.(\d+)", deploy)
    assert m, "README's Deploy section must say which Kubernetes versions it supports"
    return [f"1.{minor}" for minor in range(int(m.group(1)), int(m.group(2)) + 1)]


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def static_scrape_config(example: dict[str, Any], target: str, node: str) -> dict[str, Any]:
    """The example's svcdoctor job with Kubernetes discovery replaced by one static target that has the
    meta labels discovery would give (Debian's Prometheus is built without Kubernetes discovery);
    the example's relabelling is kept as it is."""
    (job,) = example["scrape_configs"]
    job = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    job["static_configs"] = [{"targets": [target], "labels": {
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_container_port_name": "metrics",
        "__meta_kubernetes_pod_name": "svcdoctor-x7k2p",
    }}]
    return {**example, "scrape_configs": [job]}
