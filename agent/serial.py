"""Dataclass <-> JSON-compatible values, driven by type hints.

Snapshots must round-trip through JSON (support bundles, `check --from`, replay in tests) without a
schema library: every snapshot type is a plain dataclass whose fields are primitives, lists, dicts,
optionals or other dataclasses, and this module converts both ways from the annotations alone.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def to_jsonable(obj: Any) -> Any:
    """Turn a dataclass tree into dicts/lists/primitives."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("transient")}  # process-local links between objects
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(v) for v in obj)
    if isinstance(obj, Mapping):  # dicts, and the read-only views of frozen snapshot classes
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        hints = get_type_hints(cls)
        _HINTS_CACHE[cls] = hints
    return hints


def _substitute(tp: Any, mapping: dict[Any, Any]) -> Any:
    if isinstance(tp, TypeVar):
        return mapping.get(tp, Any)
    origin = get_origin(tp)
    if origin is None or not mapping:
        return tp
    args = tuple(_substitute(a, mapping) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return Union[args]  # noqa: UP007 - rebuilt at run time from a tuple
    return origin[args]


def from_jsonable(tp: Any, value: Any) -> Any:
    """Rebuild a value of type `tp` from what `to_jsonable` produced."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return from_jsonable(non_none[0], value) if len(non_none) == 1 else value
    if origin in (list, set, frozenset):
        (item,) = get_args(tp) or (Any,)
        return origin(from_jsonable(item, v) for v in value)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in value)
        return tuple(from_jsonable(a, v) for a, v in zip(args, value, strict=True))
    if origin in (dict, Mapping):  # a Mapping field is rebuilt as a dict (the class makes it read-only)
        kt, vt = get_args(tp) or (Any, Any)
        return {from_jsonable(kt, k): from_jsonable(vt, v) for k, v in value.items()}
    cls = origin if origin is not None else tp
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        mapping = dict(zip(getattr(cls, "__parameters__", ()), get_args(tp), strict=False))
        hints = _hints(cls)
        kwargs = {
            f.name: from_jsonable(_substitute(hints[f.name], mapping), value[f.name])
            for f in dataclasses.fields(cls)
            if f.name in value and f.init
        }
        return cls(**kwargs)
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is int and isinstance(value, str):
        return int(value)
    return value
