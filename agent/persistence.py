"""What `svcdoctor serve` remembers between checks: programming lag.

(That a rules.* difference must persist over two runs is part of the run itself: agent/runner.py.)
"""

from __future__ import annotations

import threading

from agent.model.report import Report

DEBOUNCED_PREFIX = "rules."
LAG_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class LagTracker:
    """Per Service port: how long after its last API change did this node's rules first match?

    Observed once per change (the change's time comes from the EndpointSlice's
    last-change-trigger-time or the objects' managedFields), at the resolution of the check interval.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}  # service port -> change time not yet seen programmed
        self._done: dict[str, float] = {}  # service port -> change time already observed
        self.buckets = [0] * (len(LAG_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, report: Report) -> None:
        expected = report.views.expected if report.views is not None else None
        cluster = report.snapshot.cluster.data
        if expected is None or cluster is None or not cluster.comparable:  # rules were not compared
            return
        out_of_sync = {f.service for f in report.findings if f.id.startswith(DEBOUNCED_PREFIX) and f.service}
        now = report.snapshot.taken_at
        with self._lock:
            for exp in expected:
                if exp.last_change is None or self._done.get(exp.service) == exp.last_change:
                    continue
                if exp.service in out_of_sync:
                    self._pending[exp.service] = exp.last_change
                    continue
                lag = max(0.0, now - exp.last_change)
                self._done[exp.service] = exp.last_change
                self._pending.pop(exp.service, None)
                self.count += 1
                self.sum += lag
                for i, bound in enumerate(LAG_BUCKETS):
                    if lag <= bound:
                        self.buckets[i] += 1
                        break
                else:
                    self.buckets[-1] += 1

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative buckets as prometheus-client's HistogramMetricFamily wants them, and the sum."""
        with self._lock:
            cumulative, running = [], 0
            for bound, n in zip(LAG_BUCKETS, self.buckets, strict=False):
                running += n
                cumulative.append((str(bound), float(running)))
            cumulative.append(("+Inf", float(self.count)))
            return cumulative, self.sum
