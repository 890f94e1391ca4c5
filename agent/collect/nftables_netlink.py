"""kube-proxy's chains and rules straight from nf_tables netlink (NETLINK_NETFILTER, read-only dumps).

Why not `nft list table`: at 10k Services (120k rules, 10k anonymous numgen vmaps) nft needs ~20 s and
400-900 MB to build and print its whole cache, of which the checks use a few facts per rule. These
dumps return the same kernel objects (GETCHAIN, GETRULE per chain, GETSET) and only those facts are
decoded from each message as it arrives.

The decoding is the kernel's uapi (include/uapi/linux/netfilter/nf_tables.h); only GET requests are
ever sent. The ruleset generation is read before and after, and the read is repeated if kube-proxy
committed a change in between (or a dump was interrupted), so the chains, rules and vmaps are one
consistent state.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator

from agent.collect.base import CollectError
from agent.model.nftables import TABLE, Chain, KubeProxyTable

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET = 1, 4, 7, 10
NFT_MSG_GETGEN = 16
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
FAMILIES = {"ip": socket.AF_INET, "ip6": socket.AF_INET6}  # NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10
HOOKS = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
VERDICTS = {0: "drop", 1: "accept", -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
NFT_REG_VERDICT = 0
NFT_NAT_DNAT = 1

_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_BE32S = struct.Struct(">i")
_BE64 = struct.Struct(">Q")


class Interrupted(Exception):
    """The ruleset changed during a dump."""


def attrs(data: bytes | memoryview, start: int = 0, end: int | None = None) -> dict[int, memoryview]:
    """Netlink attributes in data[start:end] by type (NLA_F_NESTED/NET_BYTEORDER bits cleared)."""
    view = memoryview(data)
    end = len(view) if end is None else end
    out: dict[int, memoryview] = {}
    pos = start
    while pos + 4 <= end:
        length, kind = _ATTR.unpack_from(view, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = view[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return out


def attr_list(data: memoryview) -> Iterator[memoryview]:
    """The payloads of a nested NFTA_LIST_ELEM list, in order."""
    pos = 0
    while pos + 4 <= len(data):
        length, _ = _ATTR.unpack_from(data, pos)
        if length < 4:
            break
        yield data[pos + 4:pos + length]
        pos += (length + 3) & ~3


def text(value: memoryview | None) -> str:
    """A NUL-terminated string attribute."""
    return bytes(value).split(b"\0", 1)[0].decode() if value is not None else ""


def u32(value: memoryview | None) -> int:
    return _BE32.unpack(value)[0] if value is not None else 0


def verdict(data: memoryview) -> tuple[str, str | None]:
    """NFTA_DATA_VERDICT payload -> ("goto", "chain") / ("drop", None)."""
    v = attrs(data)
    code = _BE32S.unpack(v[1])[0] if 1 in v else 0
    return VERDICTS.get(code, str(code)), text(v.get(2)) or None


class NfTablesSocket:
    def __init__(self, timeout_s: float) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.settimeout(timeout_s)
        self.sock.bind((0, 0))
        self.seq = int(time.time())
        self.buf = bytearray(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def dump(self, msg: int, family: int, payload: bytes = b"", *, dump: bool = True,
             with_family: bool = False) -> Iterator[memoryview]:
        """Send one GET request and yield each reply's attributes area (after nfgenmsg); with_family:
        the nfgenmsg too (its first byte is the object's family)."""
        self.seq += 1
        nfgen = struct.pack("=BBH", family, 0, 0)
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        body = nfgen + payload
        self.sock.send(_HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, self.seq,
                                 0) + body)
        while True:
            n = self.sock.recv_into(self.buf)
            view = memoryview(self.buf)[:n]
            pos = 0
            while pos + _HDR.size <= n:
                length, kind, mflags, seq, _ = _HDR.unpack_from(view, pos)
                if length < _HDR.size:
                    raise CollectError("nf_tables netlink: malformed reply")
                if seq == self.seq:
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        err = struct.unpack_from("=i", view, pos + _HDR.size)[0]
                        if err == 0:
                            return
                        raise OSError(-err, f"nf_tables netlink request {msg}: {os.strerror(-err)}")
                    if mflags & NLM_F_DUMP_INTR:
                        raise Interrupted()
                    yield view[pos + _HDR.size + (0 if with_family else 4):pos + length]
                    if not dump:
                        return
                pos += (length + 3) & ~3

    def generation(self) -> int:
        """The nf_tables ruleset generation of this network namespace (NFTA_GEN_ID): every committed
        nf_tables transaction, in any table or family, increments it."""
        for a in self.dump(NFT_MSG_GETGEN, socket.AF_UNSPEC, dump=False):
            gen = attrs(a).get(1)
            if gen is not None and len(gen) == 4:
                return u32(gen)
        raise OSError(errno.ENODATA, "nf_tables netlink: no generation in the GETGEN reply")


