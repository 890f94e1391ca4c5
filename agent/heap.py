"""Keep Python's cyclic garbage collector off the long-lived rule data.

At 10k Services the agent holds about a million objects that live from one read to the next (parsed
pieces, ladders, chain names). Every full pass of the collector walks all of them: about 0.1 s, and a
read that changes a few Services allocates enough to set one off. That is as much as the whole rest of
such a read costs beyond the save itself (bench/bench_iptables.py). None of that data has reference
cycles; reference counting frees it.

So after each check run, what is alive is moved out of the collector's sight (gc.freeze: it is then
freed by reference counting as before, only never scanned for cycles), and young garbage is collected
first so that it is not frozen. A cycle made of frozen objects would be kept until the next unfreeze:
once an hour everything is unfrozen and fully collected, which bounds that to an hour's worth.

During a run the collector is off altogether: a first read allocates a million objects, and the passes
that set off (several over the whole growing heap) cost about 0.1 s; a changed read still paid some
20 ms for a hundred passes over its young objects. Whatever cyclic garbage a run makes is collected
when it ends, by settle().
"""

from __future__ import annotations

import gc
import time

FULL_COLLECTION_EVERY_S = 3600.0


class HeapKeeper:
    def __init__(self, full_every_s: float = FULL_COLLECTION_EVERY_S) -> None:
        self.full_every_s = full_every_s
        self.last_full = time.monotonic()

    def hold(self) -> None:
        """Call as a check run starts: no collection until settle()."""
        gc.disable()

    def settle(self) -> None:
        """Call when a check run has ended, when what is alive is what the next run builds on."""
        now = time.monotonic()
        if now - self.last_full >= self.full_every_s:
            gc.unfreeze()
            gc.collect()
            self.last_full = now
        else:
            gc.collect(1)  # the young generations only: cheap, and what is garbage is not frozen
        gc.freeze()
        gc.enable()
