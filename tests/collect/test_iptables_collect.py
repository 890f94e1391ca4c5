"""The iptables collector: backend detection as iptables-wrappers does it, deadlines, pacing, the skips
when nothing changed, and no side effects. Fake save tools on PATH for the timing cases; real netns for
the rest."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from agent.collect.base import Absent, CollectContext, CollectError
from agent.collect.iptables import IptablesReader
from agent.collect.iptables_parse import parse_text
from agent.collect.nft_generation import NfTablesInfo
from agent.config import Config
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


def no_netlink(timeout_s: float) -> NfTablesInfo:
    """With fake save tools the kernel's nf_tables is not what they print: read without its generation."""
    raise OSError("not asked in this test")


def reader(**kw: object) -> IptablesReader:
    return IptablesReader(nft_info=no_netlink, **kw)  # type: ignore[arg-type]


@pytest.fixture
def restore_path() -> object:
    saved = os.environ["PATH"]
    yield
    os.environ["PATH"] = saved


def test_read_equals_parsing_the_whole_text(tmp_path: Path, restore_path: object) -> None:
    saved = IPT / "v1.3x_TestOverallIPTablesRules.nft-save.rules"
    cfg = fake_tools(tmp_path, {"iptables-nft-save": f'[ "$1" = -t ] && exit 0; /bin/cat {saved}'})
    state = reader(budget=1.0).collect(CollectContext(cfg=cfg, deadline_s=10))
    assert state.backend == "nft" and "0 rules in legacy" in state.backend_reason
    assert to_jsonable(state.rulesets[0]) == to_jsonable(parse_text(saved.read_text()))


def test_no_save_tool_is_absent(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {})
    with pytest.raises(Absent):
        reader().collect(CollectContext(cfg=cfg, deadline_s=10))


def test_hung_save_is_killed_and_retried_at_the_next_read(tmp_path: Path, restore_path: object) -> None:
    import psutil
    runs = tmp_path / "runs"
    cfg = fake_tools(tmp_path, {"iptables-nft-save": f"/bin/echo x >> {runs}; /bin/sleep 30 & exec /bin/sleep 30"})
    r = reader()
    for attempt in (1, 2):
        started = time.monotonic()
        with pytest.raises(CollectError, match="did not finish within"):
            r.collect(CollectContext(cfg=cfg, deadline_s=2))
        assert time.monotonic() - started < 3  # within the source's time-out
        assert runs.read_text().count("x") == attempt  # a failed read is tried again, not paced
        assert psutil.Process().children() == []  # the save and its own child: the whole group killed


def test_failing_save_names_the_command_and_its_message(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {"iptables-nft-save": "echo 'iptables-nft-save: out of memory' >&2; exit 4"})
    with pytest.raises(CollectError, match="exited 4: iptables-nft-save: out of memory"):
        reader().collect(CollectContext(cfg=cfg, deadline_s=5))


def test_cheap_reads_are_paced_for_a_moment_only(tmp_path: Path, restore_path: object) -> None:
    cfg = fake_tools(tmp_path, {"iptables-nft-save": "exit 0"})
    r = reader()
    first = r.collect(CollectContext(cfg=cfg, deadline_s=5))
    # A few ms of CPU: free to read again well within an interval (bound loose enough for a loaded machine:
    # the pause is the read's CPU time over the 5% budget, and a loaded CPU stretches that time).
    assert r.next_read - time.monotonic() < 30
    r.next_read = time.monotonic() + 60
    assert r.collect(CollectContext(cfg=cfg, deadline_s=5)) is first  # within the pause: the last result
    r.next_read = 0.0
    assert r.collect(CollectContext(cfg=cfg, deadline_s=5)) is not first


# --- real kernel state -------------------------------------------------------------------------------

