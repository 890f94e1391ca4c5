"""The conntrack collector on procfs trees: the config object points it at any /proc.

A real kernel's nf_conntrack cannot be unloaded or filled from a test, so these two conditions are shown
on a procfs-shaped directory (the layout the kernel exposes: sys/net/netfilter/nf_conntrack_{count,max},
modules); the loaded, real case runs in tests/integration/test_node_basics.py on the live kernel.
"""

from __future__ import annotations

from pathlib import Path

from agent.collect.base import CollectContext
from agent.collect.conntrack import collect
from agent.config import Config


def _proc(tmp: Path, count: str | None, maximum: str | None, modules: str = "") -> Path:
    nf = tmp / "proc" / "sys" / "net" / "netfilter"
    nf.mkdir(parents=True)
    if count is not None:
        (nf / "nf_conntrack_count").write_text(count + "\n")
    if maximum is not None:
        (nf / "nf_conntrack_max").write_text(maximum + "\n")
    (tmp / "proc" / "modules").write_text(modules)
    return tmp / "proc"


def test_module_missing_when_neither_sysctl_nor_modules_line(tmp_path: Path) -> None:
    ctx = CollectContext(Config(proc=_proc(tmp_path, None, None, "bridge 1 0 - Live 0x0\n"), root=tmp_path), 5)
    info = collect(ctx)
    assert (info.module_loaded, info.count, info.max) == (False, None, None)


def test_module_loaded_from_modules_line(tmp_path: Path) -> None:
    ctx = CollectContext(Config(proc=_proc(tmp_path, None, None, "nf_conntrack 180224 5 - Live 0x0\n"),
                                root=tmp_path), 5)
    assert collect(ctx).module_loaded


def test_count_and_max_read(tmp_path: Path) -> None:
    ctx = CollectContext(Config(proc=_proc(tmp_path, "262000", "262144"), root=tmp_path), 5)
    info = collect(ctx)
    assert (info.module_loaded, info.count, info.max) == (True, 262000, 262144)


def test_host_binary_found_under_host_root(tmp_path: Path) -> None:
    sbin = tmp_path / "usr" / "sbin"
    sbin.mkdir(parents=True)
    (sbin / "conntrack").write_text("#!/bin/sh\n")
    (sbin / "conntrack").chmod(0o755)
    ctx = CollectContext(Config(proc=_proc(tmp_path, "1", "10"), root=tmp_path), 5)
    assert collect(ctx).host_binary == "/usr/sbin/conntrack"


# /proc/net/stat/nf_conntrack: pressure counters summed over CPUs, rates between reads --------------------

STAT_HEADER = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
               "icmp_error  expect_new expect_create expect_delete search_restart\n")


def _stat_line(invalid: int = 0, insert_failed: int = 0, drop: int = 0, early_drop: int = 0) -> str:
    cols = [0] * 17
    cols[4], cols[9], cols[10], cols[11] = invalid, insert_failed, drop, early_drop
    return " ".join(f"{c:08x}" for c in cols) + "\n"


def _with_stats(tmp_path: Path, *cpus: str) -> Config:
    proc = _proc(tmp_path, "100", "262144")
    (proc / "net" / "stat").mkdir(parents=True, exist_ok=True)
    (proc / "net" / "stat" / "nf_conntrack").write_text(STAT_HEADER + "".join(cpus))
    return Config(proc=proc, root=tmp_path)


def test_stats_sum_hex_columns_over_cpus_by_header_name(tmp_path: Path) -> None:
    from agent.collect.conntrack import read_stats

    stats = read_stats(_with_stats(tmp_path, _stat_line(invalid=0x10, drop=1), _stat_line(insert_failed=0x1f, drop=2)))
    assert stats is not None and stats.cpus == 2
    assert stats.totals == {"drop": 3, "early_drop": 0, "insert_failed": 31, "invalid": 16}


def test_rates_come_from_the_second_read_and_give_findings(tmp_path: Path) -> None:
    from agent.checks import conntrack as ct_check
    from agent.collect.conntrack import ConntrackReader
    from tests.snapshots import healthy

    cfg = _with_stats(tmp_path, _stat_line())
    reader = ConntrackReader()
    first = reader(CollectContext(cfg, 5))
    assert first.stats is not None and first.stats.rates is None
    (cfg.proc / "net" / "stat" / "nf_conntrack").write_text(
        STAT_HEADER + _stat_line(drop=5000, insert_failed=5000) + _stat_line(early_drop=1, invalid=10**6))
    second = reader(CollectContext(cfg, 5))
    assert second.stats is not None and second.stats.rates is not None
    assert second.stats.rates["drop"] > 0
    ids = {f.id for f in ct_check.check(healthy(conntrack=second))} - {"conntrack.binary_missing"}
    assert ids == {"conntrack.dropping", "conntrack.insert_failures", "conntrack.invalid_packets"}
    quiet = reader(CollectContext(cfg, 5))  # nothing rose since the previous read
    assert {f.id for f in ct_check.check(healthy(conntrack=quiet))} - {"conntrack.binary_missing"} == set()


def test_unparseable_stats_fail_only_the_stats(tmp_path: Path) -> None:
    from agent.checks import conntrack as ct_check
    from agent.collect.conntrack import ConntrackReader
    from tests.snapshots import healthy

    cfg = _with_stats(tmp_path, "zz 01\n")
    info = ConntrackReader()(CollectContext(cfg, 5))
    assert info.count == 100 and info.stats is None and info.stats_error and "columns" in info.stats_error
    (f,) = [f for f in ct_check.check(healthy(conntrack=info)) if f.id == "agent.source_failed"]
    assert f.subject == "conntrack_stats"


def test_live_kernel_stats_parse() -> None:
    from agent.collect.conntrack import read_stats

    stats = read_stats(Config())
    assert stats is None or (stats.cpus >= 1 and set(stats.totals) == {"drop", "early_drop", "insert_failed",
                                                                        "invalid"})
