"""The one subprocess runner every collector uses (agent/collect/subproc.py), against fake tools on
PATH that hang (and leave a grandchild), print far too much on stdout or stderr, print nothing, or
print garbage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.collect.base import Absent, CollectError
from agent.collect.subproc import run_command, stream_lines
from tests.collect.fakes import HANG_WITH_GRANDCHILD, tool
from tests.testbed import gone


def test_a_hung_tool_is_killed_with_its_whole_process_group(fakebin: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "grandchild.pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    tool(fakebin, "nft", HANG_WITH_GRANDCHILD)
    with pytest.raises(CollectError, match=r"did not finish within 1s \(killed\)"):
        run_command(["nft", "list", "ruleset"], 1.0)
    assert gone(int(pidfile.read_text()))


def test_a_grandchild_left_behind_by_a_tool_that_exited_is_killed(fakebin: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "grandchild.pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    tool(fakebin, "ipset", 'sleep 300 >/dev/null 2>&1 & echo $! > "$PIDFILE"\necho "create KUBE-X hash:ip"\n')
    assert run_command(["ipset", "save"], 10.0) == "create KUBE-X hash:ip\n"
    assert gone(int(pidfile.read_text()))


def test_a_stream_the_reader_stops_early_kills_the_tool(fakebin: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    tool(fakebin, "nft", 'echo $$ > "$PIDFILE"\nwhile :; do echo line; done\n')
    lines = stream_lines(["nft", "list", "table"], 30.0)
    assert [next(lines) for _ in range(3)] == ["line"] * 3
    lines.close()  # what a parser's exception does to the generator
    assert gone(int(pidfile.read_text()))


def test_stdout_beyond_the_cap_fails_the_read(fakebin: Path) -> None:
    tool(fakebin, "nft", "exec head -c 200000000 /dev/zero\n")
    with pytest.raises(CollectError, match=r"printed more than 1 MiB \(killed\)"):
        run_command(["nft", "-j", "list", "map"], 30.0, max_stdout=1 << 20)
    with pytest.raises(CollectError, match="printed more than 1 MiB"):
        for _ in stream_lines(["nft", "list", "table"], 30.0, max_stdout=1 << 20):
            pass


HUGE_STDERR = """
import sys
from agent.collect.base import CollectError
from agent.collect.subproc import run_command
try:
    run_command(["noisy"], 60.0)
except CollectError as exc:
    message = str(exc)
print(repr(message))
# VmHWM is this interpreter's own peak: ru_maxrss would also carry the peak of the process that spawned it
# (a child made with vfork inherits its parent's high-water mark at exec: a pytest worker's 270 MiB)
print(next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")) // 1024)
"""


def test_stderr_is_kept_small_however_much_the_tool_writes(fakebin: Path) -> None:
    """300 MB on stderr, then exit 3: the read fails with the first stderr line, and the reader's
    peak memory stays far below what it was sent (measured in a fresh interpreter)."""
    tool(fakebin, "noisy", "echo 'Error: first line' >&2\nhead -c 300000000 /dev/zero | tr '\\0' x >&2\nexit 3\n")
    out = subprocess.run([sys.executable, "-c", HUGE_STDERR], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout.splitlines()
    assert out[0] == repr("noisy exited 3: Error: first line")
    assert int(out[1]) < 100  # MiB, against 300 MB written


def test_empty_and_garbage_output_come_back_as_they_are_for_the_caller_to_judge(fakebin: Path) -> None:
    tool(fakebin, "empty", "exit 0\n")
    tool(fakebin, "garbage", "printf '\\377\\376{\\000\\nnot json\\n'\n")
    assert run_command(["empty"], 10.0) == ""
    assert run_command(["garbage"], 10.0) == "\ufffd\ufffd{\x00\nnot json\n"
    assert list(stream_lines(["garbage"], 10.0)) == ["\ufffd\ufffd{\x00", "not json"]


def test_lines_split_across_reads_are_joined(fakebin: Path) -> None:
    tool(fakebin, "long", "head -c 300000 /dev/zero | tr '\\0' a; echo; echo b; printf c\n")
    assert [len(ln) for ln in stream_lines(["long"], 10.0)] == [300000, 1, 1]


def test_the_child_runs_under_lc_all_c_with_no_stdin(fakebin: Path) -> None:
    tool(fakebin, "env-of", 'echo "$LC_ALL"; cat; echo end\n')
    assert run_command(["env-of"], 10.0) == "C\nend\n"


def test_a_missing_tool_is_absent_and_a_failure_names_its_first_stderr_line(fakebin: Path) -> None:
    with pytest.raises(Absent, match="not installed"):
        run_command(["svcd-no-such-tool"], 10.0)
    tool(fakebin, "nft", "echo 'Error: No such file or directory' >&2\necho more >&2\nexit 1\n")
    with pytest.raises(CollectError, match=r"^nft -j list map ip kube-proxy x exited 1: "
                                           r"Error: No such file or directory$"):
        run_command(["nft", "-j", "list", "map", "ip", "kube-proxy", "x"], 10.0)


def test_the_report_of_a_failed_read_is_one_line() -> None:
    """What reaches a finding's evidence: one printable line, whatever the tool wrote."""
    from agent.collect.subproc import _Stderr

    err = _Stderr()
    err.add(b"\x1b[31mError:\x07 bad\r\n" + b"x" * 200_000)
    assert err.first_line() == "?[31mError:? bad"
    assert len(err.tail) == 64 * 1024
    assert json.dumps(err.first_line())
