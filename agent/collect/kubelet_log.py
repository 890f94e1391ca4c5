"""kubelet's own word on its hairpin mode: the "Hairpin mode set to ..." line in its log file.

The guide's step: kubelet logs the effective mode at start, and it may differ from --hairpin-mode.
Only kubelets with the built-in dockershim (<= 1.23) log it; newer ones have nothing to say, so a log
without the line is normal. Read on the host (<host-root>/var/log, which the DaemonSet mounts), line
by line: the file can be large and the line sits near a kubelet start. journald is not read (its
`--grep` exits 1 both for "no match" and for errors, which only message text would tell apart).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.collect.base import Absent, CollectContext, CollectError
from agent.model.kubelet_log import KubeletLog

LOG_FILES = ("/var/log/kubelet.log", "/var/log/kubelet/kubelet.log", "/var/log/kubelet.INFO")
# glog: Hairpin mode set to "hairpin-veth"; klog structured: "Hairpin mode is set" hairpinMode="hairpin-veth"
_MODE = re.compile(r'Hairpin mode (?:set to "(?P<old>[a-z-]+)"|is set"?\s+hairpinMode="?(?P<new>[a-z-]+))')


def effective_mode_line(lines: Iterable[str]) -> tuple[str, str] | None:
    """The last (line, mode) stating the effective mode. Lines that report a configured value being
    overridden ("... but kubenet is not enabled, falling back to ...") are not the effective mode."""
    last = None
    for line in lines:
        if "airpin mode" not in line or "falling back" in line or "ignoring" in line:
            continue
        m = _MODE.search(line)
        if m:
            last = (line.rstrip("\n"), m.group("old") or m.group("new"))
    return last


def _lines(path: Path, name: str, deadline: float, budget_s: float) -> Iterator[str]:
    with path.open(errors="replace") as fh:
        for n, line in enumerate(fh):
            if n % 100_000 == 0 and time.monotonic() > deadline:
                raise CollectError(f"{name}: not read to the end within {budget_s:g}s")
            yield line


def collect(ctx: CollectContext) -> KubeletLog:
    deadline = time.monotonic() + ctx.deadline_s
    for name in LOG_FILES:
        path = ctx.cfg.host(name)
        if not path.is_file():
            continue
        found = effective_mode_line(_lines(path, name, deadline, ctx.deadline_s))
        return KubeletLog(file=name, line=found[0] if found else None, mode=found[1] if found else None)
    raise Absent(f"no kubelet log file ({', '.join(LOG_FILES)}); journald is not read")
