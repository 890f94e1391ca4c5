"""The iptables collector: backend detection as iptables-wrappers does it, streaming parse, deadlines,
pacing, and no side effects. Fake save tools on PATH for the timing cases; real netns for the rest."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from agent.collect.base import Absent, CollectContext, CollectError
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.iptables_parse import parse_text
from agent.serial import to_jsonable
from tests.testbed import FIXTURES, PY, REPO, Node

IPT = FIXTURES / "iptables"
OVERALL = IPT / "v1.3x_TestOverallIPTablesRules.rules"
NODE_BASE = (IPT / "node-base.rules").read_text()


def fake_tools(tmp: Path, scripts: dict[str, str], legacy_tables: str = "") -> Config:
    """A PATH holding only the given save tools, and a /proc whose net/ip_tables_names says `legacy_tables`."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (tmp / "proc" / "net").mkdir(parents=True)
    (tmp / "proc" / "net" / "ip_tables_names").write_text(legacy_tables)
    os.environ["PATH"] = str(bin_dir)
    return Config(proc=tmp / "proc")


@pytest.fixture
def restore_path() -> object:
    saved = os.environ["PATH"]
    yield
    os.environ["PATH"] = saved


@pytest.mark.parametrize("reuse", [True, False])  # serve's reader remembers pieces; a one-shot check does not
def test_streamed_read_equals_parsing_the_whole_text(tmp_path: Path, restore_path: object, reuse: bool) -> None:
    saved = IPT / "v1.3x_TestOverallIPTablesRules.nft-save.rules"
    cfg = fake_tools(tmp_path, {"iptables-nft-save": f'[ "$1" = -t ] && exit 0; /bin/cat {saved}'})
    reader = IptablesReader(reuse=reuse)
    state = reader.collect(CollectContext(cfg=cfg, deadline_s=10))
    assert state.backend == "nft" and "0 rules in legacy" in state.backend_reason
    assert to_jsonable(state.rulesets[0]) == to_jsonable(parse_text(saved.read_text()))
    assert bool(reader.caches) == reuse


def test_no_save_tool_is_absent(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {})
    with pytest.raises(Absent):
        IptablesReader().collect(CollectContext(cfg=cfg, deadline_s=10))


def test_hung_save_is_killed_and_not_retried_until_paced(tmp_path: Path, restore_path: object) -> None:
    runs = tmp_path / "runs"
    cfg = fake_tools(tmp_path, {"iptables-nft-save": f"/bin/echo x >> {runs}; exec /bin/sleep 30"})
    reader = IptablesReader()
    started = time.monotonic()
    with pytest.raises(CollectError, match="did not finish in time"):
        reader.collect(CollectContext(cfg=cfg, deadline_s=1))
    assert time.monotonic() - started < 10
    with pytest.raises(CollectError, match="not retried"):
        reader.collect(CollectContext(cfg=cfg, deadline_s=1))
    assert runs.read_text().count("x") == 1  # the second run did not start a save
    assert reader.next_read - time.monotonic() > 10  # 1 s spent: the next try 19 s later at most 5% of a core


def test_failing_save_names_the_command_and_its_message(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {"iptables-nft-save": "echo 'iptables-nft-save: out of memory' >&2; exit 4"})
    with pytest.raises(CollectError, match="exited 4: iptables-nft-save: out of memory"):
        IptablesReader().collect(CollectContext(cfg=cfg, deadline_s=5))


def test_cheap_reads_are_paced_for_a_moment_only(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {"iptables-nft-save": "exit 0"})
    reader = IptablesReader()
    first = reader.collect(CollectContext(cfg=cfg, deadline_s=5))
    assert reader.next_read - time.monotonic() < 2  # a few ms of CPU: free to read again well within an interval
    assert reader.collect(CollectContext(cfg=cfg, deadline_s=5)) is first  # within that moment: the last result
    reader.next_read = 0.0
    assert reader.collect(CollectContext(cfg=cfg, deadline_s=5)) is not first


# --- real kernel state -------------------------------------------------------------------------------

