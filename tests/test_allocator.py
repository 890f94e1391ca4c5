"""The mmap threshold is fixed in a fresh interpreter (a long-lived test worker's heap says nothing)."""

from __future__ import annotations

import subprocess
import sys

from tests.testbed import REPO

CODE = """
import ctypes
from agent.allocator import fix_mmap_threshold
assert fix_mmap_threshold()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))  # glibc would now raise its threshold to 4 MiB: fixed, it does not
block = libc.malloc(1 << 20)  # above 256 KiB: its own mapping, 16 bytes after a page boundary
print(block % 4096)
"""


def test_blocks_over_the_threshold_are_mapped_even_after_a_large_free() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "16"
