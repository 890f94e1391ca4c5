"""CLI contract: exit codes, configuration from flags and environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser, config_from, main


def test_port_and_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCDOCTOR_PORT", "19999")
    monkeypatch.setenv("SVCDOCTOR_INTERVAL", "2m")
    monkeypatch.setenv("NODE_NAME", "node-7")
    cfg = config_from(build_parser().parse_args(["serve"]))
    assert (cfg.port, cfg.interval_s, cfg.node_name) == (19999, 120.0, "node-7")


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCDOCTOR_PORT", "19999")
    cfg = config_from(build_parser().parse_args(["serve", "--port", "9200", "--node-name", "n2"]))
    assert (cfg.port, cfg.node_name) == (9200, "n2")


@pytest.mark.parametrize("argv", [["serve", "--port", "99999"], ["check", "--interval", "x"], ["bogus"],
                                  ["check", "--severity", "no.such_id=info"], ["serve", "--interval", "soon"]])
def test_bad_flags_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_unreadable_snapshot_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "snap.json"
    bad.write_text("{not json")
    assert main(["check", "--from", str(bad)]) == 2
    assert "cannot read snapshot" in capsys.readouterr().err
    assert main(["check", "--from", str(tmp_path / "missing.json")]) == 2


def test_text_report_groups_by_severity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.model import Sysctls
    from tests.snapshots import absent, healthy

    snap = healthy(kubelet=absent("kubelet"), sysctl=Sysctls(values={"net/ipv4/ip_forward": "0"}))
    path = tmp_path / "s.json"
    path.write_text(snap.to_json())
    assert main(["check", "--from", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.index("CRITICAL (2)") < out.index("INFO (1)")
    assert "[kubelet.not_running]" in out and "remedy:" in out and "\033[" not in out