def read_in(node: Node, guess: str | None = None) -> dict[str, object]:
    """Run the collector inside the node's netns and return what it found (backend, reason, counts, and
    the save processes still running after it). `guess`: the backend a previous read found."""
    code = ("import json, psutil; from agent.collect.iptables import IptablesReader; from agent.collect.base "
            "import CollectContext; from agent.config import Config; r = IptablesReader(backend=" + repr(guess) +
            "); s = r.collect(CollectContext(cfg=Config(), deadline_s=30)); print(json.dumps({'backend': "
            "s.backend, 'reason': s.backend_reason, 'kube_chains': s.kube_chains, 'families': [x.family for x in "
            "s.rulesets], 'children': len(psutil.Process().children())}))")
    import json
    return json.loads(node.sh("/usr/bin/env", f"PYTHONPATH={REPO}", PY, "-c", code).stdout)  # type: ignore[no-any-return]


def load(node: Node, backend: str) -> None:
    node.nfacct_for_kube_proxy()
    node.iptables_restore(OVERALL.read_text(), backend)
    node.iptables_restore(NODE_BASE, backend, noflush=True)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_backend_from_kubelets_hint_chain(node: Node, backend: str) -> None:
    load(node, backend)
    found = read_in(node)
    assert found["backend"] == backend
    assert "KUBE-IPTABLES-HINT" in str(found["reason"]) and f"iptables-{backend}" in str(found["reason"])
    kube_chains = node.iptables_save(backend).count("\n:KUBE-")
    assert kube_chains > 30
    assert found["kube_chains"] == {backend: kube_chains, "legacy" if backend == "nft" else "nft": 0}
    assert found["families"] == [4]


def test_without_hint_the_backend_with_more_rules_wins(node: Node) -> None:
    node.iptables_restore("*filter\n:FOO - [0:0]\n-A FOO -j ACCEPT\n-A FOO -j DROP\nCOMMIT\n", "legacy")
    node.iptables_restore("*filter\n:BAR - [0:0]\n-A BAR -j ACCEPT\nCOMMIT\n", "nft")
    found = read_in(node)
    assert found["backend"] == "legacy" and "2 rules in legacy, 1 in nft" in str(found["reason"])


@pytest.mark.parametrize("guess", [None, "legacy", "nft"])  # the last read's backend: legacy's save starts early
def test_kube_chains_in_both_backends_are_counted(node: Node, guess: str | None) -> None:
    load(node, "nft")
    node.iptables_restore("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\nCOMMIT\n", "legacy")
    found = read_in(node, guess)
    assert found["backend"] == "nft"  # a wrong guess changes nothing but what ran early
    assert found["kube_chains"] == {"nft": node.iptables_save("nft").count("\n:KUBE-"), "legacy": 2}
    assert found["children"] == 0


@pytest.mark.parametrize("guess", [None, "legacy"])
def test_a_guess_never_starts_a_legacy_save_without_legacy_tables(node: Node, guess: str | None) -> None:
    load(node, "nft")  # no legacy tables at all: no legacy save may run (it would create them)
    found = read_in(node, guess)
    assert found["backend"] == "nft" and found["kube_chains"] == {
        "nft": node.iptables_save("nft").count("\n:KUBE-"), "legacy": 0}
    assert found["children"] == 0
    assert node.sh("cat", "/proc/net/ip_tables_names").stdout.strip() == ""


@pytest.mark.parametrize(("backend", "guess"), [("nft", None), ("legacy", None), ("legacy", "legacy")])
def test_ipv6_rules_are_read_when_kube_proxy_has_chains_there(node: Node, backend: str, guess: str | None) -> None:
    load(node, backend)
    v6 = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d fd00::1/128 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n"
    node.iptables_restore(v6, backend, family=6)
    found = read_in(node, guess)  # with the guess, both legacy saves start before detection
    assert found["families"] == [4, 6] and found["backend"] == backend and found["children"] == 0


