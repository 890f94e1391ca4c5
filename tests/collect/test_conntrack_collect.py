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
