"""Fuzzed input to the two loaders a user feeds by hand: `check --from SNAPSHOT` and `--cluster-state FILE`.

Whatever the file holds, the loader either gives a value or raises its own one-line error (SchemaError,
CollectError), never another exception; and a cluster state it accepts never makes a check crash.
Bounded so the whole module stays within a few seconds in CI.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collect.base import CollectError
from agent.collect.cluster import FileProvider
from agent.model import Snapshot, Source
from agent.serial import SchemaError
from tests.checks.helpers import run_checks
from tests.snapshots import healthy
from tests.testbed import FIXTURES

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=20)
CLUSTER = json.loads((FIXTURES / "iptables" / "v1.3x_TestOverallIPTablesRules.cluster.json").read_text())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


def mutated(base: Any) -> st.SearchStrategy[Any]:
    """`base` with one subtree replaced by arbitrary JSON, or one key removed."""
    paths = _paths(base)

    @st.composite
    def strategy(draw: st.DrawFn) -> Any:
        path = draw(st.sampled_from(paths))
        if path and draw(st.booleans()) and isinstance(parent := _at(base, path[:-1]), dict):
            out = copy.deepcopy(base)
            del _at(out, path[:-1])[path[-1]]
            return out if parent is not None else base
        return _replace(base, path, draw(JSON))

    return strategy()


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


SNAPSHOT = json.loads(healthy().to_json())


@FUZZ
@given(st.one_of(JSON, mutated(SNAPSHOT)))
def test_snapshot_loader_gives_a_snapshot_or_a_schema_error(raw: Any) -> None:
    try:
        snap = Snapshot.from_json(json.dumps(raw))
    except SchemaError as exc:
        assert "\n" not in str(exc)
        return
    crashed = [f.evidence for f in run_checks(snap) if f.id == "agent.check_failed"]
    assert crashed == []  # a snapshot that loads is one the checks can judge


@FUZZ
@given(st.one_of(JSON, mutated(CLUSTER)))
def test_cluster_state_loader_gives_a_state_or_a_collect_error(tmp_path: Path, raw: Any) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(raw))
    try:
        state = FileProvider(path, "test-node").state()
    except CollectError as exc:
        assert "\n" not in str(exc)
        return
    found = run_checks(healthy(cluster=Source("cluster", ok=True, data=state)))
    assert not [f for f in found if f.id == "agent.check_failed"]
