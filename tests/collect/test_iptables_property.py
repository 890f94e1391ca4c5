"""Property: a reader that has read before gives, after any sequence of rule changes, the same rules,
views and findings as a fresh reader of the same rules.

The changes: a rule added to and removed from every kind of chain (dispatch, Service ladder, endpoint,
KUBE-EXT, a plain chain, a filter reject), a Service chain that nothing jumps to any more (its jump from
KUBE-SERVICES, or from a plain chain, removed), a chain deleted, a probability changed. Simulated on
saved text with fake save tools (both backends; the nf_tables generation moves with each change as the
kernel's does), and loaded into a real netns with iptables-restore for both backends.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.checks import CHECKS
from agent.checks.derive import derive
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.collect.nft_generation import NfTablesInfo
from agent.config import Config
from agent.model.iptables import IptablesState
from agent.model.views import Views
from agent.serial import to_jsonable
from bench.gen_iptables import generate
from tests.rulesets import apply_partial, parse_lines, render
from tests.snapshots import healthy
from tests.testbed import PY, REPO, Node

BASE = apply_partial("".join(generate(24, 2)), "")
KINDS = ("dispatch", "ladder", "endpoint", "ext", "plain", "reject")
OPS = (*(f"add {k}" for k in KINDS), *(f"remove {k}" for k in KINDS), "unreference via dispatch",
       "reference from plain", "unreference from plain", "delete service chain", "probability")


def _chains(nat: dict[str, list[str]], prefix: str) -> list[str]:
    return sorted(c for c in nat if c.startswith(prefix))


def change(text: str, op: str, rnd: random.Random) -> str:
    """`text` with one change `op` applied (a no-op when there is nothing to apply it to)."""
    tables = parse_lines(text)
    nat, filt = tables["nat"], tables["filter"]
    kind = op.split()[-1]
    chain = {"dispatch": "KUBE-SERVICES", "plain": "KUBE-POSTROUTING"}.get(kind)
    pool = {"ladder": "KUBE-SVC-", "endpoint": "KUBE-SEP-", "ext": "KUBE-EXT-"}.get(kind)
    if pool:
        chain = rnd.choice(_chains(nat, pool) or [""]) or None
    if op.startswith("add ") and kind == "reject":
        filt["KUBE-SERVICES"].append(f'-A KUBE-SERVICES -m comment --comment "ns{rnd.randrange(99)}/x:p80 has no '
                                     f'endpoints" -m tcp -p tcp -d 172.31.0.{rnd.randrange(250)} --dport 80 -j REJECT')
    elif op.startswith("add ") and chain:
        target = rnd.choice(_chains(nat, "KUBE-SEP-") or ["KUBE-MARK-MASQ"])
        extra = {"endpoint": f"-m tcp -p tcp -j DNAT --to-destination 10.9.{rnd.randrange(250)}.1:80",
                 "dispatch": f'-m comment --comment "ns1/svc1:p80 cluster IP" -d 172.31.1.{rnd.randrange(250)} '
                             f'-p tcp --dport 80 -j {target}'}.get(kind, f"-j {target}")
        nat[chain].insert(rnd.randrange(len(nat[chain]) + 1), f"-A {chain} {extra}")
    elif op.startswith("remove "):
        rules = filt["KUBE-SERVICES"] if kind == "reject" else nat.get(chain or "", [])
        if rules:
            rules.pop(rnd.randrange(len(rules)))
    elif op == "unreference via dispatch":
        jumps = [r for r in nat["KUBE-SERVICES"] if "-j KUBE-SVC-" in r]
        if jumps:
            nat["KUBE-SERVICES"].remove(rnd.choice(jumps))
    elif op == "reference from plain":
        svc = rnd.choice(_chains(nat, "KUBE-SVC-") or [""])
        if svc:
            nat["KUBE-POSTROUTING"].append(f"-A KUBE-POSTROUTING -s 10.8.0.1/32 -j {svc}")
    elif op == "unreference from plain":
        jumps = [r for r in nat["KUBE-POSTROUTING"] if "-j KUBE-SVC-" in r]
        if jumps:
            nat["KUBE-POSTROUTING"].remove(rnd.choice(jumps))
    elif op == "delete service chain":
        svc = rnd.choice(_chains(nat, "KUBE-SVC-") or [""])
        if svc:
            del nat[svc]
            for name in nat:
                nat[name] = [r for r in nat[name] if not r.endswith(f"-j {svc}")]
    elif op == "probability":
        rungs = [(c, i) for c in _chains(nat, "KUBE-SVC-") for i, r in enumerate(nat[c]) if "--probability" in r]
        if rungs:
            c, i = rnd.choice(rungs)
            nat[c][i] = nat[c][i].replace("--probability 0.", f"--probability 0.{rnd.randrange(10)}")
    return render(tables)


def judged(state: IptablesState, runs: list[Views] | None = None) -> object:
    """Rules, views and findings of a read (its time left out), as JSON. `runs`: the views of the runs
    before, as the runner keeps them (derive may take over a view of an unchanged RuleSet); appended to."""
    snap = healthy(iptables=state)
    views = derive(snap, runs[-1] if runs else None)
    if runs is not None:
        runs.append(views)
    findings = sorted(json.dumps(to_jsonable(f), sort_keys=True) for fn in CHECKS for f in fn(snap, views))
    return to_jsonable(state.rulesets), state.backend, dict(state.kube_chains), to_jsonable(views.iptables), findings


sequences = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2**16)), min_size=1, max_size=8)


# --- simulated on saved text ---------------------------------------------------------------------------

def _fake_node(tmp: Path, backend: str) -> tuple[Path, Config]:
    bin_dir, rules = tmp / "bin", tmp / "rules.txt"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / f"iptables-{backend}-save"
    tool.write_text(f'#!/bin/sh\n[ "$1" = -t ] && exit 0\nexec /bin/cat {rules}\n')
    tool.chmod(0o755)
    (tmp / "proc" / "net").mkdir(parents=True, exist_ok=True)
    (tmp / "proc" / "net" / "ip_tables_names").write_text("nat\nfilter\n" if backend == "legacy" else "")
    return rules, Config(proc=tmp / "proc")


@pytest.mark.parametrize("backend", ["legacy", "nft"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=sequences)
def test_a_reader_that_read_before_equals_a_fresh_one_on_saved_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, steps: list[tuple[str, int]]) -> None:
    rules, cfg = _fake_node(tmp_path, backend)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    generation = [1]

    def nft_info(timeout_s: float) -> NfTablesInfo:  # moves with every change, as the kernel's does
        return NfTablesInfo(generation[0], (("ip", "nat"), ("ip", "filter")) if backend == "nft" else ())

    ctx = CollectContext(cfg=cfg, deadline_s=20)
    text = BASE
    rules.write_text(text)
    long_lived, runs = IptablesReader(budget=1.0, nft_info=nft_info), []
    judged(long_lived(ctx), runs)
    for op, seed in [("nothing", 0), *steps]:
        if op != "nothing":
            text = change(text, op, random.Random(seed))
            rules.write_text(text)
            generation[0] += 1
        again = long_lived(ctx)
        fresh = IptablesReader(budget=1.0, nft_info=nft_info)(ctx)
        assert judged(again, runs) == judged(fresh), op


def test_the_changes_reach_every_kind_of_chain_and_the_plain_chain_case() -> None:
    """The operations do change what they say (a no-op operation would make the property vacuous)."""
    seen = set()
    for op in OPS:
        text = BASE
        if op == "unreference from plain":
            text = change(BASE, "reference from plain", random.Random(1))
        elif op == "remove reject":
            text = change(BASE, "add reject", random.Random(1))
        if change(text, op, random.Random(1)) != text:
            seen.add(op)
    assert seen == set(OPS)
    plain = change(BASE, "reference from plain", random.Random(1))
    referenced = judged_ids(plain)
    unreferenced = judged_ids(change(change(plain, "unreference via dispatch", random.Random(2)), "unreference from "
                                     "plain", random.Random(1)))
    assert "iptables.service_chain_unreferenced" not in referenced
    assert "iptables.service_chain_unreferenced" in unreferenced


def judged_ids(text: str) -> set[str]:
    from agent.collect.iptables_parse import parse_text
    state = IptablesState("legacy", "test", (parse_text(text),), {"legacy": 1, "nft": 0})
    return {json.loads(f)["id"] for f in judged(state)[-1]}  # type: ignore[index]


# --- real kernel state ---------------------------------------------------------------------------------

KERNEL = r"""
import json, subprocess, sys
from agent.collect.base import CollectContext
from agent.collect.iptables import IptablesReader
from agent.config import Config
from tests.collect.test_iptables_property import judged
backend, texts = sys.argv[1], json.loads(sys.stdin.read())
ctx = CollectContext(cfg=Config(), deadline_s=30)
long_lived, runs = IptablesReader(budget=1.0), []
same = []
for text in texts:
    subprocess.run([f"iptables-{backend}-restore", "-w", "60"], input=text, text=True, check=True)
    same.append(judged(long_lived(ctx), runs) == judged(IptablesReader(budget=1.0)(ctx)))
print(json.dumps(same))
"""


@pytest.mark.parametrize("backend", ["legacy", "nft"])
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=sequences)
def test_a_reader_that_read_before_equals_a_fresh_one_in_a_netns(node: Node, backend: str,
                                                                  steps: list[tuple[str, int]]) -> None:
    texts, text = [BASE, BASE], BASE  # read twice unchanged first
    for op, seed in steps:
        text = change(text, op, random.Random(seed))
        texts.append(text)
    node.nfacct_for_kube_proxy()
    out = node.sh("/usr/bin/env", f"PYTHONPATH={REPO}", f"PATH={os.environ['PATH']}", PY, "-c", KERNEL, backend,
                  input=json.dumps(texts))
    assert json.loads(out.stdout) == [True] * len(texts)
