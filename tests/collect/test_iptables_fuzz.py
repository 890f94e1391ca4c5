"""Fuzzing the iptables parser and the whole-read judgement (about 20 s): no exception escapes, and no
malformed input (random text, a real save cut anywhere or with garbage mixed in) is ever judged into a
warning or critical finding: it is a failed read, or it judges as what it still is whole of.
Plus the inputs that were quadratic or unbounded once: 60k duplicate chain declarations, a 20 MB line.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks import CHECKS
from agent.checks.derive import derive
from agent.collect.iptables import parse, whole
from agent.collect.iptables_parse import MAX_LINE, Parser, parse_text
from agent.model.iptables import IptablesState
from tests.snapshots import healthy
from tests.testbed import FIXTURES

SAVE = (FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.legacy-save.rules").read_text()
BASE = (FIXTURES / "iptables" / "node-base.rules").read_text()
LISTED = ["filter", "nat"]


def judge(text: str) -> list[str]:
    """The warning/critical findings a read of `text` gives (none when the read is not whole)."""
    parser = parse([text.encode("utf-8", "surrogateescape")], 4)
    if whole(parser, "iptables-legacy-save", LISTED) is not None:
        return []
    snap = healthy(iptables=IptablesState("legacy", "test", (parser.result(),), {"legacy": 1, "nft": 0}))
    views = derive(snap)
    return sorted(f.id for fn in CHECKS for f in fn(snap, views) if f.severity != "info")


CLEAN = set(judge(SAVE))
LINES = st.one_of(st.text(max_size=80), st.sampled_from(["COMMIT", "*nat", "*filter", ":X - [0:0]", "-A X -j Y",
                                                         "-X", "-F KUBE-SERVICES", "-I", ":", "*", "#", '-A X "']))


@settings(max_examples=150, deadline=None)
@given(st.lists(LINES, max_size=60))
def test_random_lines_never_raise_nor_judge(lines: list[str]) -> None:
    parser = Parser()
    parser.feed(lines)
    parser.result()
    assert judge("\n".join(lines)) in ([], ["iptables.rules_unparsed"]) or "*nat" in lines or "*filter" in lines


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(SAVE) - 1))
def test_a_save_cut_anywhere_is_a_failed_read_or_judges_as_before(cut: int) -> None:
    assert set(judge(SAVE[:cut])) <= CLEAN


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 50))
def test_garbage_mixed_into_a_save_fails_the_read(seed: int, share: int) -> None:
    rnd = random.Random(seed)
    lines = (SAVE + BASE).splitlines()
    garbage = max(11, len(lines) * share // 100)
    for _ in range(garbage):
        lines.insert(rnd.randrange(len(lines) + 1), "".join(rnd.choice("abc -:*#\"!\\") for _ in range(20)))
    parser = parse(["\n".join(lines).encode()], 4)
    assert whole(parser, "iptables-legacy-save", LISTED) is not None or parser.unparsed_count <= 10 + len(lines) // 100


def test_duplicate_declarations_and_huge_lines_are_linear_and_bounded() -> None:
    rs = parse_text("*nat\n" + ":KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n" * 60_000 + "COMMIT\n")
    assert rs.table("nat").chains == ("KUBE-SVC-AAAAAAAAAAAAAAAA",)
    parser = Parser()
    parser.feed(["*nat", "x" * (20 << 20), "COMMIT"])
    assert parser.overlong == 1 and len(parser.unparsed[0]) < 400  # kept as a stub, not searched
    assert whole(parser, "iptables-legacy-save", ["nat"]) == (
        f"iptables-legacy-save printed 1 line(s) over {MAX_LINE} characters (no rule is that long)")
