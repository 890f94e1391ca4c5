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

The HeapKeeper also fixes glibc's mmap threshold (fix_mmap_threshold), so that the multi-MB tables
rebuilt by every read are given back when freed instead of raising the heap's high-water mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import time

FULL_COLLECTION_EVERY_S = 3600.0
MMAP_THRESHOLD = 512 << 10  # above the save's 256 KiB blocks (those are reused from the heap: no page faults)
M_MMAP_THRESHOLD = -3  # mallopt() parameter (glibc malloc.h)


def fix_mmap_threshold() -> bool:
    """Keep glibc's malloc from moving its mmap threshold up; True if it was set (glibc only).

    glibc serves large allocations from mmap and unmaps them when freed, but after each such free it
    raises the threshold to that size (up to 32 MiB), and from then on multi-MB tables (the dicts of 50k
    endpoint chains, 60k chain names) come from the heap, whose high-water mark stays: at 10k Services,
    peak RSS grew by 7-8 MiB over the first changed reads (10 MiB over 16 with the earlier code), and
    reached 101 MiB in the benchmark. Fixed at 512 KiB, above the save's 256 KiB blocks (which then keep
    reusing heap memory: at 128 KiB each read paid 30-60 ms of page faults for them), it was 97-100 MiB.
    Not a host change: it only concerns this process's allocator."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return False


class HeapKeeper:
    def __init__(self, full_every_s: float = FULL_COLLECTION_EVERY_S) -> None:
        self.full_every_s = full_every_s
        self.last_full = time.monotonic()
        fix_mmap_threshold()

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
