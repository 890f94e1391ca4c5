"""Reading a file that a process names (its --config), under that process's root, with care.

The rules (docs/security.md, "Files a process names"):
- Only the agent's own credentials open it: no helper, no capability borrowed. In the DaemonSet (no
  CAP_SYS_PTRACE, no CAP_DAC_*) the kernel refuses /proc/<pid>/root of kube-proxy outright.
- Symlinks resolve inside `root` (/proc/<pid>/root or the host root mount), as they would for the
  process: an absolute link target must not escape to the agent's own filesystem.
- Only a regular file owned by `owner` (the process's uid: root, since only root processes are trusted)
  that neither group nor others may write: a file someone else could have written says nothing
  about what kube-proxy or kubelet was told. FIFOs and devices are never opened for reading.
- At most MAX_CONFIG_BYTES are read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.collect.component_config import MAX_CONFIG_BYTES

MAX_LINKS = 40  # the kernel's own limit on symlinks in one lookup


class Unreadable(Exception):
    """Why the file was not read: one sentence that quotes nothing of its content."""


def resolve_in(root: Path, path: str) -> Path:
    """`path` as seen with `root` as /, symlinks followed inside `root`; the last component unresolved
    only if it is not a link. Raises OSError as os.lstat/os.readlink do (ENOENT, EACCES)."""
    pending = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = root.joinpath(*done, part)
        if stat.S_ISLNK(os.lstat(here).st_mode):
            links += 1
            if links > MAX_LINKS:
                raise Unreadable("too many levels of symbolic links")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
        else:
            done.append(part)
    return root.joinpath(*done)


def read_named_file(root: Path, path: str, owner: int) -> str:
    """The text of `path` under `root`, when the rules above allow; Unreadable otherwise."""
    try:
        real = resolve_in(root, path)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("not a regular file")
        if st.st_uid != owner:
            raise Unreadable(f"owned by uid {st.st_uid}, not by the process's uid {owner}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise Unreadable(f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})")
        if st.st_size > MAX_CONFIG_BYTES:
            raise Unreadable("larger than 1 MiB")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")