def read_generation(timeout_s: float) -> int:
    """One NFT_MSG_GETGEN request: the ruleset generation, which says whether anything in nf_tables
    changed since it was last read (the fast path of agent/collect/nftables.py). OSError: refused."""
    nl = NfTablesSocket(timeout_s)
    try:
        return nl.generation()
    finally:
        nl.close()


NFT_SET_ANONYMOUS = 0x1


def list_sets(family: str, timeout_s: float) -> set[str]:
    """The names of the named sets and maps in kube-proxy's table of `family` (one GETSET dump): the
    positive answer to "does this map exist", where a failed `nft list map` says nothing."""
    table_name = nla(1, TABLE.encode() + b"\0")  # NFTA_SET_TABLE
    nl = NfTablesSocket(timeout_s)
    try:
        names = set()
        for a in nl.dump(NFT_MSG_GETSET, FAMILIES[family], table_name):
            s = attrs(a)
            if text(s.get(1)) == TABLE and not u32(s.get(3)) & NFT_SET_ANONYMOUS:  # NFTA_SET_{TABLE,FLAGS}
                names.add(text(s.get(2)))
        return names
    finally:
        nl.close()


FAMILY_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}


def list_tables(timeout_s: float) -> list[tuple[str, str]]:
    """(family, name) of every nftables table in this network namespace: one GETTABLE dump (where
    `nft -j list tables` would build its whole cache: 10 s and 400 MB at 10k Services)."""
    nl = NfTablesSocket(timeout_s)
    try:
        out = []
        for msg in nl.dump(NFT_MSG_GETTABLE, socket.AF_UNSPEC, with_family=True):
            family = FAMILY_NAMES.get(msg[0], str(msg[0]))
            out.append((family, text(attrs(msg, 4).get(1))))
        return out
    finally:
        nl.close()


def nla(kind: int, value: bytes) -> bytes:
    data = _ATTR.pack(4 + len(value), kind) + value
    return data + b"\0" * (-len(data) % 4)


def read_chains(table: KubeProxyTable, timeout_s: float, attempts: int = 3) -> None:
    """Fill table.chains (and affinity timeouts) from the kernel: every chain's name and hook, and the
    rules of the chains traffic can reach (see _read_once). Retries when the ruleset changes meanwhile."""
    family = FAMILIES[table.family]
    map_refs = Counter(e.target for elements in table.maps.values() for e in elements if e.target)
    nl = NfTablesSocket(timeout_s)
    try:
        for _ in range(attempts):
            gen = nl.generation()
            try:
                chains, timeouts = _read_once(nl, family, map_refs)
            except Interrupted:
                continue
            if nl.generation() == gen:
                table.chains, table.affinity_timeouts = chains, timeouts
                return
            del chains, timeouts  # let a read that straddled a change go before the next is built beside it
        raise CollectError(f"kube-proxy changed its nftables table during {attempts} reads in a row")
    finally:
        nl.close()


