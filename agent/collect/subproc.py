"""Every child process a collector starts, bounded in time, in output and in what it leaves behind.

A read-only tool (`nft`, `ipset`) can hang on a lock or a wedged kernel, print far more than any real
answer, or spawn helpers of its own. So each child runs in its own session (hence its own process
group), under LC_ALL=C, with stdin closed; stdout is read as it arrives up to a per-call cap (past it
the read has failed: nothing real is that large), stderr keeps only its first line and a small tail;
on time-out, on the cap, or when the caller stops reading, the WHOLE group is killed, so no grandchild
outlives the read. The group is killed while its leader is still unreaped (its pid cannot have been
reused), and is killed once more after a normal exit to take any straggler the tool left behind.

`stream` is the general form (every other entry point is made from it): raw stdout pieces of up to
`block` bytes (a pipe as large, when asked, so a fast tool runs ahead while the reader works), an
optional pause after a short read (so a tool writing a large listing fills the pipe instead of waking
the reader at every 4 kB it writes), and the child's CPU time in `Exited` once it is reaped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from agent.collect.base import Absent, CollectError

MIB = 1 << 20
STDOUT_CAP = 64 * MIB  # default per call; callers that expect more (a whole table listing) say so
STDERR_TAIL = 64 * 1024
_READ = 64 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), spelled out for Pythons that lack the constant


@dataclass
class Exited:
    """What `stream` learnt of its child once it was reaped."""

    cpu_s: float = 0.0  # user + system CPU seconds


def stream(argv: list[str], timeout_s: float, *, max_stdout: int = STDOUT_CAP, block: int = _READ,
           nap_s: float = 0.0, exited: Exited | None = None) -> Generator[bytes, None, None]:
    """Run a read-only command and yield its stdout as it arrives, in pieces of at most `block` bytes cut
    anywhere (a line may span two). `nap_s`: a pause after a read shorter than half a block. The failures
    of run_command, raised from the iterator after the pieces read so far; `exited` gets the child's CPU."""
    return _chunks(argv, timeout_s, max_stdout, block, nap_s, exited)


def run_command(argv: list[str], timeout_s: float, *, max_stdout: int = STDOUT_CAP) -> str:
    """Run a read-only command and return its whole stdout (UTF-8, undecodable bytes replaced).
    Raises Absent when the tool is not installed, CollectError on a non-zero exit (with the first
    stderr line), a time-out or output beyond `max_stdout`."""
    return b"".join(stream(argv, timeout_s, max_stdout=max_stdout)).decode("utf-8", "replace")


def stream_lines(argv: list[str], timeout_s: float, *, max_stdout: int = STDOUT_CAP) -> Iterator[str]:
    """Like run_command, but yields stdout line by line (without the newline) as it arrives, so a large
    listing is never held whole. A failure raises from the iterator, after the lines read so far."""
    partial: list[bytes] = []  # a line split across reads: joined once, when its newline arrives
    for chunk in stream(argv, timeout_s, max_stdout=max_stdout):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            if partial:
                partial.append(piece)
                piece = b"".join(partial)
                partial.clear()
            yield piece.decode("utf-8", "replace")
            start = end + 1
        if start < len(chunk):
            partial.append(chunk[start:])
    if partial:
        yield b"".join(partial).decode("utf-8", "replace")


class _Stderr:
    """The first line (for the error message) and the last STDERR_TAIL bytes, never more."""

    def __init__(self) -> None:
        self.head = b""
        self.tail = bytearray()

    def add(self, data: bytes) -> None:
        if len(self.head) < 1024:
            self.head += data[:1024 - len(self.head)]
        self.tail += data
        if len(self.tail) > STDERR_TAIL:
            del self.tail[:len(self.tail) - STDERR_TAIL]

    def first_line(self) -> str:
        lines = [ln.strip() for ln in self.head.decode("utf-8", "replace").splitlines() if ln.strip()]
        text = lines[0] if lines else "no message"
        return "".join(c if c.isprintable() else "?" for c in text[:300])


def _command(argv: list[str]) -> str:
    return " ".join(argv)[:200]


def _chunks(argv: list[str], timeout_s: float, max_stdout: int, block: int, nap_s: float,
            exited: Exited | None) -> Generator[bytes, None, None]:
    deadline = time.monotonic() + max(timeout_s, 0.0)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise Absent(f"{argv[0]} is not installed") from exc
    except PermissionError as exc:
        raise CollectError(f"{argv[0]}: permission denied") from exc
    assert proc.stdout is not None and proc.stderr is not None
    err = _Stderr()
    sel = selectors.DefaultSelector()
    if block > _READ:
        with contextlib.suppress(OSError):  # a pipe as large as a read (the kernel may refuse: then 64 kB)
            fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, block)
    try:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        total = 0
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise CollectError(f"{_command(argv)} did not finish within {timeout_s:g}s (killed)")
            for key, _ in sel.select(left):
                data = os.read(key.fd, block)
                if not data:
                    sel.unregister(key.fileobj)
                elif key.data == "err":
                    err.add(data)
                else:
                    total += len(data)
                    if total > max_stdout:
                        raise CollectError(f"{_command(argv)} printed more than {max_stdout // MIB or 1} MiB "
                                           "(killed): not a listing this reader trusts")
                    yield data
                    if len(data) < block // 2 and nap_s:
                        time.sleep(nap_s)
        _wait_exited(proc, deadline, argv, timeout_s)
    finally:
        sel.close()
        cpu_s = _kill_group(proc)
        if exited is not None:
            exited.cpu_s = cpu_s
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != 0:
        raise CollectError(f"{_command(argv)} exited {proc.returncode}: {err.first_line()}")


def _wait_exited(proc: subprocess.Popen[bytes], deadline: float, argv: list[str], timeout_s: float) -> None:
    """Wait until the leader has exited, without reaping it (WNOWAIT): its pid keeps naming the group
    until _kill_group has swept it. Its output is closed, so this is normally at once."""
    pause = 0.001
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            raise CollectError(f"{_command(argv)} did not finish within {timeout_s:g}s (killed)")
        time.sleep(pause)  # the child closed its output and is exiting: a few ms at most
        pause = min(pause * 2, 0.02)


def _kill_group(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL everything in the child's process group (itself included unless it has exited), then reap it;
    its CPU seconds."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # a member we may not signal (setuid): at least the leader goes
        proc.kill()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped already
        proc.wait()
        return 0.0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float(usage.ru_utime + usage.ru_stime)