def test_a_parser_failure_kills_the_save_and_leaves_no_thread(tmp_path: Path, restore_path: object) -> None:
    import threading

    from agent.collect.iptables import stream_save
    big = tmp_path / "big.txt"
    big.write_text(":KUBE-X - [0:0]\n" * 400_000)  # more than the pipe and the queue hold
    fake_tools(tmp_path, {"iptables-nft-save": f"/bin/cat {big}; exec /bin/sleep 30"})

    def boom(text: str) -> None:
        raise RuntimeError("parser bug")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="parser bug"):
        stream_save(["iptables-nft-save"], boom, time.monotonic() + 20)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the drain threads to notice, bounded
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


REREAD = r"""
import json, subprocess, sys
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.checks import iptables_services
from agent.checks.programmed_iptables import programmed_ports_of
from agent.iptables_parse import parse_text
from agent.serial import to_jsonable
from tests.rulesets import fresh_views
backend, partial = sys.argv[1], sys.argv[2]
reader = IptablesReader(budget=1.0)  # no pacing: every collect reads
ctx = CollectContext(cfg=Config(), deadline_s=30)
first, again = reader.collect(ctx), reader.collect(ctx)
views = [programmed_ports_of(first.rulesets[0]), iptables_services.findings_of(first.rulesets[0])]
subprocess.run([f"iptables-{backend}-restore", "-w", "5", "--noflush"], stdin=open(partial), check=True)
changed = reader.collect(ctx)
rs = changed.rulesets[0]
views = [programmed_ports_of(rs), iptables_services.findings_of(rs)]  # brought up to date from the changes
cache = reader.caches[4, backend]
fresh = parse_text(subprocess.run([f"iptables-{backend}-save"], capture_output=True, text=True).stdout)
print(json.dumps({"same_object": again.rulesets[0] is first.rulesets[0], "new_object": rs is not first.rulesets[0],
                  "equal_to_fresh": to_jsonable(rs) == to_jsonable(fresh), "parsed": cache.parsed,
                  "reused": cache.reused, "changes": sorted(rs.changes.chains["nat"]) if rs.changes else None,
                  "views_equal_to_fresh": to_jsonable(views) == to_jsonable(list(fresh_views(fresh)))}))
"""


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_a_read_reuses_the_last_one_and_follows_a_partial_sync(node: Node, backend: str) -> None:
    """Real saves in a netns: reading unchanged rules again gives the same RuleSet object (so the checks
    memoised on it cost nothing); after kube-proxy's partial sync (fixture 02 adds a Service) the read
    equals a fresh parse of the save and parsed only a few pieces, it names the changed chains, and the
    views brought up to date from them equal views derived afresh."""
    node.nfacct_for_kube_proxy()
    node.iptables_restore((IPT / "v1.3x_TestSyncProxyRulesRepeated_01_initial_full.rules").read_text(), backend)
    node.iptables_restore(NODE_BASE, backend, noflush=True)
    partial = IPT / "v1.3x_TestSyncProxyRulesRepeated_02_add_svc3_partial.rules"
    import json
    found = json.loads(node.sh("/usr/bin/env", f"PYTHONPATH={REPO}", PY, "-c", REREAD, backend, str(partial)).stdout)
    assert found["same_object"] and found["new_object"] and found["equal_to_fresh"], found
    assert found["parsed"] >= 1 and found["reused"] >= 1, found  # a small rule set: a few pieces in all
    assert "KUBE-SERVICES" in found["changes"] and any(c.startswith("KUBE-SVC-") for c in found["changes"]), found
    assert found["views_equal_to_fresh"], found


def test_a_save_started_ahead_is_killed_when_the_read_fails(tmp_path: Path, restore_path: object) -> None:
    import psutil
    cfg = fake_tools(tmp_path, {"iptables-nft-save": "echo broken >&2; exit 3",
                                "iptables-legacy-save": "exec /bin/sleep 30"}, legacy_tables="nat\n")
    reader = IptablesReader(backend="legacy")  # the last read found legacy: its save starts first
    started = time.monotonic()
    with pytest.raises(CollectError, match="exited 3: broken"):
        reader.collect(CollectContext(cfg=cfg, deadline_s=20))
    assert time.monotonic() - started < 10
    assert psutil.Process().children() == []
