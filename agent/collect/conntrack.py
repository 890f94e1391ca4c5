"""Connection tracking: is nf_conntrack there, how full is its table, and can kube-proxy find
the `conntrack` binary it shells out to (kube-proxy < v1.32) to clear stale UDP entries."""

from __future__ import annotations

import os

from agent.collect.base import CollectContext, find_binary, read_text
from agent.config import HOST_BIN_DIRS
from agent.model import ConntrackInfo


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
