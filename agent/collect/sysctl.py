"""The sysctls the guide's prerequisites depend on, read from /proc/sys (per network namespace)."""

from __future__ import annotations

from agent.collect.base import CollectContext, read_text
from agent.model import Sysctls

KEYS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",  # absent until br_netfilter is loaded
    "net/bridge/bridge-nf-call-ip6tables",
)


def collect(ctx: CollectContext) -> Sysctls:
    values: dict[str, str | None] = {}
    for key in KEYS:
        text = read_text(ctx.cfg.procfs("sys", *key.split("/")))
        values[key] = text.strip() if text is not None else None
    return Sysctls(values=values)
