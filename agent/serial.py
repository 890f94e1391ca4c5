"""Dataclass <-> JSON-compatible values, driven by type hints.

Snapshots must round-trip through JSON (support bundles, `check --from`, replay in tests) without a
schema library: every snapshot type is a plain dataclass whose fields are primitives, lists, dicts,
optionals or other dataclasses, and this module converts both ways from the annotations alone. A file
read back is checked against the same annotations (`load_strict`): a snapshot from elsewhere is input.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

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


class SchemaError(ValueError):
    """A value that does not have the shape its type hints say: the message names where (`a.b[3].c`)."""


_PRIMITIVES: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,),
                                            type(None): (type(None),)}


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def load_strict(tp: Any, value: Any, where: str, may_omit: frozenset[type] = frozenset()) -> Any:
    """Rebuild a value of type `tp` from what `to_jsonable` produced, checking it on the way: every value
    must have its hinted type and every field must be present.

    Only fields whose default is None ("not known") and the defaulted fields of the classes in
    `may_omit` may be left out (areas added to the snapshot later default to "not collected", which is
    true of an older snapshot). Anything else missing would silently become a default that means
    something (a Source with no `ok` reads as failed), so it is an error, as is a wrong type: a replayed
    snapshot must say what was collected, or be refused.
    """
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise SchemaError(f"{where}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return load_strict(non_none[0], value, where, may_omit)
        for arg in non_none:
            if arg in _PRIMITIVES and isinstance(value, _PRIMITIVES[arg]) and not _is_bool_for_number(arg, value):
                return value
        raise SchemaError(f"{where}: {_kind(value)} is not {tp}")
    if origin in (list, set, frozenset, tuple):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {_kind(value)}")
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise SchemaError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(load_strict(a, v, f"{where}[{i}]", may_omit) for i, (a, v) in pairs)
        item = args[0] if args else Any
        return origin(load_strict(item, v, f"{where}[{i}]", may_omit) for i, v in enumerate(value))
    if origin in (dict, Mapping):  # a Mapping field is rebuilt as a dict (the class makes it read-only)
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_kind(value)}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_key(kt, k, where): load_strict(vt, v, f"{where}[{k!r}]", may_omit) for k, v in value.items()}
    cls = origin if origin is not None else tp
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_kind(value)}")
        mapping = dict(zip(getattr(cls, "__parameters__", ()), get_args(tp), strict=False))
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if not f.init or f.metadata.get("transient"):
                continue
            if f.name not in value:
                defaulted = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                if (cls in may_omit and defaulted) or (f.default is None and f.default_factory is dataclasses.MISSING):
                    continue  # a later addition that says "not known" when absent: true of an older snapshot
                raise SchemaError(f"{where}.{f.name}: missing")
            kwargs[f.name] = load_strict(_substitute(hints[f.name], mapping), value[f.name], f"{where}.{f.name}",
                                         may_omit)
        return cls(**kwargs)
    if tp in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[tp]) or _is_bool_for_number(tp, value):
            raise SchemaError(f"{where}: expected {tp.__name__}, got {_kind(value)}")
        return float(value) if tp is float else value  # type: ignore[arg-type]  # checked just above
    return value


def _key(tp: Any, key: str, where: str) -> Any:
    """A JSON object's key as its hinted type: JSON keys are strings, so an int key was written as digits."""
    if tp is int:
        if not key.lstrip("-").isdigit():
            raise SchemaError(f"{where}: key {key!r} is not a number")
        return int(key)
    return load_strict(tp, key, f"{where} key")


def _is_bool_for_number(tp: Any, value: Any) -> bool:
    """JSON true is not a number, though Python's bool is an int."""
    return tp in (int, float) and isinstance(value, bool)
