"""The census of a table's chains (Table.census): counts per kube-proxy prefix, and leftovers."""

from __future__ import annotations

from agent.collect.iptables_parse import parse_text
from bench.gen_iptables import generate

LEFTOVERS = ":KUBE-PORTALS-HOST - [0:0]\n:KUBE-NODEPORT-CONTAINER - [0:0]\n:KUBE-XLB-AAAAAAAAAAAAAAAA - [0:0]\n"


def test_counts_and_leftovers() -> None:
    text = "".join(generate(200, 2))
    nat = text.index(":", text.index("*nat"))
    table = parse_text(text[:nat] + LEFTOVERS + text[nat:]).table("nat")
    census = table.census
    assert census.declared["KUBE-SVC-"] == sum(c.startswith("KUBE-SVC-") for c in table.chains) > 150
    assert census.declared["KUBE-EXT-"] == sum(c.startswith("KUBE-EXT-") for c in table.chains) > 0
    assert census.kube == sum(c.startswith("KUBE-") for c in table.chains)
    assert census.userspace == ("KUBE-NODEPORT-CONTAINER", "KUBE-PORTALS-HOST")
    assert census.legacy == ("KUBE-XLB-AAAAAAAAAAAAAAAA",)


def test_chains_deleted_are_not_counted() -> None:
    text = ("*nat\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]\n"
            "-X KUBE-SVC-AAAAAAAAAAAAAAAA\nCOMMIT\n")
    assert parse_text(text).table("nat").census.declared["KUBE-SVC-"] == 1
