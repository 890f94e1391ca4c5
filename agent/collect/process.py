"""kube-proxy and kubelet as processes: found in the hostPID view of /proc, trusted only when real.

Only processes in the agent's own network namespace count: kube-proxy and kubelet use the host
network, the agent runs with hostNetwork, and the tests run several "nodes" side by side in one PID
namespace, each in its own netns. The namespace is told by /proc/<pid>/net (no ptrace access needed,
unlike /proc/<pid>/ns/net).

A process is taken for kube-proxy or kubelet only when it is root's (real and effective uid 0), in the
agent's PID namespace (as many NSpid levels as the agent's own) and its executable is the binary
(/proc/<pid>/exe when the agent may read it; without CAP_SYS_PTRACE only its comm, which a root
process alone can set). Anything else named kube-proxy is ignored, and the note says so: a process
running as `nobody` must not choose which file root reads, or which URL the agent fetches.

Its settings come from its command line (/proc/<pid>/cmdline) and its --config, whose known fields
are read from the first source that answers (agent/collect/named_file.py, component_config.py):
the file inside the process's own filesystem (/proc/<pid>/root: a root `svcdoctor check` on the
host); for kube-proxy, its /configz on this node, then the kube-proxy ConfigMap through the API; for
kubelet, the same path on the host root mount (the DaemonSet mounts that one file). Each source
tried is named in `config_error` when none answers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from agent.collect.base import Absent, CollectContext, CollectError
from agent.collect.component_config import KUBE_PROXY_KIND, KUBELET_KIND, ConfigRefused, parse
from agent.collect.kubeproxy_configz import fetch as fetch_configz
from agent.collect.named_file import Unreadable, read_named_file
from agent.config import Config
from agent.model import ProcessInfo
from agent.settings import local_url

# Boolean flags that take no value: "--masquerade-all --v=2" must not read "--v=2" as a value.
BOOL_FLAGS = frozenset({
    "masquerade-all", "cleanup", "profiling", "iptables-localhost-nodeports", "enable-debugging-handlers",
    "fail-swap-on", "register-node", "rotate-certificates", "alsologtostderr", "logtostderr",
})
ROOT = 0
# A ConfigMap reader (agent/collect/kubeproxy_configmap.py): timeout -> (config, source) or (None, why not).
ConfigMapReader = Callable[[float], tuple[dict[str, Any] | None, str]]


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
    """Identifies a network namespace: each has its own /proc/<pid>/net entries (inode numbers from the
    namespaces' own allocator), readable without the ptrace access that /proc/<pid>/ns/net needs."""
    st = os.stat(cfg.procfs(pid, "net", "dev"))
    return (st.st_dev, st.st_ino)


def _status(cfg: Config, pid: int | str) -> dict[str, str]:
    lines = cfg.procfs(pid, "status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _pid_ns_depth(status: dict[str, str]) -> int | None:
    """How many PID namespaces deep the process is (NSpid: one pid per level), None on kernels < 4.1."""
    nspid = status.get("NSpid")
    return len(nspid.split()) if nspid else None


def _is_named(comm: str, argv: list[str], binary: str) -> bool:
    if comm == binary[:15]:  # the kernel truncates comm to 15 characters
        return True
    if not argv:
        return False
    if os.path.basename(argv[0]) == binary:
        return True
    return _is_hyperkube(argv, binary)


def _is_hyperkube(argv: list[str], binary: str) -> bool:
    """hyperkube-era images: "hyperkube kube-proxy --flags" / "hyperkube proxy"."""
    return bool(argv) and os.path.basename(argv[0]) == "hyperkube" and len(argv) > 1 and argv[1] in (binary, binary[5:])


def _refusal(cfg: Config, pid: int, comm: str, argv: list[str], binary: str, own_depth: int | None
             ) -> tuple[str | None, str, str | None]:
    """(why this process is not trusted, or None; how it was recognised; its executable if readable)."""
    status = _status(cfg, pid)
    uids = (status.get("Uid") or "? ?").split()
    if uids[:2] != [str(ROOT), str(ROOT)]:
        return f"pid {pid} is not root's (real uid {uids[0]}, effective uid {uids[1]})", "", None
    depth = _pid_ns_depth(status)
    if own_depth is not None and depth is not None and depth != own_depth:
        return f"pid {pid} is in another PID namespace (a container's, {depth} levels deep)", "", None
    try:
        exe: str | None = os.readlink(cfg.procfs(pid, "exe")).removesuffix(" (deleted)")
    except PermissionError:
        exe = None
    hyperkube = _is_hyperkube(argv, binary)
    if exe is not None:
        name = os.path.basename(exe)
        if name != binary and not (name == "hyperkube" and hyperkube):
            return f"pid {pid}'s executable is {exe}, not {binary}", "", exe
        return None, f"root's, in the agent's PID namespace, executable {exe}", exe
    if comm != binary[:15] and not (comm == "hyperkube" and hyperkube):
        return f"pid {pid}'s executable is not readable and its name is {comm!r}", "", None
    return None, (f"root's, in the agent's PID namespace, named {comm} (its executable is not readable "
                  "without CAP_SYS_PTRACE)"), None


def _env_path(cfg: Config, pid: int) -> list[str]:
    try:
        raw = cfg.procfs(pid, "environ").read_bytes()
    except OSError:  # PermissionError without CAP_SYS_PTRACE: callers search the default PATH
        return []
    for item in raw.split(b"\0"):
        if item.startswith(b"PATH="):
            return [p for p in item[5:].decode(errors="replace").split(":") if p]
    return []


Read = Callable[[], tuple[dict[str, Any], str]]  # -> (the config's known fields, where they came from)


def _config_sources(cfg: Config, info: ProcessInfo, binary: str, configmap: ConfigMapReader | None,
                    timeout_s: float) -> list[tuple[str, Read]]:
    path = info.config_path or ""
    kind = KUBE_PROXY_KIND if binary == "kube-proxy" else KUBELET_KIND
    base = cfg.procfs(info.pid, "root" if path.startswith("/") else "cwd")
    in_root = f"file {path} in the process's filesystem ({base})"

    def from_process_root() -> tuple[dict[str, Any], str]:
        try:
            return parse(read_named_file(base, path, ROOT), kind), f"config {path}"
        except Unreadable as exc:
            hint = " (needs CAP_SYS_PTRACE)" if "ermission denied" in str(exc) else ""
            raise Unreadable(f"{exc}{hint}") from None

    sources: list[tuple[str, Read]] = [(in_root, from_process_root)]
    if binary == "kube-proxy":
        url = local_url(info.flags.get("metrics-bind-address") or "127.0.0.1:10249", 10249, "/configz")
        sources.append((f"kube-proxy's {url}", lambda: (fetch_configz(url, timeout_s), f"kube-proxy's {url}")))

        def from_configmap() -> tuple[dict[str, Any], str]:
            if configmap is None:
                raise ConfigRefused("no API server configured")
            config, said = configmap(timeout_s)
            if config is None:
                raise ConfigRefused(said)
            return config, said

        sources.append(("ConfigMap kube-system/kube-proxy", from_configmap))
    elif path.startswith("/"):
        on_host = f"config {path} (the host's file, under {cfg.root})"
        sources.append((on_host, lambda: (parse(read_named_file(cfg.root, path, ROOT), kind), on_host)))
    return sources


def _read_config(cfg: Config, info: ProcessInfo, binary: str, configmap: ConfigMapReader | None,
                 timeout_s: float) -> None:
    """Fill config/config_source from the first source that answers, or config_error naming each one."""
    tried: list[str] = []
    for name, read in _config_sources(cfg, info, binary, configmap, timeout_s):
        try:
            info.config, info.config_source = read()
            return
        except (Unreadable, ConfigRefused) as exc:
            tried.append(f"{name}: {exc}")
    info.config_error = "; ".join(tried)


def find_process(cfg: Config, binary: str, *, configmap: ConfigMapReader | None = None,
                 timeout_s: float = 3.0) -> ProcessInfo:
    """The lowest-PID trusted `binary` process in our network namespace; Absent when there is none."""
    try:
        own_ns = _netns_id(cfg, "self")
        own_depth = _pid_ns_depth(_status(cfg, "self"))
    except OSError as exc:
        raise CollectError(f"cannot read own network namespace: {exc}") from exc
    denied, ignored = 0, []
    for pid in sorted(int(d) for d in os.listdir(cfg.proc) if d.isdigit()):
        try:
            comm = cfg.procfs(pid, "comm").read_text().rstrip("\n")
            argv = [a.decode(errors="replace") for a in cfg.procfs(pid, "cmdline").read_bytes().split(b"\0")[:-1]]
            if not _is_named(comm, argv, binary):
                continue
            if _netns_id(cfg, pid) != own_ns:
                continue
            refused, identity, exe = _refusal(cfg, pid, comm, argv, binary, own_depth)
        except PermissionError:
            denied += 1
            continue
        except OSError:
            continue  # exited meanwhile
        if refused is not None:
            ignored.append(refused)
            continue
        if _is_hyperkube(argv, binary):
            argv = argv[1:]
        flags = parse_flags(argv)
        info = ProcessInfo(pid=pid, comm=comm, argv=argv, flags=flags, root=str(cfg.procfs(pid, "root")),
                           env_path=_env_path(cfg, pid), exe=exe, identity=identity)
        if "config" in flags:
            info.config_path = flags["config"]
            _read_config(cfg, info, binary, configmap, timeout_s)
        return info
    if denied:
        raise CollectError(f"permission denied reading /proc of {denied} {binary} process(es)")
    untrusted = f"; not trusted: {'; '.join(ignored)}" if ignored else ""
    raise Absent(f"no {binary} process in this network namespace{untrusted}")


def collect_kube_proxy(ctx: CollectContext) -> ProcessInfo:
    return find_process(ctx.cfg, "kube-proxy", configmap=ctx.kube_proxy_configmap,
                        timeout_s=max(0.5, min(3.0, ctx.deadline_s / 4)))


def collect_kubelet(ctx: CollectContext) -> ProcessInfo:
    return find_process(ctx.cfg, "kubelet", timeout_s=max(0.5, min(3.0, ctx.deadline_s / 4)))
