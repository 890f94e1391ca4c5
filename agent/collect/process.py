"""kube-proxy and kubelet as processes: found through psutil in the hostPID view of /proc.

Only processes in the agent's own network namespace count: kube-proxy and kubelet use the host
network, the agent runs with hostNetwork, and the tests run several "nodes" side by side in one PID
namespace, each in its own netns. Config files are read through /proc/<pid>/root, because the file
lives in the process's mount namespace (a ConfigMap mounted into kube-proxy's pod), not the agent's.
"""

from __future__ import annotations

import os
from typing import Any

import psutil
import yaml

from agent.collect.base import Absent, CollectContext, CollectError
from agent.config import Config
from agent.model import ProcessInfo

# Boolean flags that take no value: "--masquerade-all --v=2" must not read "--v=2" as a value.
BOOL_FLAGS = frozenset({
    "masquerade-all", "cleanup", "profiling", "iptables-localhost-nodeports", "enable-debugging-handlers",
    "fail-swap-on", "register-node", "rotate-certificates", "alsologtostderr", "logtostderr",
})


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Go pflag-style flags ("--a=b", "--a b", "-v=2", bare booleans); the last occurrence wins."""
    flags: dict[str, str] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        name = arg.lstrip("-")
        if "=" in name:
            key, value = name.split("=", 1)
            flags[key] = value
        elif name not in BOOL_FLAGS and i < len(argv) and not argv[i].startswith("-"):
            flags[name] = argv[i]
            i += 1
        else:
            flags[name] = "true"
    return flags


def _netns_id(cfg: Config, pid: int | str) -> tuple[int, int]:
    st = os.stat(cfg.procfs(pid, "ns", "net"))
    return (st.st_dev, st.st_ino)


def _is_named(comm: str, argv: list[str], binary: str) -> bool:
    if comm == binary[:15]:  # the kernel truncates comm to 15 characters
        return True
    if not argv:
        return False
    if os.path.basename(argv[0]) == binary:
        return True
    # hyperkube-era images: "hyperkube kube-proxy --flags" / "hyperkube proxy"
    return os.path.basename(argv[0]) == "hyperkube" and len(argv) > 1 and argv[1] in (binary, binary[5:])


def _read_config(cfg: Config, pid: int, path: str) -> tuple[dict[str, Any] | None, str | None]:
    base = cfg.procfs(pid, "root") if path.startswith("/") else cfg.procfs(pid, "cwd")
    full = base / path.lstrip("/")
    try:
        text = full.read_text()
    except OSError as exc:
        return None, f"{exc.strerror or exc} ({full})"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, f"not valid YAML: {exc}".splitlines()[0]
    if not isinstance(data, dict):
        return None, "not a YAML mapping"
    return data, None


def _env_path(cfg: Config, pid: int) -> list[str]:
    try:
        raw = cfg.procfs(pid, "environ").read_bytes()
    except OSError:
        return []
    for item in raw.split(b"\0"):
        if item.startswith(b"PATH="):
            return [p for p in item[5:].decode(errors="replace").split(":") if p]
    return []


def find_process(cfg: Config, binary: str) -> ProcessInfo:
    """The lowest-PID `binary` process in our network namespace; Absent when there is none."""
    psutil.PROCFS_PATH = str(cfg.proc)  # psutil's documented way to read another procfs (hostPID mount)
    try:
        own_ns = _netns_id(cfg, "self")
    except OSError as exc:
        raise CollectError(f"cannot read own network namespace: {exc}") from exc
    denied = 0
    for p in sorted(psutil.process_iter(["pid", "name", "cmdline"]), key=lambda p: p.info["pid"]):
        comm, argv = p.info["name"] or "", p.info["cmdline"] or []
        if not _is_named(comm, argv, binary):
            continue
        pid = int(p.info["pid"])
        try:
            if _netns_id(cfg, pid) != own_ns:
                continue
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue  # exited meanwhile
        if os.path.basename(argv[0]) == "hyperkube":
            argv = argv[1:]
        flags = parse_flags(argv)
        info = ProcessInfo(pid=pid, comm=comm, argv=argv, flags=flags, root=str(cfg.procfs(pid, "root")),
                           env_path=_env_path(cfg, pid))
        if "config" in flags:
            info.config_path = flags["config"]
            info.config, info.config_error = _read_config(cfg, pid, flags["config"])
        return info
    if denied:
        raise CollectError(f"permission denied reading the network namespace of {denied} {binary} "
                           "process(es): the agent needs CAP_SYS_PTRACE")
    raise Absent(f"no {binary} process in this network namespace")


def collect_kube_proxy(ctx: CollectContext) -> ProcessInfo:
    return find_process(ctx.cfg, "kube-proxy")


def collect_kubelet(ctx: CollectContext) -> ProcessInfo:
    return find_process(ctx.cfg, "kubelet")
