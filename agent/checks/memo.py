"""Remember a pure function's results for the argument objects that are still alive.

Several checks, the lag tracker and the metrics all derive the same views (expected ports, programmed
ports) from one snapshot; at 10k Services each derivation costs most of a second. And the iptables
reader gives back the very same RuleSet object while the rules are unchanged (agent/iptables_reuse.py),
so a view derived from it once serves every later check until the rules change. Results are keyed by
the identity of the first argument plus the other, hashable, arguments; the first argument is held
weakly, so a cached result never keeps it alive, and a result is dropped once its object is gone (an
id can be reused by a new object; the weak reference tells the two apart). Several live objects keep
their own results: the IPv4 and IPv6 rule sets do not push each other out. Callers must treat the
results as read-only.

Views that are brought up to date from one RuleSet to the next keep what they derived last; that state
is registered here (`carried`), so a test can derive afresh with all of it set aside (`nothing_carried`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

R = TypeVar("R")
S = TypeVar("S", bound=dict[Any, Any])

# State views carry from one RuleSet to the next (per IP family: what they derived last, to bring it up
# to date from RuleSet.changes). Registered so that it can be set aside as a whole (tests deriving afresh).
_carried: list[dict[Any, Any]] = []


def carried(state: S) -> S:
    """Register a view's carried state (a dict the view only ever assigns items of)."""
    _carried.append(state)
    return state


@contextlib.contextmanager
def nothing_carried() -> Iterator[None]:
    """Within: every view derives afresh, as on a first read. The carried state is put back after."""
    saved = [dict(state) for state in _carried]
    for state in _carried:
        state.clear()
    try:
        yield
    finally:
        for state, before in zip(_carried, saved, strict=True):
            state.clear()
            state.update(before)


def by_identity(fn: Callable[..., R]) -> Callable[..., R]:
    lock = threading.Lock()
    entries: dict[tuple[Hashable, ...], tuple[weakref.ref[Any], R]] = {}

    @functools.wraps(fn)
    def wrapper(obj: Any, *args: Hashable) -> R:
        key = (id(obj), *args)
        with lock:
            hit = entries.get(key)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        result = fn(obj, *args)
        with lock:
            for stale in [k for k, (ref, _) in entries.items() if ref() is None]:
                del entries[stale]
            entries[key] = (weakref.ref(obj), result)
        return result

    return wrapper