def _read_once(nl: NfTablesSocket, family: int, map_refs: Counter[str]) -> tuple[dict[str, Chain], dict[str, int]]:
    """Chains and sets in one dump each; then rules chain by chain, only for the chains traffic can
    reach: the base chains and the map targets, what they jump to, and the endpoint chains of each
    Service chain with a numgen vmap (kube-proxy names them after the Service port).

    One dump of all rules would do, but the kernel resumes a rule dump by counting from the table's
    first rule, so its cost grows with the square of the rules (6 s for 120k rules); a dump per chain
    is a hash lookup. The numgen vmaps are anonymous sets, and the kernel finds each one by walking the
    table's set list (~0.6 ms each at 10k Services, 6 s in all), so their elements are not read: which
    endpoint chains a vmap holds follows from the kernel's use count of each endpoint chain
    (NFTA_CHAIN_USE: its rules plus every reference to it) less its rules and the references the
    rules and maps read here make (affinity gotos). An endpoint chain
    is in its Service port's service- (cluster) vmap when referenced once, and in the local- vmap too
    when referenced twice (kube-proxy's local endpoints are a subset of its cluster endpoints).
    Chains nothing reaches (flushed leftovers kube-proxy deletes a second later) are listed, not read."""
    table_name = nla(1, TABLE.encode() + b"\0")  # NFTA_{CHAIN,RULE,SET,SET_ELEM_LIST}_TABLE are all type 1
    chains: dict[str, Chain] = {}
    use: dict[str, int] = {}
    endpoints_of: dict[str, list[str]] = {}  # "ns/svc/proto/port" -> its endpoint chains
    for a in nl.dump(NFT_MSG_GETCHAIN, family, table_name):
        c = attrs(a)
        if text(c.get(1)) != TABLE:
            continue
        chain = Chain(name=text(c.get(3)))
        if 4 in c:
            hook = attrs(c[4])
            chain.hook = HOOKS.get(u32(hook.get(1)), str(u32(hook.get(1))))
            chain.priority = _BE32S.unpack(hook[2])[0] if 2 in hook else None
            chain.type = text(c.get(7)) or None
        chains[chain.name] = chain
        if chain.name.startswith("endpoint-"):
            use[chain.name] = u32(c.get(6))
            endpoints_of.setdefault(_service_body(chain.name), []).append(chain.name)
    timeouts: dict[str, int] = {}
    for a in nl.dump(NFT_MSG_GETSET, family, table_name):
        s = attrs(a)
        name = text(s.get(2))
        if text(s.get(1)) == TABLE and name.startswith("affinity-") and 11 in s:
            timeouts[name] = _BE64.unpack(s[11])[0] // 1000
    numgen: list[Chain] = []
    ones: dict[str, tuple[str]] = {}  # target -> the one-target tuple of the chains that jump to it alone
    queue = [c.name for c in chains.values() if c.hook is not None] + sorted(map_refs)
    while queue:
        found = chains.get(queue.pop())
        if found is None or found.rules_read:
            continue  # a missing chain is the structure check's finding (dangling goto)
        if _read_rules(nl, family, table_name, found, chains, ones):
            numgen.append(found)
            queue.extend(endpoints_of.get(_service_body(found.name), []))
        queue.extend(found.targets)
    # References to endpoint chains other than the vmaps': rule jumps (affinity gotos), map elements.
    refs = Counter(t for c in chains.values() for t in c.targets if t in use)
    refs.update({t: n for t, n in map_refs.items() if t in use})
    _vmaps_by_reference(numgen, endpoints_of, use, refs, chains)
    return chains, timeouts


def _vmaps_by_reference(numgen: list[Chain], endpoints_of: dict[str, list[str]], use: dict[str, int],
                        refs: Counter[str], chains: dict[str, Chain]) -> None:
    """Each numgen chain's vmap members: its Service port's endpoint chains whose use count (the
    kernel's: rules plus references) exceeds their own rules and the references read elsewhere. A local-
    chain's endpoints are in its service- chain's vmap too, when the port has both (policy Local)."""
    local = {_service_body(c.name) for c in numgen if c.name.startswith("local-")}  # few: policy Local ports
    both = {body for body in (_service_body(c.name) for c in numgen if c.name.startswith("service-")) if body in local}
    for chain in numgen:
        body = _service_body(chain.name)
        need = 2 if body in both and chain.name.startswith("local-") else 1
        members = sorted(e for e in endpoints_of.get(body, [])
                         if use.get(e, 0) - chains[e].rule_count - refs[e] >= need)
        chain.vmap = {str(i): e for i, e in enumerate(members)}
        chain.vmap_by_reference = True


