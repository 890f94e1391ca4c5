"""iptables: which backend kube-proxy writes through, and what that backend holds (the guide's
`iptables-save | grep <service>` step).

Read-only and side-effect free:
- never `iptables -L/-S` (they take the xtables lock), only `ip(6)tables-<backend>-save`;
- never `iptables-legacy-save -t TABLE` for a table that does not exist: that makes the kernel create
  it (and every later iptables-nft warn about legacy tables), so /proc/net/ip_tables_names is read
  first and legacy tables are only ever read when listed there;
- iptables-nft-save reads and creates nothing (and fetches the whole nf_tables ruleset whatever `-t`
  says, so the nft side is read once, in full).

The backend is found as kube-proxy's image finds it (kubernetes-sigs/iptables-wrappers): kubelet's
KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY chain in the nft mangle table, else in the legacy one, else
the backend with more rules (nft on a tie). The save output is handled while it streams in (a reader
thread drains the pipe), and what the previous read already parsed is reused piece by piece
(agent/iptables_reuse.py): rules that did not change since the last read cost a hash, not a parse.
Slow reads are spaced out so that reading never takes more than about 5% of a core on average.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.collect.base import Absent, CollectContext, CollectError
from agent.iptables_parse import Parser
from agent.iptables_reuse import PieceCache, ReusingParser
from agent.model.iptables import IptablesState, RuleSet

CPU_BUDGET = 0.05  # share of one core that iptables reads may use on average
PIPE_SIZE = 1 << 20  # lets the save run ahead while a block is parsed
BLOCK = 1 << 18  # what is read and handed on at a time: small enough that buffers stay small
NAP_S = 0.003  # after a short read: the pipe fills meanwhile (see drain_stdout)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), spelled out for Pythons that lack the constant
HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")  # kubelet's, in the mangle table of its backend
_HINT = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) ", re.M)
BACKENDS = ("legacy", "nft")


@dataclass
class SaveResult:
    cpu_s: float = 0.0  # the save child's CPU time plus the parsing done in this thread


def _legacy_tables(ctx: CollectContext, family: int) -> list[str]:
    """Tables the legacy backend has (without creating any): /proc/net/ip(6)_tables_names."""
    path = ctx.cfg.procfs("net", "ip6_tables_names" if family == 6 else "ip_tables_names")
    try:
        return [t for t in Path(path).read_text().split() if t]
    except FileNotFoundError:  # ip(6)_tables not loaded: no legacy table exists
        return []


def _tool(family: int, backend: str) -> str:
    return f"{'ip6tables' if family == 6 else 'iptables'}-{backend}-save"


@dataclass
class RunningSave:
    """A save command started, its output drained into a bounded queue by a thread."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    chunks: queue.Queue[bytes | None]
    errors: list[bytes]
    stop: threading.Event  # set when the reading side gives up: the drain thread must not block on put
    readers: list[threading.Thread]

    def abandon(self) -> None:
        _kill(self.proc, self.stop)


