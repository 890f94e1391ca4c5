"""Fuzzing the nftables readers (hypothesis, ~20 s in all): what `nft -j list map|set` and
`nft -t -y list table` might print when something is wrong. No exception but the reader's own
escapes, and malformed input never becomes a rule finding: it fails the read, or (when the damage is
in a part the reader does not use) reads exactly as the undamaged listing did, which with its
matching cluster state gives no warning or critical finding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collect.base import CollectError
from agent.collect.nftables import add_object, json_items
from agent.collect.nftables_text import MalformedListing, add_text
from agent.model.nftables import MAPS, SETS, KubeProxyTable, NftablesState
from tests.checks.test_nftables import items, nft_snapshot, state, with_comparison

FIXTURE = "v1.3x_TestOverallNFTablesRules"
LISTING = items(FIXTURE)
BASE = state(LISTING).tables[0]
META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
# Each map and set as `nft -j list map|set ip kube-proxy NAME` prints it.
OBJECTS = {obj[kind]["name"]: {"nftables": [META, {kind: obj[kind]}]}
           for obj in LISTING.items for kind in ("map", "set")
           if kind in obj and obj[kind]["name"] in (MAPS if kind == "map" else SETS)}
NAMES = sorted(OBJECTS)
# Values nft never prints anywhere this reader looks (a key, an element, a verdict, a name...).
BAD: list[Any] = [None, True, 1.5, {"?": []}, [[{}]], ""]

FUZZ = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def kind_of(name: str) -> str:
    return "map" if name in MAPS else "set"


def reread(name: str, out: str) -> KubeProxyTable | None:
    """The fixture's table with map/set `name` read from `out` as the collector reads it; None when
    the read failed. Nothing but CollectError may come out of the reader."""
    table = dataclasses.replace(BASE, maps=dict(BASE.maps), sets=dict(BASE.sets))
    try:
        add_object(table, kind_of(name), name, json_items(f"`nft -j list {kind_of(name)}`", out))
    except CollectError:
        return None
    return table


def assert_same_as_undamaged(table: KubeProxyTable) -> None:
    assert (table.maps, table.sets) == (BASE.maps, BASE.sets)
    assert with_comparison(nft_snapshot(NftablesState(nft_version="1.0.6", tables=[table]),
                                        with_cluster=FIXTURE)) == set()


def test_the_undamaged_listings_read_back_as_the_fixture() -> None:
    for name in NAMES:
        table = reread(name, json.dumps(OBJECTS[name]))
        assert table is not None
        assert_same_as_undamaged(table)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document, as the keys and indexes leading to it."""
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(paths(v, (*at, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(paths(v, (*at, i)))
    return out


def replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {k: replaced(v, rest, new) if k == head else v for k, v in doc.items()}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(doc)]


@FUZZ
@given(st.data())
def test_a_value_nft_never_prints_fails_the_read_or_changes_nothing(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    doc = OBJECTS[name]
    path = data.draw(st.sampled_from(paths(doc)))
    bad = data.draw(st.sampled_from(BAD))
    table = reread(name, json.dumps(replaced(doc, path, bad)))
    if table is not None:  # the damage was where the reader does not look (a handle, a type, metainfo)
        assert_same_as_undamaged(table)


@FUZZ
@given(st.data())
def test_a_listing_cut_short_fails_the_read(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    out = json.dumps(OBJECTS[name], indent=data.draw(st.sampled_from([None, 2])))
    cut = data.draw(st.integers(0, len(out) - 1))
    assert reread(name, out[:cut]) is None


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=20)


@FUZZ
@given(st.sampled_from(NAMES), st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
    JSON_VALUES.map(json.dumps),
    JSON_VALUES.map(lambda v: json.dumps({"nftables": [META, v]})),
    st.sampled_from(NAMES).flatmap(lambda n: JSON_VALUES.map(
        lambda v: json.dumps({"nftables": [{kind_of(n): {"name": n, "family": "ip", "table": "kube-proxy",
                                                         "elem": v}}]}))),
))
def test_anything_printed_only_fails_the_read_or_is_read(name: str, out: str) -> None:
    table = reread(name, out)
    if table is None:
        return
    # accepted: a well-formed listing of that very object, each element a key (and verdict) nft prints
    if name in SETS:
        assert all(isinstance(e, str) for e in table.sets[name])
    else:
        assert all(all(isinstance(k, str) for k in e.key) and e.verdict in ("goto", "jump", "accept", "drop",
                   "return", "continue") and (e.target is None) == (e.verdict not in ("goto", "jump"))
                   for e in table.maps[name])


TEXT = (LISTING.text if LISTING.text.endswith("\n") else LISTING.text + "\n")


def read_text(text: str) -> KubeProxyTable:
    table = KubeProxyTable(family="ip")
    add_text(table, text.splitlines())
    return table


@FUZZ
@given(st.text(max_size=2000))
def test_any_text_is_read_or_malformed(text: str) -> None:
    with contextlib.suppress(MalformedListing):
        read_text(text)


@FUZZ
@given(st.data())
def test_an_unbalanced_brace_anywhere_makes_the_listing_malformed(data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(TEXT)))
    brace = data.draw(st.sampled_from("{}"))
    with pytest.raises(MalformedListing):
        read_text(TEXT[:at] + brace + TEXT[at:])


@FUZZ
@given(st.data())
def test_a_text_listing_cut_short_is_malformed(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(TEXT.rstrip()) - 1))
    with pytest.raises(MalformedListing):
        read_text(TEXT[:cut])
