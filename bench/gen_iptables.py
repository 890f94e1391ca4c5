"""Generate kube-proxy-shaped iptables rule sets (iptables mode, v1.3x layout) of N Services x E endpoints.

The output is an `iptables-restore` input as kube-proxy's full sync writes it, with the real chain
hashing (agent.kube_hash, the same as kube-proxy's portProtoHash) and comments: per Service a
KUBE-SERVICES dispatch, a KUBE-SVC chain with the random-probability ladder and one KUBE-SEP chain per
endpoint (masquerade + DNAT). Every 10th Service also gets a NodePort (KUBE-EXT chain and KUBE-NODEPORTS
rules) and every 50th has no endpoints (a filter-table REJECT), so the reader meets every shape it must
handle. Load it, then tests/../fixtures node-base.rules with --noflush, to get a complete node.

    python bench/gen_iptables.py 1000 5 > /tmp/1k.rules
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.kube_hash import EXT, SVC, endpoint_chain, service_chain

POD_CIDR = "10.0.0.0/8"
CLUSTER_BASE = int(ipaddress.IPv4Address("172.30.0.0"))
POD_BASE = int(ipaddress.IPv4Address("10.1.0.0"))

FILTER_HEAD = """\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 \
-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED \
-j ACCEPT
"""

NAT_FIXED = """\
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
"""


def _ip(base: int, i: int) -> str:
    return str(ipaddress.IPv4Address(base + i))


def generate(services: int, endpoints: int) -> Iterator[str]:
    """Lines of one full-sync restore input (filter then nat, as kube-proxy writes it)."""
    yield FILTER_HEAD
    for i in range(services):
        if i % 50 == 49:
            name = f"ns{i}/svc{i}:p80"
            yield (f'-A KUBE-SERVICES -m comment --comment "{name} has no endpoints" -m tcp -p tcp '
                   f"-d {_ip(CLUSTER_BASE, i + 1)} --dport 80 -j REJECT\n")
    yield "COMMIT\n*nat\n:KUBE-NODEPORTS - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n"
    yield ":KUBE-POSTROUTING - [0:0]\n"
    rules: list[str] = []
    dispatch: list[str] = []
    nodeports: list[str] = []
    for i in range(services):
        if i % 50 == 49:
            continue
        name, cip = f"ns{i}/svc{i}:p80", _ip(CLUSTER_BASE, i + 1)
        svc = service_chain(SVC, name, "tcp")
        yield f":{svc} - [0:0]\n"
        dispatch.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m tcp -p tcp -d {cip} '
                        f"--dport 80 -j {svc}\n")
        rules.append(f'-A {svc} -m comment --comment "{name} cluster IP" -m tcp -p tcp -d {cip} --dport 80 '
                     f"! -s {POD_CIDR} -j KUBE-MARK-MASQ\n")
        if i % 10 == 9:
            ext = service_chain(EXT, name, "tcp")
            yield f":{ext} - [0:0]\n"
            port = 30000 + i % 2768
            nodeports.append(f'-A KUBE-NODEPORTS -m comment --comment {name} -m tcp -p tcp --dport {port} -j {ext}\n')
            rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                         "-j KUBE-MARK-MASQ\n")
            rules.append(f"-A {ext} -j {svc}\n")
        for e in range(endpoints):
            ep = f"{_ip(POD_BASE, i * endpoints + e)}:8080"
            sep = endpoint_chain(name, "tcp", ep)
            yield f":{sep} - [0:0]\n"
            rules.extend(_endpoint_rules(name, svc, ep, endpoints - e))
    yield from dispatch
    yield ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
           'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n')
    yield from nodeports
    yield NAT_FIXED
    yield from rules
    yield "COMMIT\n"


def _endpoint_rules(name: str, svc: str, ep: str, left: int) -> list[str]:
    """The ladder rule for one endpoint (`left` endpoints from here on) and its KUBE-SEP chain's rules."""
    sep = endpoint_chain(name, "tcp", ep)
    prob = "" if left == 1 else f" -m statistic --mode random --probability {1.0 / left:0.10f}"
    return [f'-A {svc} -m comment --comment "{name} -> {ep}"{prob} -j {sep}\n',
            f"-A {sep} -m comment --comment {name} -s {ep.split(':')[0]} -j KUBE-MARK-MASQ\n",
            f"-A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {ep}\n"]


def changed_endpoints(services: int, endpoints: int, every: int, back: bool = False) -> Iterator[str]:
    """A partial sync as kube-proxy writes it (restore with --noflush) after the first endpoint of every
    `every`-th Service of `generate(services, endpoints)` moved to a new pod IP (`back`: moved back again):
    the Service's KUBE-SVC chain is declared again (which flushes it) and rewritten, the new KUBE-SEP chain
    written, and the old one flushed (declared) and deleted."""
    chains: list[str] = []
    rules: list[str] = []
    deleted: list[str] = []
    for i in range(0, services, every):
        if i % 50 == 49:
            continue
        name, cip = f"ns{i}/svc{i}:p80", _ip(CLUSTER_BASE, i + 1)
        svc = service_chain(SVC, name, "tcp")
        eps = [f"{_ip(POD_BASE, i * endpoints + e)}:8080" for e in range(endpoints)]
        moved = f"{_ip(POD_BASE, services * endpoints + i)}:8080"
        old, eps[0] = (moved, eps[0]) if back else (eps[0], moved)
        deleted.append(endpoint_chain(name, "tcp", old))
        chains += [svc, endpoint_chain(name, "tcp", eps[0])]
        rules.append(f'-A {svc} -m comment --comment "{name} cluster IP" -m tcp -p tcp -d {cip} --dport 80 '
                     f"! -s {POD_CIDR} -j KUBE-MARK-MASQ\n")
        for e, ep in enumerate(eps):
            ep_rules = _endpoint_rules(name, svc, ep, endpoints - e)
            rules.extend(ep_rules if e == 0 else ep_rules[:1])  # the other KUBE-SEP chains stay as they are
    yield "*nat\n"
    yield from (f":{chain} - [0:0]\n" for chain in chains + deleted)
    yield from rules
    yield from (f"-X {sep}\n" for sep in deleted)
    yield "COMMIT\n"


def rule_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-A"))


def main() -> None:
    services, endpoints = int(sys.argv[1]), int(sys.argv[2])
    sys.stdout.writelines(generate(services, endpoints))


if __name__ == "__main__":
    main()
