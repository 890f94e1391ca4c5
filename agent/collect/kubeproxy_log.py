"""kube-proxy's log, read-only, where it lives: the container log files kubelet keeps under
/var/log/pods/kube-system_kube-proxy-*/kube-proxy/ (CRI format, rotated to `0.log.<timestamp>` and later
compressed), or the journal of a `kube-proxy` systemd unit.

Each read takes only what was written since the previous one: the reader remembers every file by device
and inode with the offset it reached, so a rotated file (renamed, same inode) is finished under its new
name, a new file is read from its start, and a truncated one from 0. The first read takes only the tail
(FIRST_BYTES, lines of the last FIRST_WINDOW_S). Compressed rotations are not read: by the time a file is
compressed, its lines were read while it was plain. Each read is bounded (MAX_READ_BYTES); what was
written beyond it is skipped and counted. Lines are matched against the messages kube-proxy writes when
something stops it (kubernetes pkg/proxy, cmd/kube-proxy); only the message is kept (no CRI or klog
prefix), truncated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from agent.collect.base import Absent, CollectContext, CollectError
from agent.model.kube_proxy_signals import KubeProxyLog, LogCause

POD_LOGS = "/var/log/pods"
POD_DIR_PREFIX = "kube-system_kube-proxy-"
UNIT = "kube-proxy"
MAX_READ_BYTES = 8 << 20  # per read, over all files: kube-proxy writes far less between two reads
FIRST_BYTES = 1 << 20
FIRST_WINDOW_S = 600.0
MAX_PARTIAL = 64 << 10  # a CRI partial ("P") line is joined with its continuation up to this size
MAX_MESSAGE = 300  # characters of a message kept as evidence
JOURNAL_LINES = 5000
JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
DETAIL_LOOKAHEAD = 5  # klog prints a multi-line err=< ... > value on the lines after the message

# (cause, pattern): the first that matches names the line's cause; specific causes before generic ones.
CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("xtables_lock_timeout", re.compile(r"xtables lock|iptables lock", re.I)),
    ("iptables_restore_failed", re.compile(r"Failed to execute ip6?tables-restore|ip6?tables-restore failed", re.I)),
    ("nftables_failed", re.compile(r"nftables sync failed|failed to run nft\b|nftables cleanup failed", re.I)),
    ("api_unauthorized", re.compile(r"Failed to (?:list|watch)\b.*(?:Unauthorized|forbidden|x509|certificate)")),
    ("api_unreachable", re.compile(r"Failed to (?:list|watch)\b.*(?:connection refused|i/o timeout|no route to host|"
                                   r"TLS handshake timeout|context deadline exceeded|connection reset)")),
    ("conntrack_cleanup_failed", re.compile(
        r"Failed to (?:clear all|list|delete)\b[^\"]*conntrack|conntrack command returned|Failed to delete stale "
        r"service connections|Failed to delete endpoint connections|error deleting connection tracking state", re.I)),
    ("ipvs_unusable", re.compile(r"can't use the IPVS proxier|IPVS proxier will not be used|can't use ipvs proxier",
                                 re.I)),
    ("node_ip_unknown", re.compile(r"can't determine this node's IP", re.I)),
    ("sync_failed", re.compile(r"\bSync failed\b")),
)
_RESTORE_LINE = re.compile(r"line (\d+) failed")
_SERVICE = re.compile(r'\b(?:servicePortName|serviceName|service)="([^"]{1,253})"')
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^\]\s]+\] ?")
_CRI = re.compile(r"^(\S+) (stdout|stderr) ([PF]) ?(.*)$", re.S)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def message_of(text: str) -> str:
    """The message a log line carries: no klog header, no control characters, at most MAX_MESSAGE chars."""
    msg = _CONTROL.sub(" ", _KLOG.sub("", text.strip(), count=1))
    return msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE - 3] + "..."


def parse_time(stamp: str) -> float | None:
    """An RFC 3339 timestamp with nanoseconds (CRI, docker) as unix seconds."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", stamp)
    if m is None:
        return None
    try:
        base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    except ValueError:
        return None
    return base.timestamp() + float("0." + (m.group(2) or "0"))


