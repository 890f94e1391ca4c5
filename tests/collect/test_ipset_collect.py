"""`ipset save` (IPVS mode's sets) with a fake `ipset` first on PATH: a hung one is killed with its
process group within the source's deadline, and output that is not `ipset save`'s is an error, from
which no ipset is judged missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.collect.base import CollectContext
from agent.collect.ipvs import read_ipsets
from agent.config import Config
from tests.collect.fakes import HANG_WITH_GRANDCHILD, tool
from tests.testbed import gone


def ipset_ctx(tmp_path: Path, deadline_s: float) -> CollectContext:
    """A host whose /proc/modules lists ip_set, so `ipset save` is run."""
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "modules").write_text("ip_set 61440 0 - Live 0x0000000000000000\n")
    return CollectContext(cfg=Config(proc=proc, sys=tmp_path / "sys"), deadline_s=deadline_s)


def test_a_hung_ipset_save_is_an_error_and_leaves_no_grandchild(fakebin: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "grandchild.pid"
    monkeypatch.setenv("PIDFILE", str(pidfile))
    tool(fakebin, "ipset", HANG_WITH_GRANDCHILD)
    t0 = time.monotonic()
    sets, error = read_ipsets(ipset_ctx(tmp_path, deadline_s=2.0))
    assert (sets, error) == ({}, "ipset save did not finish within 0.9s (killed)")
    assert time.monotonic() - t0 < 30  # bounded by the source's deadline, not the tool
    assert gone(int(pidfile.read_text()))


@pytest.mark.parametrize("output", ["\\377garbage\\n", "<html>502 Bad Gateway</html>\\n",
                                    "create KUBE-CLUSTER-IP hash:ip,port\\nWarning: something\\n"])
def test_ipset_save_output_that_is_not_its_own_is_an_error(fakebin: Path, tmp_path: Path, output: str) -> None:
    tool(fakebin, "ipset", f"printf '{output}'\n")
    sets, error = read_ipsets(ipset_ctx(tmp_path, deadline_s=10.0))
    assert sets == {} and error is not None and "never prints" in error


