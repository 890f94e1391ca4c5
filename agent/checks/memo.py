"""Remember a pure function's last result for the same argument object.

Several checks, the lag tracker and the metrics all derive the same views (expected ports, programmed
ports) from one snapshot; at 10k Services each derivation costs most of a second. Results are keyed
by the identity of the first argument (held weakly, so a cached result never keeps a snapshot alive
or answers for a new object that reuses an old id) plus the other, hashable, arguments. Callers must
treat the results as read-only.
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
        with lock:
            hit = entries.get(args)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        result = fn(obj, *args)
        with lock:
            entries[args] = (weakref.ref(obj), result)
        return result

    return wrapper
