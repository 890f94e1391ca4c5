"""agent/heap.py: no collection during a run; after it, what is alive is frozen out of the collector's
sight, young garbage is collected first, and the hourly full collection frees cycles that were frozen."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.heap import HeapKeeper


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test process keeps the usual collector
    gc.enable()


def test_no_collection_during_a_run_and_its_garbage_collected_after() -> None:
    keeper = HeapKeeper()
    keeper.hold()
    assert not gc.isenabled()
    gone = weakref.ref(Node())
    for _ in range(3000):  # far more allocations than set off a young collection
        Node()
    assert gone() is not None  # no collection while held
    keeper.settle()
    assert gone() is None and gc.isenabled()


def test_young_garbage_is_collected_not_frozen() -> None:
    gone = weakref.ref(Node())
    HeapKeeper().settle()
    assert gone() is None
    assert gc.get_freeze_count() > 0


def test_a_frozen_cycle_is_freed_by_the_periodic_full_collection() -> None:
    keeper = HeapKeeper(full_every_s=3600)
    node = Node()
    ref = weakref.ref(node)
    keeper.settle()  # alive now: frozen
    del node
    gc.collect()
    assert ref() is not None  # frozen objects are never scanned for cycles...
    keeper.last_full -= 3600
    keeper.settle()
    assert ref() is None  # ...until the full collection an hour on


# Run in a fresh interpreter: a long-lived test process may have large free chunks in its heap already,
# which glibc hands out before it considers mmap at all.
_MAPPED = r"""
import ctypes, ctypes.util, sys
sys.path.insert(0, sys.argv[1])
from agent.heap import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
fixed = fix_mmap_threshold() if sys.argv[2] == "fixed" else True
large = bytearray(4 << 20)
del large  # freed: glibc would now raise its threshold to 4 MiB
mapped = []
for _ in range(3):
    before = libc.mallinfo2().hblkhd
    block = bytearray(1 << 20)
    mapped.append(libc.mallinfo2().hblkhd - before >= 1 << 20)
    del block
print(fixed and all(mapped))
"""


@pytest.mark.parametrize("threshold", ["fixed", "glibc's own"])
def test_large_blocks_stay_mapped_after_a_larger_one_was_freed(threshold: str) -> None:
    """glibc would raise its mmap threshold to the size of a freed block (here 4 MiB) and take the next
    1 MiB tables from the heap, whose high-water mark never comes down; fixed, they stay mapped."""
    out = subprocess.run([sys.executable, "-c", _MAPPED, str(Path(__file__).resolve().parents[1]), threshold],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("True" if threshold == "fixed" else "False")
