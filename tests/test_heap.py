"""agent/heap.py: no collection during a run; after it, what is alive is frozen out of the collector's
sight, young garbage is collected first, and the hourly full collection frees cycles that were frozen."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import weakref
from collections.abc import Iterator

import pytest

from agent.heap import HeapKeeper, fix_mmap_threshold


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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    """glibc would raise its mmap threshold to the size of a freed block (here 4 MiB) and take the next
    1 MiB tables from the heap, whose high-water mark never comes down; fixed, they stay mapped."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    assert fix_mmap_threshold()
    large = bytearray(4 << 20)
    del large  # freed: glibc would now raise its threshold to 4 MiB
    for _ in range(3):
        before = libc.mallinfo2().hblkhd
        block = bytearray(1 << 20)
        assert libc.mallinfo2().hblkhd - before >= 1 << 20
        del block
