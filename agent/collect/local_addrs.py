"""Which URLs the agent may fetch because kube-proxy's flags or config name them: this node's only.

kube-proxy's bind addresses come from its command line or config; fetched blindly, they would let
whoever controls those (or a process posing as kube-proxy) point the agent at any host and have the
answer echoed into /findings. So a URL is fetched only when its host is an IP literal on loopback or
one of this network namespace's own addresses (with hostNetwork: the node's). Names are refused (DNS
could answer anything).
"""

from __future__ import annotations

import ipaddress
import urllib.request
from urllib.parse import urlsplit

from agent.pyroute2_parts import IPRoute


def own_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address configured on an interface of this network namespace (rtnetlink, no privilege)."""
    with IPRoute() as ipr:
        return {ipaddress.ip_address(str(a.get("IFA_ADDRESS")).split("%")[0])
                for a in ipr.addr("dump") if a.get("IFA_ADDRESS") is not None}


def refusal(url: str) -> str | None:
    """None when `url` is on this node; else why it is not fetched (one sentence)."""
    host = urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"not fetched: {host or url!r} is not an IP address of this node"
    if ip.is_loopback:
        return None
    try:
        mine = own_addresses()
    except OSError as exc:
        return f"not fetched: this node's addresses could not be listed ({exc})"
    return None if ip in mine else f"not fetched: {ip} is not loopback or an address of this node"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the 3xx it is: following it could leave this node."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def local_opener() -> urllib.request.OpenerDirector:
    """urllib without the environment's proxy (a node-local URL must not travel) and without redirects."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
