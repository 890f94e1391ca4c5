"""What every collector shares: the context it gets and how "absent" is said (subprocesses: subproc.py)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from agent.config import Config
from agent.model import ProcessInfo

T = TypeVar("T")


class Absent(Exception):
    """The thing a collector looks for is not on this node (module not loaded, binary not installed).
    Not an error: the collector looked and found nothing."""


class CollectError(Exception):
    """A read failed in a way worth one clear sentence (the runner records str(exc))."""


class FailedRead(CollectError):
    """A read failed, and what it established about that failure is worth a finding of its own
    (`detail` goes to Source.detail; the source is failed all the same)."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class CollectContext:
    cfg: Config
    deadline_s: float  # seconds this collector may take; subprocesses get what is left
    kube_proxy: ProcessInfo | None = None  # phase-1 result, for collectors that follow kube-proxy's settings
    kubelet: ProcessInfo | None = None
    cluster: Any = None  # a ClusterProvider (agent/collect/cluster.py) when cluster state is configured
    kube_proxy_configmap: Any = None  # agent/collect/kubeproxy_configmap.py's reader when the API is configured

    def budget_s(self) -> float:
        """What the collector's own work may take: a little under the runner's deadline, so that its
        children are killed and it returns (with its reason) before the runner stops waiting for it
        (a one-shot `check` exits then, and its daemon threads would never kill their children)."""
        return max(self.deadline_s - min(1.0, 0.1 * self.deadline_s), 0.5)


def read_text(path: Path) -> str | None:
    """A small file's text, or None when it does not exist. Other errors (permission) propagate."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def find_binary(name: str, dirs: list[str] | tuple[str, ...], root: Path) -> str | None:
    """The first `dir/name` under `root` that is an executable file, as the path inside that root."""
    for d in dirs:
        candidate = root / d.lstrip("/") / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(Path(d) / name)
    return None


class Paced(Generic[T]):
    """Spaces out an expensive read so it costs at most `budget` of a core on average: after a read that
    took `cost` seconds (wall time, its children included: an upper bound of its CPU), the same result
    is handed back until cost / budget seconds after that read began. A failed read is not remembered:
    the next run tries again. The result should carry its own read time, so checks judge its age."""

    def __init__(self, read: Callable[[CollectContext], T], budget: float = 0.05) -> None:
        self.read, self.budget = read, budget
        self._lock = threading.Lock()
        self._last: T | None = None
        self._next = 0.0

    def __call__(self, ctx: CollectContext) -> T:
        with self._lock:
            if self._last is not None and time.monotonic() < self._next:
                return self._last
            self._last = None  # not kept beside the next read (the reader keeps what it needs)
        started = time.monotonic()
        result = self.read(ctx)
        with self._lock:
            self._last, self._next = result, started + (time.monotonic() - started) / self.budget
        return result