def start_save(argv: list[str]) -> RunningSave:
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                env={**os.environ, "LC_ALL": "C"}, start_new_session=True)
    except FileNotFoundError as exc:
        raise Absent(f"{argv[0]} is not installed") from exc
    assert proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(OSError):  # a bigger pipe lets the save run ahead while a block is parsed
        fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    # Bounded: when parsing falls behind, the save waits on a full pipe instead of its whole output
    # piling up here (2 blocks, besides the pipe).
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    errors: list[bytes] = []
    stop = threading.Event()

    def drain_stdout() -> None:
        fd = proc.stdout.fileno() if proc.stdout else -1
        while not stop.is_set():
            data = os.read(fd, BLOCK)
            while not stop.is_set():
                try:
                    chunks.put(data or None, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if not data:
                return
            if len(data) < BLOCK // 2:
                # A reader blocked on the pipe is woken by each 4 kB the save writes (its stdio buffer): 6k
                # wake-ups for 25 MB, which made the save 10-20% slower than into /dev/null. Not waiting on
                # the pipe while it fills (the pipe holds 1 MB, 10 ms of output) takes it in a few large reads.
                stop.wait(NAP_S)

    def drain_stderr() -> None:
        errors.append(proc.stderr.read() if proc.stderr else b"")

    readers = [threading.Thread(target=f, name=f"iptables-save-{f.__name__}", daemon=True)
               for f in (drain_stdout, drain_stderr)]
    for t in readers:
        t.start()
    return RunningSave(argv, proc, chunks, errors, stop, readers)


def stream_save(argv: list[str], on_block: Callable[[bytes], object], deadline: float) -> SaveResult:
    """Run a save command and hand its stdout to `on_block(data)` in blocks of whole lines while it runs.
    Kills the child at `deadline` (time.monotonic()) and raises CollectError; a non-zero exit raises too."""
    return consume_save(start_save(argv), on_block, deadline)


def consume_save(run: RunningSave, on_block: Callable[[bytes], object], deadline: float) -> SaveResult:
    """stream_save for a save already started (see `start_save`)."""
    started_cpu = time.thread_time()
    argv, proc, chunks = run.argv, run.proc, run.chunks
    tail, done = b"", False
    try:
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise queue.Empty
            first = chunks.get(timeout=remaining)
            done = first is None
            data = bytearray(first or b"")
            while not done and len(data) < BLOCK:  # take all that has arrived: fewer, larger blocks parse faster
                try:
                    more = chunks.get_nowait()
                except queue.Empty:
                    break
                done = more is None
                data += more or b""
            cut = data.rfind(b"\n")
            if cut < 0:
                tail += data
                continue
            view = memoryview(data)
            block = tail + view[:cut + 1]  # one copy, not two
            tail = bytes(view[cut + 1:])
            view.release()
            on_block(block)
        if tail:
            on_block(tail + b"\n")
    except queue.Empty:
        run.abandon()
        raise CollectError(f"{' '.join(argv)} did not finish in time (killed)") from None
    except BaseException:
        run.abandon()
        raise
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in run.readers:
        t.join(1)
    if proc.returncode != 0:
        message = (b"".join(run.errors).decode("utf-8", "replace").strip().splitlines() or ["no message"])[0]
        raise CollectError(f"{' '.join(argv)} exited {proc.returncode}: {message}")
    cpu = usage.ru_utime + usage.ru_stime + time.thread_time() - started_cpu
    return SaveResult(cpu_s=cpu)


def _kill(proc: subprocess.Popen[bytes], stop: threading.Event) -> None:
    """Kill the save and anything it started (its own session), so its pipes close and the drain
    threads end."""
    stop.set()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    proc.wait()


@dataclass
class _Saves:
    """The save commands of one read, sharing its deadline and adding up their CPU cost."""

    deadline: float  # time.monotonic()
    cpu_s: float = 0.0

    # (family, backend) -> what the last read left (None: nothing is kept, for a one-shot check)
    caches: dict[tuple[int, str], PieceCache] | None = None
    parsed: set[tuple[int, str]] = field(default_factory=set)  # the (family, backend) pairs parsed in this read
    started: dict[tuple[int, str], RunningSave] = field(default_factory=dict)  # saves started ahead

    def start_ahead(self, family: int, backend: str) -> None:
        """Start this save now, to be parsed later: it runs while the backend is being detected."""
        self.started[family, backend] = start_save([_tool(family, backend)])

    def abandon(self) -> None:
        """Kill saves started ahead and not used (the backend turned out to be another, or the read failed)."""
        for run in self.started.values():
            run.abandon()
        self.started.clear()

    def _stream(self, family: int, backend: str, on_block: Callable[[bytes], object]) -> None:
        run = self.started.pop((family, backend), None) or start_save([_tool(family, backend)])
        self.cpu_s += consume_save(run, on_block, self.deadline).cpu_s

    def text(self, argv: list[str]) -> str:
        parts: list[bytes] = []
        self.cpu_s += stream_save(argv, parts.append, self.deadline).cpu_s
        return b"".join(parts).decode("utf-8", "replace")

    def parse(self, family: int, backend: str) -> RuleSet:
        self.parsed.add((family, backend))
        if self.caches is None:  # read once: the plain parser, with no pieces to remember
            plain = Parser(family)
            self._stream(family, backend, lambda data: plain.feed_block(data.decode("utf-8", "replace")))
            return plain.result()
        cache = self.caches.setdefault((family, backend), PieceCache())
        reusing = ReusingParser(cache, family)
        try:
            self._stream(family, backend, reusing.feed_block)
        except BaseException:
            self.caches.pop((family, backend), None)  # half a read is no base for the next
            raise
        return reusing.result()

    def count_kube_chains(self, family: int, backend: str) -> int:
        count = 0

        def on_block(data: bytes) -> None:
            nonlocal count
            count += data.count(b"\n:KUBE-") + (1 if data.startswith(b":KUBE-") else 0)

        self._stream(family, backend, on_block)
        return count


@dataclass
class IptablesReader:
    """The iptables collector. Holds the pacing state: when a read costs more CPU than the budget
    allows at the run interval, the next reads return the last result (its `read_at` says when it was
    taken) or the last error, until enough time has passed."""

    budget: float = CPU_BUDGET
    last: IptablesState | None = None
    last_error: str | None = None
    next_read: float = 0.0  # time.monotonic() before which the last result is reused
    costs: list[float] = field(default_factory=list)  # CPU seconds of recent reads (for tests and metrics)
    # (family, backend) -> what the last read of it left for the next (agent/iptables_reuse.py); it also
    # holds that read's RuleSet, so a read that finds the rules unchanged returns the same objects
    caches: dict[tuple[int, str], PieceCache] = field(default_factory=dict)
    reuse: bool = True  # False for a one-shot check: remembering pieces would cost and serve nothing
    backend: str | None = None  # the backend the last read found: its save is started before detection

    def collect(self, ctx: CollectContext) -> IptablesState:
        now = time.monotonic()
        if now < self.next_read:
            wait = self.next_read - now
            if self.last_error is not None:
                raise CollectError(f"{self.last_error}; not retried for {wait:.0f}s (iptables reads are kept "
                                   f"under {self.budget:.0%} of a core)")
            if self.last is not None:
                return self.last
        self.last = None  # the caches hold the rule sets the next read may reuse; nothing else keeps them
        started = time.monotonic()
        saves = _Saves(deadline=started + (ctx.deadline_s if ctx.deadline_s > 0 else 60.0),
                       caches=self.caches if self.reuse else None)
        try:
            state = read(ctx, saves, self.backend)
        except CollectError as exc:
            self._pace(max(saves.cpu_s, time.monotonic() - started), error=str(exc))
            raise
        finally:
            saves.abandon()
            for key in [k for k in self.caches if k not in saves.parsed]:  # not read: nothing kept in memory
                del self.caches[key]
        self.backend = state.backend
        self._pace(saves.cpu_s, error=None)
        self.last = state
        return state

    def _pace(self, cost: float, error: str | None) -> None:
        self.costs = [*self.costs[-9:], cost]
        self.last_error = error
        self.next_read = time.monotonic() + cost / self.budget - cost


def read(ctx: CollectContext, saves: _Saves, guess: str | None = None) -> IptablesState:
    """One read: detect the backend, read it (IPv4, and IPv6 when it has kube-proxy chains), count
    KUBE-* chains in the other backend.

    iptables-nft-save fetches the whole nf_tables ruleset whatever `-t` says, so the nft side is read in
    full once and serves detection, the main read or the count; iptables-legacy-save -t only copies one
    table, so legacy detection reads just mangle (where it exists)."""
    have = {(f, b): shutil.which(_tool(f, b)) is not None for f in (4, 6) for b in BACKENDS}
    if not have[4, "legacy"] and not have[4, "nft"]:
        raise Absent("neither iptables-legacy-save nor iptables-nft-save is installed")
    legacy_tables = {4: _legacy_tables(ctx, 4), 6: _legacy_tables(ctx, 6)}

    def readable(family: int, backend: str) -> bool:
        return have[family, backend] and (backend == "nft" or bool(legacy_tables[family]))

    if guess == "legacy":
        # Most likely the backend is the one the last read found: its (long) save runs while the other
        # saves detect it, on the other core, and the IPv6 one beside it rather than after it. (nft needs
        # no head start: detection reads it in full.)
        for family in (4, 6):
            if readable(family, "legacy"):
                saves.start_ahead(family, "legacy")

    done: dict[tuple[int, str], RuleSet] = {}
    for family in (4, 6):
        if readable(family, "nft"):
            done[family, "nft"] = saves.parse(family, "nft")
    backend, reason = _hint_in_nft(done)
    if backend is None:
        backend, reason = _hint_in_legacy(saves, readable, legacy_tables)
    if backend is None:  # no kubelet hint: the backend with more rules, as iptables-wrappers decides
        if readable(4, "legacy"):
            done[4, "legacy"] = saves.parse(4, "legacy")
        counts = {b: sum(t.rule_count for t in done[4, b].tables.values()) if (4, b) in done else 0
                  for b in BACKENDS}
        backend = "legacy" if counts["legacy"] > counts["nft"] else "nft"
        reason = (f"no KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain; {counts['legacy']} rules in legacy, "
                  f"{counts['nft']} in nft")
    if not have[4, backend]:
        raise Absent(f"{_tool(4, backend)} is not installed")
    for family in (4, 6):
        if (family, backend) not in done and readable(family, backend):
            done[family, backend] = saves.parse(family, backend)
    main = done.get((4, backend)) or RuleSet(family=4)
    state = IptablesState(backend=backend, backend_reason=reason, rulesets=[main], read_at=time.time())
    v6 = done.get((6, backend))
    if v6 is not None and v6.kube_chain_count():
        state.rulesets.append(v6)
    state.kube_chains[backend] = sum(r.kube_chain_count() for r in state.rulesets)
    other = "legacy" if backend == "nft" else "nft"
    state.kube_chains[other] = 0
    for family in (4, 6):
        if (family, other) in done:
            state.kube_chains[other] += done[family, other].kube_chain_count()
        elif readable(family, other):
            state.kube_chains[other] += saves.count_kube_chains(family, other)
    return state


def _hint_in_nft(done: dict[tuple[int, str], RuleSet]) -> tuple[str | None, str]:
    for family in (4, 6):
        rs = done.get((family, "nft"))
        chains = set(rs.table("mangle").chains) if rs is not None else set()
        for hint in HINT_CHAINS:
            if hint in chains:
                return "nft", f"{hint} chain in the {_tool(family, 'nft')[:-5]} mangle table"
    return None, ""


def _hint_in_legacy(saves: _Saves, readable: Callable[[int, str], bool], legacy_tables: dict[int, list[str]]
                    ) -> tuple[str | None, str]:
    """Only where mangle exists: `iptables-legacy-save -t mangle` would create a missing one."""
    for family in (4, 6):
        if readable(family, "legacy") and "mangle" in legacy_tables[family]:
            m = _HINT.search(saves.text([_tool(family, "legacy"), "-t", "mangle"]))
            if m:
                return "legacy", f"{m.group(1)} chain in the {_tool(family, 'legacy')[:-5]} mangle table"
    return None, ""


READER = IptablesReader()
collect = READER.collect