def _service_body(chain: str) -> str:
    """"endpoint-HASH-ns/svc/tcp/p80__10.0.0.1/80" or "service-HASH-ns/svc/tcp/p80" -> "ns/svc/tcp/p80"."""
    parts = chain.split("-", 2)
    return parts[2].split("__", 1)[0] if len(parts) == 3 else ""


def _read_rules(nl: NfTablesSocket, family: int, table_name: bytes, chain: Chain, chains: dict[str, Chain],
                ones: dict[str, tuple[str]]) -> list[str]:
    """Read one chain's rules; return the anonymous numgen vmap sets they look up. `chains` and `ones`:
    the objects its jump targets share (see _add_rule)."""
    chain.rules_read = True
    anon_sets: list[str] = []
    for a in nl.dump(NFT_MSG_GETRULE, family, table_name + nla(2, chain.name.encode() + b"\0")):
        r = attrs(a)
        if text(r.get(2)) != chain.name:
            continue  # a kernel that ignores the chain filter dumps the whole table: keep this chain's
        anon = _add_rule(chain, r.get(4), chains, ones)
        if anon is not None:
            anon_sets.append(anon)
    return anon_sets


_WANTED = frozenset((b"immediate", b"numgen", b"lookup", b"nat", b"reject"))


def _add_rule(chain: Chain, exprs: memoryview | None, chains: dict[str, Chain], ones: dict[str, tuple[str]]
              ) -> str | None:
    """Keep one rule's facts; return the anonymous vmap set it looks up with numgen, if any. Only the
    expressions that carry a fact are decoded past their name (most are payload/cmp/meta)."""
    chain.rule_count += 1
    regs: dict[int, bytes] = {}
    numgen_mod: int | None = None
    anon: str | None = None
    for elem in attr_list(exprs) if exprs is not None else ():
        # NFTA_EXPR_NAME comes first: [len][type][name\0...], then NFTA_EXPR_DATA
        name_len = _ATTR.unpack_from(elem, 0)[0]
        name = bytes(elem[4:name_len]).rstrip(b"\0")
        if name not in _WANTED:
            continue
        e = attrs(elem, (name_len + 3) & ~3)
        data = attrs(e[2]) if 2 in e else {}
        if name == b"immediate":
            value = attrs(data[2]) if 2 in data else {}
            if 2 in value:
                kind, target = verdict(value[2])
                if target is not None and kind in ("jump", "goto"):
                    # the target's own name object, and the one-target tuple of the chain jumped to: names recur as
                    # targets ~3 times, and ~50k of ~60k chains at 10k Services jump to mark-for-masquerade alone
                    known = chains.get(target)
                    target = known.name if known is not None else target
                    chain.targets = (*chain.targets, target) if chain.targets else ones.setdefault(target, (target,))
            elif 1 in value:
                regs[u32(data.get(1))] = bytes(value[1])
        elif name == b"numgen":
            numgen_mod = u32(data.get(2))
        elif name == b"lookup":
            set_name = text(data.get(1))
            is_vmap = 3 in data and u32(data[3]) == NFT_REG_VERDICT
            if is_vmap and set_name.startswith("__") and numgen_mod is not None:
                chain.numgen_mod, anon = numgen_mod, set_name
            elif is_vmap:
                chain.vmap_maps = [*(chain.vmap_maps or []), set_name]
            elif set_name.startswith("affinity-"):
                chain.affinity_sets = [*(chain.affinity_sets or []), set_name]
        elif name == b"nat" and u32(data.get(1)) == NFT_NAT_DNAT:
            chain.dnat += (_nat_target(regs, data),)
        elif name == b"reject":
            chain.rejects = True
    return anon


def _nat_target(regs: dict[int, bytes], data: dict[int, memoryview]) -> str:
    family = u32(data.get(2))
    addr = regs.get(u32(data.get(3)), b"") if 3 in data else b""
    ip = socket.inet_ntop(socket.AF_INET6 if family == socket.AF_INET6 else socket.AF_INET,
                          addr[:16] if family == socket.AF_INET6 else addr[:4]) if addr else ""
    if 5 not in data:
        return ip
    port = struct.unpack(">H", regs.get(u32(data[5]), b"\0\0")[:2])[0]
    return f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
