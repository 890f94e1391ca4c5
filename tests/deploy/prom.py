"""A real Prometheus (Debian's /usr/bin/prometheus) inside a test node's network namespace.

It scrapes the agent with the shipped scrape job (deploy/prometheus/standalone/prometheus.example.yml:
its relabelling, with Kubernetes discovery swapped for a static target carrying the same meta labels)
and evaluates the shipped rules, with every interval and `for:` shortened to a second so a test
sees an alert fire and resolve in seconds. Queried through its HTTP API from inside the netns.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import yaml

from tests.deploy.manifests import RULES, SCRAPE_EXAMPLE, static_scrape_config
from tests.testbed import PY, STANDINS, Node, require_tool

T = TypeVar("T")
FAST = "1s"


def fast_rules(path: Path) -> dict[str, Any]:
    """The shipped rules with every `for:` at one second (the expressions are untouched)."""
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    for group in rules["groups"]:
        group["interval"] = FAST
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FAST
    return rules


class Prometheus:
    def __init__(self, node: Node, workdir: Path, target: str, port: int = 9090) -> None:
        require_tool("prometheus")
        self.node, self.url = node, f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / RULES.name).write_text(yaml.safe_dump(fast_rules(RULES)))
        config = static_scrape_config(yaml.safe_load(SCRAPE_EXAMPLE.read_text()), target, node="test-node")
        config["global"] = {"scrape_interval": FAST, "scrape_timeout": FAST, "evaluation_interval": FAST}
        config["scrape_configs"][0].update(scrape_interval=FAST, scrape_timeout=FAST)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                node.argv("prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                          f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                          "--log.level=warn"),
                cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        node.procs.append(self.proc)
        self.wait_for(lambda: self._get("/-/ready") is not None or None, 60, "Prometheus to become ready")

    def _get(self, path: str) -> Any:
        """The decoded JSON (or text) at `path`, or None when Prometheus does not answer 200 yet."""
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        res = self.node.sh(PY, str(STANDINS / "http_get.py"), self.url + path, check=False)
        if res.returncode != 0:
            return None
        (answer,) = json.loads(res.stdout)
        if answer["status"] != 200:
            return None
        try:
            return json.loads(answer["body"])
        except ValueError:
            return answer["body"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (empty while Prometheus does not answer)."""
        body = self._get("/api/v1/query?query=" + quote(promql))
        return list(body["data"]["result"]) if body else []

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts, from /api/v1/alerts."""
        body = self._get("/api/v1/alerts")
        return list(body["data"]["alerts"]) if body else []

    def firing(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll `probe` until it returns something other than None (or an empty list)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            time.sleep(0.2)  # polling Prometheus' API, bounded by the deadline
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; active alerts: {self.alerts()}")

    def wait_resolved(self, name: str, timeout: float) -> None:
        self.wait_for(lambda: not any(a["labels"]["alertname"] == name for a in self.alerts()) or None,
                      timeout, f"{name} to resolve")
