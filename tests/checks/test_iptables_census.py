"""The census of a table's chains (agent/checks/iptables_census.py) is the same whether the parser counted
the chain prefixes while declaring them (Table.prefixes) or the census counts the names itself; so is
the count of KUBE-* chains."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from agent.checks.iptables_census import LEGACY_PREFIXES, USERSPACE_CHAINS, census
from agent.iptables_parse import parse_save, parse_text
from agent.iptables_reuse import PieceCache
from agent.model.iptables import COUNTED_PREFIXES, RuleSet
from bench.gen_iptables import generate
from tests.rulesets import apply_partial, read
from tests.testbed import FIXTURES

LEFTOVERS = ":KUBE-PORTALS-HOST - [0:0]\n:KUBE-NODEPORT-CONTAINER - [0:0]\n:KUBE-XLB-AAAAAAAAAAAAAAAA - [0:0]\n"


def test_the_counted_prefixes_cover_what_the_census_looks_for() -> None:
    assert all(c.startswith(COUNTED_PREFIXES) for c in USERSPACE_CHAINS)
    assert set(LEGACY_PREFIXES) <= set(COUNTED_PREFIXES)
    assert not "KUBE-NODEPORTS".startswith(COUNTED_PREFIXES)


def _texts() -> list[str]:
    text = apply_partial("".join(generate(200, 2)), "")
    nat = text.index(":", text.index("*nat"))
    return [*(p.read_text() for p in sorted((FIXTURES / "iptables").glob("*.rules"))), text,
            text[:nat] + LEFTOVERS + text[nat:]]


def _reused(text: str) -> RuleSet:
    return read(PieceCache(), text, lines_per_block=50)


@pytest.mark.parametrize("parse", [parse_text, lambda text: parse_save(text.splitlines()), _reused])
def test_a_counted_census_equals_one_that_counts_the_names(parse: Callable[[str], RuleSet]) -> None:
    counted = 0
    for text in _texts():
        rs = parse(text)
        for table in rs.tables.values():
            counted += table.prefixes is not None
            assert census(table) == census(dataclasses.replace(table, prefixes=None)), table.name
        scanned = {name: dataclasses.replace(table, prefixes=None) for name, table in rs.tables.items()}
        assert rs.kube_chain_count() == dataclasses.replace(rs, tables=scanned).kube_chain_count()
    assert counted > 20  # the parser did count (and the last text has every kind of leftover)
    leftover = parse(_texts()[-1]).table("nat")
    assert census(leftover).userspace == ("KUBE-NODEPORT-CONTAINER", "KUBE-PORTALS-HOST")
    assert census(leftover).legacy == ("KUBE-XLB-AAAAAAAAAAAAAAAA",)


def test_chains_deleted_are_not_counted_on() -> None:
    text = ("*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]\n"
            "-X KUBE-SVC-AAAAAAAAAAAAAAAA\nCOMMIT\n")
    table = parse_text(text).table("nat")
    assert table.prefixes is None and census(table).declared["KUBE-SVC-"] == 1
