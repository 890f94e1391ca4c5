"""Run inside the DaemonSet's confinement (tests/deploy/test_capabilities.py): what can this process do?

Prints JSON: whether it could open kube-proxy's file through /proc/<pid>/root, its exe and environ,
which mounts are writable, and which of a list of writes outside its own tmpfs succeeded.
Usage: confined_probe.py PID PATH_IN_PROCESS TMPFS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def attempt(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return "ok"


def create(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.unlink(path)


def open_for_write(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # nothing is written: opening is the test


def main() -> None:
    pid, inside, tmpfs = sys.argv[1], sys.argv[2], sys.argv[3]
    # the visible mount at each mount point: a mount stacked on another comes later in mountinfo
    visible = {m[4]: m for m in (line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines())}
    writable = sorted(mp for mp, m in visible.items() if "rw" in m[5].split(",") and mp != tmpfs
                      and not mp.startswith(tmpfs + "/"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    writes = {
        "create in /": attempt(lambda: create("/svcd-probe")),
        "create in /etc": attempt(lambda: create("/etc/svcd-probe")),
        "create in /var/tmp": attempt(lambda: create("/var/tmp/svcd-probe")),
        "create in /dev/shm": attempt(lambda: create("/dev/shm/svcd-probe")),
        "create in the repository": attempt(lambda: create(os.path.join(repo, "svcd-probe"))),
        "open a root-owned file for writing": attempt(lambda: open_for_write(os.path.join(repo, "pyproject.toml"))),
        "open a sysctl for writing": attempt(lambda: open_for_write("/proc/sys/net/ipv4/ip_forward")),
        "open kube-proxy's file for writing": attempt(
            lambda: open_for_write(f"/proc/{pid}/root/{inside.lstrip('/')}")),
    }
    out = {
        "uid": os.getuid(), "euid": os.geteuid(),
        "read kube-proxy's file via /proc/<pid>/root": attempt(
            lambda: Path(f"/proc/{pid}/root/{inside.lstrip('/')}").read_bytes()),
        "readlink /proc/<pid>/exe": attempt(lambda: os.readlink(f"/proc/{pid}/exe")),
        "read /proc/<pid>/environ": attempt(lambda: Path(f"/proc/{pid}/environ").read_bytes()),
        "writable mounts besides the tmpfs": writable,
        "writes outside the tmpfs": writes,
        "create in the tmpfs": attempt(lambda: create(os.path.join(tmpfs, "svcd-probe"))),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
