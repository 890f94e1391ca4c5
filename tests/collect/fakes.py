"""Fake tools for collector tests: a script written into a directory that is first on PATH."""

from __future__ import annotations

from pathlib import Path


def tool(fakebin: Path, name: str, script: str) -> None:
    path = fakebin / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


# hangs, after starting a grandchild (in its process group) whose pid it leaves in $PIDFILE
HANG_WITH_GRANDCHILD = 'sleep 300 & echo $! > "$PIDFILE"\nsleep 300\n'
