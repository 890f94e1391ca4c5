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
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

R = TypeVar("R")


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