def read_in(node: Node) -> dict[str, object]:
    """Run the collector inside the node's netns and return what it found (backend, reason, counts, and
    the save processes still running after it)."""
    code = ("import json, psutil; from agent.collect.iptables import IptablesReader; from agent.collect.base "
            "import CollectContext; from agent.config import Config; r = IptablesReader("
            "); s = r.collect(CollectContext(cfg=Config(), deadline_s=30)); print(json.dumps({'backend': "
            "s.backend, 'reason': s.backend_reason, 'kube_chains': dict(s.kube_chains), 'families': [x.family for x in "
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


def test_kube_chains_in_both_backends_are_counted(node: Node) -> None:
    load(node, "nft")
    node.iptables_restore("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\nCOMMIT\n", "legacy")
    found = read_in(node)
    assert found["backend"] == "nft"
    assert found["kube_chains"] == {"nft": node.iptables_save("nft").count("\n:KUBE-"), "legacy": 2}
    assert found["children"] == 0


def test_no_legacy_save_runs_without_legacy_tables(node: Node) -> None:
    load(node, "nft")  # no legacy tables at all: no legacy save may run (it would create them)
    found = read_in(node)
    assert found["backend"] == "nft" and found["kube_chains"] == {
        "nft": node.iptables_save("nft").count("\n:KUBE-"), "legacy": 0}
    assert found["children"] == 0
    assert node.sh("cat", "/proc/net/ip_tables_names").stdout.strip() == ""


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_ipv6_rules_are_read_when_kube_proxy_has_chains_there(node: Node, backend: str) -> None:
    load(node, backend)
    v6 = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d fd00::1/128 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n"
    node.iptables_restore(v6, backend, family=6)
    found = read_in(node)
    assert found["families"] == [4, 6] and found["backend"] == backend and found["children"] == 0


REREAD = r"""
import json, subprocess, sys
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from agent.collect.iptables_parse import parse_text
from agent.serial import to_jsonable
backend, partial = sys.argv[1], sys.argv[2]
reader = IptablesReader(budget=1.0)  # no pacing: every collect reads
ctx = CollectContext(cfg=Config(), deadline_s=30)
first, again = reader.collect(ctx), reader.collect(ctx)
subprocess.run([f"iptables-{backend}-restore", "-w", "60", "--noflush"], stdin=open(partial), check=True)
changed = reader.collect(ctx)
rs = changed.rulesets[0]
fresh = parse_text(subprocess.run([f"iptables-{backend}-save"], capture_output=True, text=True).stdout)
print(json.dumps({"same_object": again.rulesets[0] is first.rulesets[0], "new_object": rs is not first.rulesets[0],
                  "equal_to_fresh": to_jsonable(rs) == to_jsonable(fresh)}))
"""


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_an_unchanged_read_hands_back_the_last_result_and_a_change_is_read(node: Node, backend: str) -> None:
    """Real saves in a netns: reading unchanged rules again gives the same RuleSet object (nft: the
    nf_tables generation did not move; legacy: the save hashed as before); after kube-proxy's partial
    sync (fixture 02 adds a Service) the read equals a fresh parse of the save."""
    node.nfacct_for_kube_proxy()
    node.iptables_restore((IPT / "v1.3x_TestSyncProxyRulesRepeated_01_initial_full.rules").read_text(), backend)
    node.iptables_restore(NODE_BASE, backend, noflush=True)
    partial = IPT / "v1.3x_TestSyncProxyRulesRepeated_02_add_svc3_partial.rules"
    import json
    found = json.loads(node.sh("/usr/bin/env", f"PYTHONPATH={REPO}", PY, "-c", REREAD, backend, str(partial)).stdout)
    assert found["same_object"] and found["new_object"] and found["equal_to_fresh"], found


# --- the legacy save's hash (an unchanged save is not parsed again) ---------------------------------------

SAVE = """# Generated by iptables-save v1.8.9 on Sun Dec  6 07:53:12 2026
*filter
:INPUT ACCEPT [{n}:{b}]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [{n}:12]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
COMMIT
# Completed on Sun Dec  6 07:53:{s} 2026
# Generated by iptables-save v1.8.9 on Sun Dec  6 07:53:{s} 2026
*nat
:PREROUTING ACCEPT [{n}:{b}]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
COMMIT
# Completed on Sun Dec  6 07:53:{s} 2026
"""


def save_digest(text: str, cuts: int = 1) -> bytes:
    """The digest of `text` fed in `cuts` pieces of whole lines (as save_lines hands them)."""
    from agent.collect.iptables import SaveHash
    lines = text.encode().splitlines(keepends=True)
    h = SaveHash()
    step = max(1, len(lines) // cuts)
    for i in range(0, len(lines), step):
        h.update(b"".join(lines[i:i + step]))
    return h.digest()


def test_save_hash_ignores_only_timestamps_and_builtin_counters() -> None:
    base = save_digest(SAVE.format(n=1, b=2, s=12))
    for cuts in (1, 2, 5, 100):  # wherever the pieces end, a header split from its counters included
        assert save_digest(SAVE.format(n=9999, b=123456, s=59), cuts) == base
    assert save_digest(SAVE.format(n=1, b=2, s=12).replace("FORWARD DROP", "FORWARD ACCEPT")) != base
    assert save_digest(SAVE.format(n=1, b=2, s=12).replace("-j KUBE-FORWARD", "-j ACCEPT")) != base
    assert save_digest(SAVE.format(n=1, b=2, s=12).replace(":KUBE-SERVICES", ":KUBE-SVC")) != base
