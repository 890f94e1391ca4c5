"""A save is judged only when it is whole (issue 15): a save tool that prints nothing, garbage, a
truncated dump, 50 MB of lines none of which parse, one 100 MB line, or hangs, is a failed read
(agent.source_failed with the reason) and never a rule finding; a hung save is killed with its process
group at --source-timeout and read again at the next run. And the real "incompatible" table, made with
nft next to kube-proxy's rules loaded by iptables-nft-restore, is both a failed read and its own finding.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from agent.collect import Collector
from agent.collect.iptables import IptablesReader
from agent.collect.nft_generation import NfTablesInfo
from agent.config import Config
from agent.model import Finding
from agent.runner import Runner
from tests.snapshots import healthy
from tests.testbed import FIXTURES, PY, REPO, Node

IPT = FIXTURES / "iptables"
SAVED = IPT / "v1.3x_TestOverallIPTablesRules.nft-save.rules"
NODE_BASE = (IPT / "node-base.rules").read_text()


def kernel_lists_nat_and_filter(timeout_s: float) -> NfTablesInfo:
    """What nf_tables would say on a node where kube-proxy wrote its tables (the fake tool is the save)."""
    return NfTablesInfo(7, (("ip", "nat"), ("ip", "filter")))


def run_twice_with(tmp: Path, monkeypatch: pytest.MonkeyPatch, script: str, timeout: float = 10
                   ) -> tuple[list[Finding], list[Finding], Path]:
    """Two runs of a runner whose iptables-nft-save is `script`, judged beside a healthy kube-proxy."""
    bin_dir, runs = tmp / "bin", tmp / "runs"
    bin_dir.mkdir()
    tool = bin_dir / "iptables-nft-save"
    tool.write_text(f"#!/bin/sh\n/bin/echo x >> {runs}\n[ \"$1\" = -t ] && exit 0\n{script}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    (tmp / "proc" / "net").mkdir(parents=True)
    (tmp / "proc" / "net" / "ip_tables_names").write_text("")
    monkeypatch.setenv("PATH", str(bin_dir))
    runner = Runner(Config(node_name="test-node", proc=tmp / "proc", source_timeout_s=timeout), collectors=(
        Collector("iptables", None, reader=lambda: IptablesReader(nft_info=kernel_lists_nat_and_filter)),))
    out = []
    for _ in range(2):
        snap = dataclasses.replace(healthy(), iptables=runner.collect().iptables)
        out.append(list(runner.check(snap).findings))
    return out[0], out[1], runs


def rule_findings(found: list[Finding]) -> list[str]:
    return [f.id for f in found if f.id.startswith(("iptables.", "rules.")) and f.severity != "info"]


def failure(found: list[Finding]) -> str:
    (f,) = [f for f in found if f.id == "agent.source_failed" and f.subject == "iptables"]
    return str(f.evidence["error"])


def test_a_whole_save_is_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same fake tool printing a real save gives a read and no failure."""
    first, _, _ = run_twice_with(tmp_path, monkeypatch, f"exec /bin/cat {SAVED}")
    assert not [f for f in first if f.id == "agent.source_failed"]
    assert "iptables.hook_missing" in {f.id for f in first}  # judged: the fixture has no node-base hooks


@pytest.mark.parametrize(("name", "script", "reason"), [
    ("empty", "exit 0", "did not print table filter, nat"),
    ("garbage", "i=0; while [ $i -lt 200 ]; do echo 'Segmentation fault (core dumped) $i'; i=$((i+1)); done",
     "output did not parse: 200 of 200 lines"),
    ("garbage in a table", "echo '*nat'; i=0; while [ $i -lt 200 ]; do echo \"junk $i\"; i=$((i+1)); done; "
     "echo COMMIT; echo '*filter'; echo COMMIT", "output did not parse"),
    ("truncated", f"/bin/head -c 3000 {SAVED}", "ends without COMMIT for table"),
    ("a table missing", f"/usr/bin/sed -n '/^\\*filter/,/^COMMIT/p' {SAVED}", "did not print table nat"),
    ("50 MB of unparsable lines", "/usr/bin/yes 'x y z this line does not parse as an iptables rule, at all' "
     "| /usr/bin/head -c 50000000", "output did not parse: 847458 of 847458 lines"),
    ("the incompatible marker", "echo \"# Table \\`nat' is incompatible, use 'nft' tool.\"",
     "cannot show table nat"),
])
def test_a_save_that_is_not_whole_fails_the_source_and_judges_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str, reason: str) -> None:
    first, second, _ = run_twice_with(tmp_path, monkeypatch, script)
    for found in (first, second):
        assert reason in failure(found), name
        assert [f for f in rule_findings(found) if f != "iptables.table_incompatible"] == [], name
    assert ("iptables.table_incompatible" in {f.id for f in first}) == (name == "the incompatible marker")


def test_one_100_mb_line_is_cut_as_it_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracemalloc.start()
    try:
        first, _, _ = run_twice_with(tmp_path, monkeypatch, "/usr/bin/head -c 100000000 /dev/zero | /usr/bin/tr "
                                     "'\\0' x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "line(s) over 16384 characters" in failure(first) and rule_findings(first) == []
    assert peak < 16 << 20  # the line was not kept: a 16 kB stub of it


def test_a_hung_save_is_killed_at_the_source_timeout_and_read_again_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil
    started = time.monotonic()
    first, second, runs = run_twice_with(tmp_path, monkeypatch, "/bin/sleep 60 & exec /bin/sleep 60", timeout=2)
    assert time.monotonic() - started < 8  # two runs of at most the 2 s time-out each
    for found in (first, second):
        assert "did not finish within" in failure(found) and rule_findings(found) == []
    assert runs.read_text().count("x") == 2  # retried at the next run: no backoff, no "still hung"
    assert psutil.Process().children(recursive=True) == []  # the save and its own child are gone


INCOMPATIBLE = r"""
import dataclasses, json, sys
from agent.collect import Collector
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.runner import Runner
from tests.snapshots import healthy
runner = Runner(Config(node_name="test-node"), collectors=(Collector("iptables", None, reader=IptablesReader),))
snap = dataclasses.replace(healthy(), iptables=runner.collect().iptables)
print(json.dumps([{"id": f.id, "severity": f.severity, "evidence": f.evidence} for f in runner.check(snap).findings]))
"""


def test_a_table_iptables_nft_cannot_show_is_a_failed_read_and_a_finding(node: Node) -> None:
    node.nfacct_for_kube_proxy()
    node.iptables_restore((IPT / "v1.3x_TestOverallIPTablesRules.rules").read_text(), "nft")
    node.iptables_restore(NODE_BASE, "nft", noflush=True)
    node.sh("nft", "add chain ip nat OTHER")
    node.sh("nft", "add rule ip nat OTHER numgen random mod 2 vmap { 0 : accept, 1 : drop }")
    assert "incompatible" in node.iptables_save("nft")
    found = json.loads(node.sh("/usr/bin/env", f"PYTHONPATH={REPO}", PY, "-c", INCOMPATIBLE).stdout)
    (failed,) = [f for f in found if f["id"] == "agent.source_failed"]
    assert "iptables-nft-save cannot show table nat" in failed["evidence"]["error"]
    (incompatible,) = [f for f in found if f["id"] == "iptables.table_incompatible"]
    assert incompatible["severity"] == "critical"
    assert incompatible["evidence"]["table"] == "nat" and incompatible["evidence"]["foreign_chains"] == ["OTHER"]
    assert [f["id"] for f in found if f["id"].startswith(("iptables.chain", "iptables.hook", "rules."))] == []
