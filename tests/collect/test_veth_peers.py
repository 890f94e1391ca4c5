"""Reading a pod's namespace through /proc/<pid>/net (the path the DaemonSet, without CAP_SYS_ADMIN,
takes): texts captured from a namespace with eth0 at 10.85.0.5/24 and fd00::5/64, plus a second veth."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from agent.collect.veth_peers import FarSide, parse_fib_trie, parse_if_inet6, parse_igmp_names, read_netlink
from tests.testbed import require_netns

FIB_TRIE = """Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.85.0.0/24 2 0 2
        +-- 10.85.0.0/29 2 0 2
           |-- 10.85.0.0
              /24 link UNICAST
           |-- 10.85.0.5
              /32 host LOCAL
        |-- 10.85.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.85.0.0/24 2 0 2
        +-- 10.85.0.0/29 2 0 2
           |-- 10.85.0.0
              /24 link UNICAST
           |-- 10.85.0.5
              /32 host LOCAL
        |-- 10.85.0.255
           /32 link BROADCAST
"""
IF_INET6 = """fe80000000000000d06eecfffe9a94cf 03 40 20 c0     eth0
fe80000000000000d8f619fffe30028a 02 40 20 c0       x0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000005 03 40 00 82     eth0
"""
IGMP = """Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
2\tx0        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
3\teth0      :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
"""


def test_fib_trie_gives_local_ipv4_addresses_without_loopback_network_or_broadcast() -> None:
    assert parse_fib_trie(FIB_TRIE) == ["10.85.0.5"]


def test_if_inet6_gives_global_addresses_per_ifindex_and_names() -> None:
    side = FarSide()
    parse_if_inet6(IF_INET6, side)
    assert side.addrs == {3: ["fd00::5"]}
    assert side.names == {3: "eth0", 2: "x0", 1: "lo"}


def test_igmp_names_every_ipv4_interface() -> None:
    side = FarSide()
    parse_igmp_names(IGMP, side)
    assert side.names == {1: "lo", 2: "x0", 3: "eth0"}


def test_reading_a_missing_namespace_never_creates_it() -> None:
    """pyroute2's IPRoute(netns=...) creates a missing namespace unless flags=0: the collector must not."""
    require_netns()
    path = Path("/run/netns") / f"svcd-{secrets.token_hex(4)}"
    try:
        with pytest.raises(OSError):
            read_netlink(str(path))
        assert not path.exists()
    finally:
        if path.exists():
            subprocess.run(["ip", "netns", "del", path.name], check=False)
