"""The `nft -t -y list table` reader (agent/collect/nftables_text.py): a listing is used only when it is
whole, and hostile text costs linear time and never raises anything but MalformedListing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from agent.collect.nftables_text import MalformedListing, add_text
from agent.model.nftables import KubeProxyTable
from tests.checks.test_nftables import NFT, items, state

OVERALL = "v1.3x_TestOverallNFTablesRules"
TEXT = (NFT / f"{OVERALL}.nft-list.txt").read_text()


def read(text: str) -> KubeProxyTable:
    table = KubeProxyTable(family="ip")
    add_text(table, text.splitlines())
    return table


def test_the_fixture_listing_gives_its_chains_and_declares_its_maps_and_sets() -> None:
    table = KubeProxyTable(family="ip")
    declared = add_text(table, TEXT.splitlines())
    assert {"service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports", "firewall-ips",
            "cluster-ips", "nodeport-ips"} <= declared
    assert table.chains == state(items(OVERALL)).tables[0].chains


def test_other_named_objects_in_the_table_are_skipped_whole() -> None:
    table = KubeProxyTable(family="ip")
    declared = add_text(table, [
        "table ip kube-proxy {", "\tflags owner", "\tct helper ftp-standard {", '\t\ttype "ftp" protocol tcp', "\t}",
        "\tcounter c1 {", "\t\tpackets 0 bytes 0", "\t}", "\tmap service-ips {",
        "\t\ttype ipv4_addr . inet_proto . inet_service : verdict", "\t}", "\tchain services {",
        "\t\tip daddr . meta l4proto . th dport vmap @service-ips", "\t}", "}"])
    assert declared == {"service-ips"}
    assert list(table.chains) == ["services"] and table.chains["services"].vmap_maps == ["service-ips"]


@pytest.mark.parametrize("text", [
    "",
    "\n\n",
    "Error: Could not process rule: Operation not permitted\n",
    "table ip6 kube-proxy {\n}\n",  # another family than the one asked for
    "table ip kube-proxy {\n}\ntable ip kube-proxy {\n}\n",  # two tables: not one listing
    "table ip kube-proxy {\n\tchain services {\n\t\tip daddr { 1.2.3.4 goto x\n\t}\n}\n",  # unclosed {
    "table ip kube-proxy {\n\tchain services {\n\t\tgoto x } }\n\t}\n}\n",  # unbalanced }
])
def test_a_listing_that_is_not_one_whole_table_is_malformed(text: str) -> None:
    with pytest.raises(MalformedListing):
        read(text)


def test_a_listing_cut_short_anywhere_is_malformed() -> None:
    """Cut at every line (and mid-line): never a smaller table that would look like missing rules."""
    lines = TEXT.splitlines(keepends=True)
    whole = len(lines) - next(i for i, ln in enumerate(reversed(lines)) if ln.strip())  # last non-blank line
    for cut in range(whole):
        half = lines[cut][: len(lines[cut]) // 2] if cut < whole - 1 else ""  # half of the last "}\n" is all of it
        for text in ("".join(lines[:cut]), "".join(lines[:cut]) + half):
            with pytest.raises(MalformedListing):
                read(text)


# Hostile text: each shape made a pattern or the line joining rescan what it had already seen.
def unclosed_brace(n: int) -> str:
    return "table ip kube-proxy {\n\tchain services {\n" + "\t\tip daddr { 10.0.0.1, 10.0.0.2,\n" * n


def closes_then_opens(n: int) -> str:
    return "table ip kube-proxy {\n\tchain services {\n\t\t" + "}" * (20 * n) + "{" * (20 * n) + "\n\t}\n}\n"


def whitespace_run(n: int) -> str:
    return "table ip kube-proxy {\n\tchain services {\n\t\tx" + " " * (40 * n) + "x\n\t}\n}\n"


def digit_run(n: int) -> str:
    return ("table ip kube-proxy {\n\tchain services {\n\t\tnumgen random mod 2 vmap { " + "1" * (40 * n)
            + " }\n\t}\n}\n")


def priorities_without_semicolon(n: int) -> str:
    return "table ip kube-proxy {\n\tchain services {\n\t\t" + "type nat hook input priority x " * n + "\n\t}\n}\n"


def numgen_prefixes(n: int) -> str:
    return ("table ip kube-proxy {\n\tchain services {\n\t\t"
            + "numgen random mod 1 vmap { " * n + "}" * n + "\n\t}\n}\n")


HOSTILE = [unclosed_brace, closes_then_opens, whitespace_run, digit_run, priorities_without_semicolon,
           numgen_prefixes]


def cpu_seconds(text: str) -> float:
    """CPU time of reading `text` (best of 2: the machine is shared), whatever the reader decides."""
    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()
        with contextlib.suppress(ValueError):  # MalformedListing
            read(text)
        best = min(best, time.process_time() - t0)
    return best


@pytest.mark.parametrize("make", HOSTILE, ids=lambda f: f.__name__)
def test_hostile_text_costs_linear_time_and_never_raises_anything_else(make: Callable[[int], str]) -> None:
    """Four times the input may cost about four times the time, not sixteen (the unclosed `{` took 21 s
    for 1.1 MB before). A ratio of CPU times in one run, not an absolute time."""
    small, large = make(15_000), make(60_000)  # ~0.6 MB and ~2.4 MB
    assert len(small) > 0.4e6 and len(large) > 3.9 * len(small)
    ratio = cpu_seconds(large) / max(cpu_seconds(small), 1e-3)
    assert ratio < 8, ratio
