"""Connection tracking: is nf_conntrack there, how full is its table, is it dropping or failing to insert
(/proc/net/stat/nf_conntrack), and can kube-proxy find the `conntrack` binary it shells out to
(kube-proxy < v1.32) to clear stale UDP entries."""

from __future__ import annotations

import os
import time

from agent.collect.base import CollectContext, find_binary, read_text
from agent.config import HOST_BIN_DIRS, Config
from agent.model import ConntrackInfo
from agent.model.conntrack_table import ConntrackStats

# The per-CPU counters that say the table is under pressure (the header names them; kernels differ in
# which other columns they have, so columns are found by name, never by position).
PRESSURE = ("drop", "early_drop", "insert_failed", "invalid")
MAX_STAT_BYTES = 1 << 20  # one line per possible CPU: a few KiB on large machines


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def collect(ctx: CollectContext) -> ConntrackInfo:
    cfg = ctx.cfg
    netfilter = cfg.procfs("sys", "net", "netfilter")
    count = _int(read_text(netfilter / "nf_conntrack_count"))
    modules = read_text(cfg.procfs("modules")) or ""
    # Built into the kernel, nf_conntrack has no /proc/modules line but its sysctls exist.
    loaded = count is not None or any(line.split(" ", 1)[0] == "nf_conntrack" for line in modules.splitlines())
    info = ConntrackInfo(
        module_loaded=loaded,
        count=count,
        max=_int(read_text(netfilter / "nf_conntrack_max")),
        host_binary=find_binary("conntrack", HOST_BIN_DIRS, cfg.root),
    )
    if ctx.kube_proxy is not None:
        dirs = ctx.kube_proxy.env_path or list(HOST_BIN_DIRS)
        info.kube_proxy_binary_searched = dirs
        root = cfg.procfs(ctx.kube_proxy.pid, "root")
        try:
            os.listdir(root)
        except OSError as exc:  # the DaemonSet has no CAP_SYS_PTRACE: unknown, not missing
            info.kube_proxy_binary_unknown = f"{root}: {exc.strerror or exc}"
            return info
        info.kube_proxy_binary = find_binary("conntrack", dirs, root)
    return info


def read_stats(cfg: Config) -> ConntrackStats | None:
    """The pressure counters summed over CPUs (hex columns, one line per CPU after a header), or None
    when the file is absent (no nf_conntrack). A file that does not parse raises ValueError."""
    text = read_text(cfg.procfs("net", "stat", "nf_conntrack"))
    if text is None:
        return None
    if len(text) > MAX_STAT_BYTES:
        raise ValueError("/proc/net/stat/nf_conntrack is larger than any kernel writes")
    lines = text.split("\n")
    header = lines[0].split()
    missing = [c for c in PRESSURE if c not in header]
    if missing:
        raise ValueError(f"/proc/net/stat/nf_conntrack has no column {', '.join(missing)}")
    totals = dict.fromkeys(PRESSURE, 0)
    cpus = 0
    for n, line in enumerate(lines[1:], 2):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != len(header):
            raise ValueError(f"/proc/net/stat/nf_conntrack line {n}: {len(cols)} columns, header has {len(header)}")
        for name in PRESSURE:
            totals[name] += int(cols[header.index(name)], 16)
        cpus += 1
    return ConntrackStats(totals=totals, cpus=cpus)


class ConntrackReader:
    """`collect` plus the pressure counters as rates since this reader's previous read."""

    def __init__(self) -> None:
        self._prev: tuple[float, dict[str, int]] | None = None

    def __call__(self, ctx: CollectContext) -> ConntrackInfo:
        info = collect(ctx)
        now = time.monotonic()
        try:
            stats = read_stats(ctx.cfg)
        except ValueError as exc:  # the fill ratio still stands; the rates are unknown, and said so
            info.stats_error = str(exc)
            return info
        if stats is not None:
            if self._prev is not None:
                then, before = self._prev
                interval = now - then
                if interval > 0 and all(stats.totals[k] >= before.get(k, 0) for k in PRESSURE):
                    stats.interval_s = interval
                    stats.rates = {k: (stats.totals[k] - before.get(k, 0)) / interval for k in PRESSURE}
            self._prev = (now, dict(stats.totals))
        info.stats = stats
        return info