@dataclass
class Matcher:
    """Counts cause lines in the order they come; one per read."""

    not_before: float | None = None  # lines stamped earlier are not counted (first read)
    causes: dict[str, LogCause] = field(default_factory=dict)
    lines: int = 0
    _detail_for: LogCause | None = None
    _lookahead: int = 0

    def feed(self, text: str, stamp: str | None = None) -> None:
        self.lines += 1
        if stamp is not None and self.not_before is not None:
            when = parse_time(stamp)
            if when is not None and when < self.not_before:
                return
        if self._detail_for is not None and self._lookahead > 0:
            self._lookahead -= 1
            m = _RESTORE_LINE.search(text)
            if m is not None:
                self._detail_for.detail = f"line {m.group(1)} failed"
                self._detail_for = None
        for cause, pattern in CAUSES:
            if not pattern.search(text):
                continue
            msg = message_of(text)
            got = self.causes.get(cause)
            if got is None:
                got = self.causes[cause] = LogCause(cause=cause, count=0, first_line=msg, last_line=msg,
                                                    first_at=stamp)
            got.count += 1
            got.last_line, got.last_at = msg, stamp
            for svc in _SERVICE.findall(text):
                if svc not in got.services and len(got.services) < 5:
                    got.services.append(svc)
            if cause == "iptables_restore_failed":
                m = _RESTORE_LINE.search(text)
                if m is not None:
                    got.detail = f"line {m.group(1)} failed"
                else:
                    self._detail_for, self._lookahead = got, DETAIL_LOOKAHEAD
            return


