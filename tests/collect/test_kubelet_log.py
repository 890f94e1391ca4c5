"""kubelet's "Hairpin mode set to" line, from log files under the host root."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collect.base import Absent, CollectContext
from agent.collect.kubelet_log import collect, effective_mode_line
from agent.config import Config

DATA = Path(__file__).resolve().parents[1] / "data" / "kubelet"


@pytest.mark.parametrize("lines,mode", [
    # kubelet.go, 1.3-1.9 era (the guide's own example)
    (['I0629 00:51:43.648698    3252 kubelet.go:380] Hairpin mode set to "promiscuous-bridge"'], "promiscuous-bridge"),
    # dockershim 1.20+ structured logging; the fallback line reports the configured value, not the effective one
    (['I0101 docker_service.go:258] "Hairpin mode is set but kubenet is not enabled, falling back to HairpinVeth" '
      'hairpinMode="promiscuous-bridge"',
      'I0101 docker_service.go:264] "Hairpin mode is set" hairpinMode="hairpin-veth"'],
     "hairpin-veth"),
    # kubelet 1.5: non-docker runtimes ignore the setting and say so
    (['W0101 kubelet.go:584] Hairpin mode set to "hairpin-veth" but container runtime is "rkt", ignoring'], None),
    (["I0101 kubelet.go:100] nothing about it"], None),
])
def test_effective_mode_line(lines: list[str], mode: str | None) -> None:
    found = effective_mode_line(lines)
    assert (found[1] if found else None) == mode


def test_last_start_wins_and_file_is_read_from_host_root(tmp_path: Path) -> None:
    log = tmp_path / "var" / "log" / "kubelet.log"
    log.parent.mkdir(parents=True)
    log.write_text((DATA / "kubelet-dockershim.log").read_text())
    got = collect(CollectContext(Config(root=tmp_path), 5))
    assert (got.file, got.mode) == ("/var/log/kubelet.log", "hairpin-veth")
    assert got.line is not None and got.line.endswith('Hairpin mode set to "hairpin-veth"')


def test_no_log_file_is_absent(tmp_path: Path) -> None:
    with pytest.raises(Absent):
        collect(CollectContext(Config(root=tmp_path), 5))
