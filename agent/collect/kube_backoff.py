"""When the API collector may ask the API server again: start jitter, backoff, Retry-After, watch length.

Pure timing rules, no I/O, so the informers (agent/collect/kubeapi.py) and the 1,000-agent rollout
simulation (bench/bench_api_cost.py) run the very same code, with their own clock and random source.

The numbers are client-go's reflector's, the ones every kube-proxy uses: backoff 0.8 s doubling to
30 s, each wait stretched by a random factor in [1, 2) (jitter 1.0), the step reset after 2 minutes
without a failure; each watch asks for a random length in [5, 10) minutes, so the watches of thousands
of agents started together do not all end, and reconnect, in the same second.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

BACKOFF_INITIAL_S = 0.8
BACKOFF_CAP_S = 30.0
BACKOFF_FACTOR = 2.0
BACKOFF_JITTER = 1.0  # a wait is step * (1 + JITTER * u), u uniform in [0, 1)
BACKOFF_RESET_S = 120.0
MIN_WATCH_TIMEOUT_S = 300.0  # client-go's minWatchTimeout; a watch asks for [1x, 2x) of it
START_JITTER_S = 10.0  # the first list of an agent starts uniformly in [0, this) after start
RETRY_AFTER_MAX_S = 600.0  # a Retry-After beyond this is read as this: a broken header must not park an agent


@dataclass
class Backoff:
    """Jittered exponential backoff with a cap and a reset.

    `next_wait(now)` is the wait before the next attempt after a failure at `now`: uniform in
    [step, step * (1 + jitter)), where step starts at `initial`, grows by `factor` per failure and stops
    at `cap`. A failure more than `reset_after` after the previous one starts again from `initial`, as
    does `reset()` (called once an informer is synced and watching again)."""

    initial: float = BACKOFF_INITIAL_S
    cap: float = BACKOFF_CAP_S
    factor: float = BACKOFF_FACTOR
    jitter: float = BACKOFF_JITTER
    reset_after: float = BACKOFF_RESET_S
    rng: Callable[[], float] = field(default=random.random)
    _step: float | None = None
    _last_failure: float | None = None

    def next_wait(self, now: float, at_least: float = 0.0) -> float:
        if self._step is None or (self._last_failure is not None and now - self._last_failure > self.reset_after):
            self._step = min(self.initial, self.cap)
        else:
            self._step = min(self._step * self.factor, self.cap)
        self._last_failure = now
        # A server's Retry-After is a floor ("not before"): jitter only ever lengthens it, so the agents
        # told the same second do not all come back in that second.
        base = max(self._step, at_least)
        return base * (1.0 + self.jitter * self.rng())

    def reset(self) -> None:
        self._step = None
        self._last_failure = None


def start_delay(window_s: float, rng: Callable[[], float] = random.random) -> float:
    """How long an agent waits before its first list: uniform in [0, window_s)."""
    return max(0.0, window_s) * rng()


def watch_timeout(min_s: float = MIN_WATCH_TIMEOUT_S, rng: Callable[[], float] = random.random) -> int:
    """The timeoutSeconds of one watch: uniform in [min_s, 2 * min_s), whole seconds as the API wants."""
    return max(1, int(min_s * (1.0 + rng())))


def retry_after_s(headers: Mapping[str, str] | None, now_unix: float) -> float | None:
    """The wait a `Retry-After` header asks for (delta-seconds or an HTTP date), capped; None if absent or
    unreadable (then the plain backoff applies)."""
    if not headers:
        return None
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return min(float(raw), RETRY_AFTER_MAX_S)
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - now_unix), RETRY_AFTER_MAX_S)
