"""kube-proxy's and kubelet's effective settings from their flags and config files (pure, no I/O).

Precedence follows the issue's reading of kube-bench: a command-line flag wins over the config file,
which wins over the built-in default; each value keeps where it came from, for the finding's evidence.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from agent.model import ProcessInfo

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's time.Duration string ("30s", "1m0s", "500ms") in seconds. Raises ValueError otherwise."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a Go duration: {text!r}")
    return total


def parse_version(text: str | None) -> tuple[int, int] | None:
    """("v1.31.2-eks-1") -> (1, 31); None when unknown or unreadable."""
    if not text:
        return None
    m = re.match(r"v?(\d+)\.(\d+)", text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "flag --proxy-mode", "config /var/lib/kube-proxy/config.conf: mode", "default"


def _config_get(config: dict[str, Any] | None, dotted: str) -> Any:
    node: Any = config or {}
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def pick(proc: ProcessInfo | None, flag: str, config_key: str, default: Any) -> Setting:
    """Flag > config file > default, with the source kept as evidence."""
    if proc is not None:
        if flag in proc.flags:
            return Setting(proc.flags[flag], f"flag --{flag}")
        value = _config_get(proc.config, config_key)
        if value not in (None, ""):
            return Setting(value, f"{proc.config_source or f'config {proc.config_path}'}: {config_key}")
    return Setting(default, "default")


def config_unknown(proc: ProcessInfo | None) -> bool:
    """The process names a --config that no source could read: its defaults are guesses, not facts."""
    return proc is not None and proc.config_path is not None and proc.config is None


def cidr_includes_loopback(cidr: str) -> bool:
    """Does a --nodeport-addresses entry cover 127.0.0.0/8? Keywords ("primary") never do."""
    try:
        return ipaddress.ip_network(cidr, strict=False).overlaps(ipaddress.ip_network("127.0.0.0/8"))
    except ValueError:
        return False


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


# kube-proxy ------------------------------------------------------------------------------------------

KNOWN_MODES = ("iptables", "ipvs", "nftables", "kernelspace")
REMOVED_MODES = ("userspace",)


@dataclass(frozen=True)
class KubeProxySettings:
    mode: Setting
    sync_period_s: Setting
    healthz_address: Setting
    metrics_address: Setting
    localhost_nodeports: Setting
    nodeport_addresses: Setting


def kube_proxy_settings(proc: ProcessInfo | None) -> KubeProxySettings:
    mode = pick(proc, "proxy-mode", "mode", "iptables")
    mode = Setting(str(mode.value).strip().lower() or "iptables", mode.source)
    # The sync period lives under the mode's own section of the config.
    section = "nftables" if mode.value == "nftables" else "ipvs" if mode.value == "ipvs" else "iptables"
    sync = pick(proc, f"{section}-sync-period" if section != "nftables" else "iptables-sync-period",
                f"{section}.syncPeriod", "30s")
    try:
        seconds = parse_go_duration(str(sync.value))
        # kube-proxy defaults a zero duration (kubeadm writes "0s" for "unset") to 30s.
        sync = Setting(seconds, sync.source) if seconds > 0 else Setting(30.0, f"default ({sync.source} is 0s)")
    except ValueError:
        sync = Setting(30.0, f"default (unreadable {sync.source}: {sync.value!r})")
    addrs = pick(proc, "nodeport-addresses", "nodePortAddresses", [])
    addr_list = addrs.value if isinstance(addrs.value, list) else [a for a in str(addrs.value).split(",") if a]
    return KubeProxySettings(
        mode=mode,
        sync_period_s=sync,
        healthz_address=pick(proc, "healthz-bind-address", "healthzBindAddress", "0.0.0.0:10256"),
        metrics_address=pick(proc, "metrics-bind-address", "metricsBindAddress", "127.0.0.1:10249"),
        localhost_nodeports=pick(proc, "iptables-localhost-nodeports", "iptables.localhostNodePorts", True),
        nodeport_addresses=Setting(addr_list, addrs.source),
    )


def local_url(bind: str, default_port: int, path: str) -> str:
    """The URL that reaches a server bound to `bind` ("0.0.0.0:10256", ":10249", "[::]:10256",
    "127.0.0.1") from this node: wildcard hosts are reached on loopback."""
    bind = bind.strip()
    host, port = bind, str(default_port)
    if bind.startswith("["):
        host, _, rest = bind[1:].partition("]")
        port = rest.lstrip(":") or port
    elif bind.count(":") == 1:
        host, port = bind.split(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"