def cri_records(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """(timestamp, message) per record of a CRI log (partial "P" lines joined, bounded) or a docker
    json-file log; a line in neither format is passed on whole, without a timestamp."""
    partial: list[str] = []
    size = 0
    for line in lines:
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and isinstance(obj.get("log"), str):
                yield (str(obj.get("time")) if obj.get("time") else None), obj["log"]
                continue
        m = _CRI.match(line.rstrip("\n"))
        if m is None:
            yield None, line
            continue
        if m.group(3) == "P":
            if size < MAX_PARTIAL:
                partial.append(m.group(4))
                size += len(m.group(4))
            continue
        text = "".join(partial) + m.group(4)
        partial, size = [], 0
        yield m.group(1), text[:MAX_PARTIAL]


def _log_files(root: Path) -> list[Path]:
    """Plain (not compressed) log files of kube-proxy pods, oldest first."""
    base = root / POD_LOGS.lstrip("/")
    try:
        pods = [d for d in base.iterdir() if d.name.startswith(POD_DIR_PREFIX) and d.is_dir()]
    except FileNotFoundError:
        return []
    files = [f for d in pods for f in (d / "kube-proxy").glob("*.log*")
             if f.is_file() and not f.name.endswith(".gz") and not f.name.endswith(".tmp")]
    return sorted(files, key=lambda f: (f.stat().st_mtime, f.name))


class KubeProxyLogReader:
    """Reads what kube-proxy logged since this reader's previous read (see the module docstring)."""

    def __init__(self, *, max_read_bytes: int = MAX_READ_BYTES, first_bytes: int = FIRST_BYTES,
                 first_window_s: float = FIRST_WINDOW_S) -> None:
        self.max_read_bytes, self.first_bytes, self.first_window_s = max_read_bytes, first_bytes, first_window_s
        self._offsets: dict[tuple[int, int], int] = {}
        self._started = False
        self._cursor: str | None = None

    def __call__(self, ctx: CollectContext) -> KubeProxyLog:
        files = _log_files(ctx.cfg.root)
        if files:
            return self._read_files(ctx, files)
        return self._read_journal(ctx)

    def _read_files(self, ctx: CollectContext, files: list[Path]) -> KubeProxyLog:
        first = not self._started
        root = ctx.cfg.root
        out = KubeProxyLog(origin=f"files {POD_LOGS}/{POD_DIR_PREFIX}*", first_read=first,
                           window_s=self.first_window_s if first else None)
        matcher = Matcher(not_before=time.time() - self.first_window_s if first else None)
        budget = self.max_read_bytes
        offsets: dict[tuple[int, int], int] = {}
        deadline = time.monotonic() + ctx.deadline_s
        for path in files:
            try:
                fh = path.open("rb")
            except FileNotFoundError:  # rotated away between the listing and here: its inode shows up again
                continue
            with fh:
                st = os.fstat(fh.fileno())
                key = (st.st_dev, st.st_ino)
                start = self._offsets.get(key)
                if start is None:
                    start = max(0, st.st_size - self.first_bytes) if first else 0
                elif st.st_size < start:  # truncated (copytruncate): start over
                    start = 0
                if st.st_size - start > budget:
                    out.skipped_bytes += st.st_size - start - budget
                    start = st.st_size - budget
                fh.seek(start)
                data = fh.read(max(0, min(st.st_size - start, budget)))
                if start > 0 and (key not in self._offsets or start != self._offsets[key]):
                    # landed mid-line (tail of a first read, or a skip): the partial line is not a record
                    cut = data.find(b"\n") + 1
                    data, start = data[cut:], start + cut
                end = data.rfind(b"\n") + 1  # an unfinished last line is read again next time
                budget -= end
                offsets[key] = start + end
                if end:
                    out.files.append("/" + str(path.relative_to(root)))
                    out.bytes_read += end
                    for stamp, text in cri_records(iter(data[:end].decode(errors="replace").splitlines())):
                        matcher.feed(text, stamp)
            if time.monotonic() > deadline:
                raise CollectError(f"kube-proxy's log not read within {ctx.deadline_s:g}s")
        self._offsets, self._started = offsets, True
        out.lines_read = matcher.lines
        out.causes = sorted(matcher.causes.values(), key=lambda c: c.cause)
        return out

    def _read_journal(self, ctx: CollectContext) -> KubeProxyLog:
        dirs = [ctx.cfg.host(d) for d in JOURNAL_DIRS if _has_journal_files(ctx.cfg.host(d))]
        if not dirs:
            raise Absent(f"no kube-proxy pod log under {POD_LOGS} and no journal files")
        argv = ["journalctl", "--unit", UNIT, "--no-pager", "--output", "cat", "--show-cursor", "--quiet",
                "--lines", str(JOURNAL_LINES)]
        if ctx.cfg.root != Path("/"):
            argv += ["--directory", str(dirs[0])]
        first = self._cursor is None
        argv += ["--since", f"-{int(self.first_window_s)}s"] if first else [f"--after-cursor={self._cursor}"]
        text = _journalctl(argv, ctx.deadline_s)
        lines = text.splitlines()
        cursor = None
        if lines and lines[-1].startswith("-- cursor: "):
            cursor = lines.pop()[len("-- cursor: "):].strip()
        if first and cursor is None:
            raise Absent(f"no kube-proxy pod log under {POD_LOGS} and no recent journal entries of unit {UNIT}")
        matcher = Matcher()
        for line in lines:
            matcher.feed(line)
        self._cursor = cursor or self._cursor
        return KubeProxyLog(origin=f"journald unit {UNIT}", first_read=first,
                            window_s=self.first_window_s if first else None, bytes_read=len(text),
                            lines_read=matcher.lines, causes=sorted(matcher.causes.values(), key=lambda c: c.cause))


def _has_journal_files(d: Path) -> bool:
    """Journal files sit in <dir>/<machine-id>/*.journal: a short, bounded look."""
    try:
        return any(f.suffix in (".journal", ".journal~") for sub in d.iterdir() if sub.is_dir()
                   for f in sub.iterdir())
    except OSError:
        return False


def _journalctl(argv: list[str], timeout_s: float) -> str:
    """journalctl's output. With --show-cursor it exits 1, silently, when no entry matched: that is an
    empty answer, not a failure."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise Absent("journalctl is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise CollectError(f"journalctl did not finish within {timeout_s:.0f}s (killed)") from exc
    if proc.returncode == 1 and not proc.stdout.strip() and not proc.stderr.strip():
        return ""
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise CollectError(f"journalctl exited {proc.returncode}: {first}")
    return proc.stdout
