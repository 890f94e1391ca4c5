"""kube-proxy's nftables table(s): `table ip kube-proxy` and `table ip6 kube-proxy`.

Which maps and sets the table holds comes from one nf_tables netlink dump of its sets; each dispatch
map and set it holds is then read with one targeted `nft -j list map|set`, element by element with
kube-proxy's comments (~0.1-0.4 s each at 10k Services). The chains and rules come from nf_tables
netlink dumps (agent/collect/nftables_netlink.py), reduced to what the checks use as they arrive: nft
has no cheap way to list many chains (one `list chain` per process re-reads the whole cache, ~90 ms
each, and several `list chain` in one `nft -f` batch fail on its cache filter), and its full `list
table` costs ~20 s and 400-900 MB at 10k Services (bench/bench_nftables.py). If netlink is refused,
`nft -t -y list table` text gives the chains and the set and map names instead (nftables_text.py).

What is trusted: a map is absent only when the table's own list of sets does not name it. An `nft`
that fails, prints nothing, or prints what does not parse as the object asked for has failed, and so
has the whole read (agent.source_failed), never "the map does not exist". The read is one state: the
nf_tables generation is the same before and after it, or it is read again.

The agent's reader (NftablesReader) remembers its last whole read and the generation it was read at;
while the generation is unchanged (one netlink request), nothing in nf_tables has changed and the
read is skipped. `collect` is the same read remembering nothing (`check`, benchmarks).

Read-only: only `list` commands and GET requests. nft would make the kernel load nf_tables on a node
that never used it, so the module is looked for first and its absence is reported as "absent".
"""

from __future__ import annotations

import dataclasses
import errno
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from agent.collect.base import Absent, CollectContext, CollectError, read_text
from agent.collect.nftables_netlink import list_sets, list_tables, read_chains, read_generation
from agent.collect.nftables_text import MalformedListing, add_text
from agent.collect.subproc import MIB, run_command, stream_lines
from agent.model.nftables import MAPS, SETS, TABLE, KubeProxyTable, NftablesState, VerdictElement

FAMILIES = ("ip", "ip6")
JSON_CAP = 256 * MIB  # one map's listing: ~2 MB at 10k Services
TEXT_CAP = 1024 * MIB  # the whole table as text, streamed (not held): ~14 MB at 10k Services
ATTEMPTS = 3  # whole reads tried when kube-proxy commits during one


def collect(ctx: CollectContext) -> NftablesState:
    """One whole read, remembering nothing."""
    if not kernel_module_present(ctx, "nf_tables"):
        raise Absent("the nf_tables kernel module is not loaded (nothing uses nftables on this node)")
    return read_consistent(Nft(ctx))[0]


class NftablesReader:
    """The nftables source as the agent runs it (one per runner): a whole read, or, while the nf_tables
    generation is the one the last whole read was made at, that read again with `read_at` set to now
    (the kernel has confirmed it is still current). Results are never changed once handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the runner may start a read while a hung one is still going
        self._last: tuple[int, NftablesState] | None = None

    def __call__(self, ctx: CollectContext) -> NftablesState:
        return self.read(ctx)

    def read(self, ctx: CollectContext) -> NftablesState:
        if not kernel_module_present(ctx, "nf_tables"):
            self._remember(None)
            raise Absent("the nf_tables kernel module is not loaded (nothing uses nftables on this node)")
        nft = Nft(ctx)
        with self._lock:
            last = self._last
        if last is not None:
            try:
                unchanged = read_generation(nft.left()) == last[0]
            except OSError:
                unchanged = False
            if unchanged:
                return dataclasses.replace(last[1], read_at=time.time())
            self._remember(None)  # changed: the last read is let go before the next is built beside it
            last = None
        try:
            state, generation = read_consistent(nft)
        except BaseException:
            self._remember(None)
            raise
        self._remember((generation, state) if generation is not None else None)
        return state

    def _remember(self, last: tuple[int, NftablesState] | None) -> None:
        with self._lock:
            self._last = last


def read_consistent(nft: Nft) -> tuple[NftablesState, int | None]:
    """A whole read within one nf_tables generation, and that generation (None when netlink refuses
    to tell it: then the read is taken as it comes, as nft itself would)."""
    for _ in range(ATTEMPTS):
        before = _generation(nft)
        state = read_all(nft)
        if before is None or _generation(nft) == before:
            return state, before
        del state  # let a read that straddled a change go before the next is built beside it (~30 MiB at 10k)
    raise CollectError(f"nftables changed during each of {ATTEMPTS} reads in a row (kube-proxy busy syncing)")


def _generation(nft: Nft) -> int | None:
    try:
        return read_generation(nft.left())
    except OSError:
        return None


def read_all(nft: Nft) -> NftablesState:
    version = run_command(["nft", "--version"], nft.left(), max_stdout=64 * 1024).split(" (")[0].strip()
    tables_of: list[tuple[str, str]]
    try:
        tables_of = list_tables(nft.left())
    except TimeoutError:
        raise
    except OSError:  # netlink refused: ask nft (which builds its whole cache for this, see above)
        tables_of = [(str(o["table"].get("family")), str(o["table"].get("name")))
                     for o in nft.json(["list", "tables"]) if isinstance(o.get("table"), dict)]
    present = {family for family, name in tables_of if name == TABLE and family in FAMILIES}
    other = [f"{family} {name}" for family, name in tables_of if not (name == TABLE and family in FAMILIES)]
    tables = [read_table(nft, family) for family in FAMILIES if family in present]
    return NftablesState(nft_version="".join(c for c in version[:64] if c.isprintable()), tables=tables,
                         other_tables=other, read_at=time.time(),
                         read_mode="maps and sets: nft -j list map|set; chains: "
                                   + (nft.fallback or "nf_tables netlink dumps"))


def read_table(nft: Nft, family: str) -> KubeProxyTable:
    table = KubeProxyTable(family=family)
    text = False
    try:
        declared = list_sets(family, nft.left())
    except TimeoutError:
        raise
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise CollectError(f"table {family} {TABLE} went away during the read") from exc
        # netlink refused (an old kernel, a seccomp profile): nft's listing says which sets exist
        declared, text = read_text_listing(nft, table, exc), True
    for kind, names in (("map", MAPS), ("set", SETS)):
        for name in names:
            if name in declared:  # else absent: the table's own list of sets does not name it
                add_object(table, kind, name, nft.json(["list", kind, family, TABLE, name]))
    if not text:
        try:
            read_chains(table, nft.left())
        except TimeoutError:
            raise
        except OSError as exc:
            table.chains, table.affinity_timeouts = {}, {}
            read_text_listing(nft, table, exc)
    share_chain_names(table)
    return table


def share_chain_names(table: KubeProxyTable) -> None:
    """Map elements name their target chain with that chain's own name object, not a copy of it from nft's
    JSON (~1 MiB of a read at 10k Services)."""
    for elements in table.maps.values():
        for element in elements:
            known = table.chains.get(element.target) if element.target else None
            if known is not None:
                element.target = known.name


def read_text_listing(nft: Nft, table: KubeProxyTable, why: OSError) -> set[str]:
    """The chains (and the declared set and map names) from `nft -t -y list table`: -t (terse): no
    named-set elements; -y: numeric priorities. Streamed: ~14 MB at 10k Services."""
    argv = ["nft", "-t", "-y", "list", "table", table.family, TABLE]
    try:
        declared = add_text(table, stream_lines(argv, nft.left(), max_stdout=TEXT_CAP))
    except MalformedListing as exc:
        raise CollectError(f"`{' '.join(argv)}` printed what is not a whole listing: {exc}") from exc
    nft.fallback = f"nft -t -y list table (netlink read failed: {why})"
    return declared


class Nft:
    """`nft -j` under the collector's deadline."""

    def __init__(self, ctx: CollectContext) -> None:
        self.budget = ctx.budget_s()
        self.deadline = time.monotonic() + self.budget
        self.fallback: str | None = None

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CollectError(f"the nftables read did not finish within {self.budget:g}s")
        return left

    def json(self, args: list[str]) -> list[dict[str, Any]]:
        """The `nftables` items nft prints for `nft -j ARGS`. Nothing, or anything but nft's JSON
        document, is a failed read (CollectError), never an empty answer."""
        return json_items(f"`nft -j {' '.join(args)}`",
                          run_command(["nft", "-j", *args], self.left(), max_stdout=JSON_CAP))


def kernel_module_present(ctx: CollectContext, module: str) -> bool:
    """True when `module` is in the kernel already (loaded or built in), or when the kernel cannot
    load modules at all (no /proc/modules: then a netlink request cannot load one either)."""
    cfg = ctx.cfg
    modules = read_text(cfg.procfs("modules"))
    if modules is None or cfg.sys.joinpath("module", module).exists():
        return True
    if any(line.split(" ", 1)[0] == module for line in modules.splitlines()):
        return True
    release = (read_text(cfg.procfs("sys", "kernel", "osrelease")) or "").strip()
    builtin = read_text(cfg.host(f"/lib/modules/{release}/modules.builtin")) if release else None
    return builtin is not None and any(line.endswith(f"/{module}.ko") for line in builtin.splitlines())


# JSON -> model (pure). nft's JSON schema, as much of it as kube-proxy's maps and sets use; anything
# else in a place this reads is not nft's answer and fails the read. ----------------------------------

def json_items(command: str, out: str) -> list[dict[str, Any]]:
    """The `nftables` items of what `command` printed; CollectError for nothing, or anything but nft's
    JSON document."""
    if not out.strip():
        raise CollectError(f"{command} printed nothing")
    try:
        doc = json.loads(out)
    except (ValueError, RecursionError) as exc:
        raise CollectError(f"{command} printed what does not parse as JSON ({type(exc).__name__})") from exc
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(o, dict) and len(o) == 1 for o in items):
        raise CollectError(f"{command} printed JSON that is not nft's ruleset document")
    return items


class MalformedJson(ValueError):
    """nft -j printed something nft does not print for a kube-proxy map or set."""


def add_object(table: KubeProxyTable, kind: str, name: str, items: list[dict[str, Any]]) -> None:
    """Put map/set `name` of `nft -j list map|set` into the table; CollectError unless the listing
    holds exactly that object, well formed."""
    try:
        found = [obj[kind] for obj in items if kind in obj]
        if len(found) != 1:
            raise MalformedJson(f"{len(found)} {kind} objects where one was asked for")
        obj = found[0]
        if not isinstance(obj, dict) or obj.get("name") != name or obj.get("table", TABLE) != TABLE \
                or obj.get("family", table.family) != table.family:
            raise MalformedJson(f"not {kind} {table.family} {TABLE} {name}")
        elems = obj.get("elem", [])  # nft leaves "elem" out of an empty map or set
        if not isinstance(elems, list):
            raise MalformedJson("its elements are not a list")
        if kind == "map":
            shared: dict[str, str] = {}  # one object per protocol and port ("tcp", "80"): ~1 MiB of a 10k read
            table.maps[name] = [verdict_element(e, shared) for e in elems]
        else:
            table.sets[name] = [set_key(e) for e in elems]
    except (MalformedJson, RecursionError) as exc:  # RecursionError: nesting deeper than nft ever prints
        raise CollectError(f"`nft -j list {kind} {table.family} {TABLE} {name}` printed an unexpected "
                           f"document: {exc}") from exc


def table_from_items(family: str, items: Iterable[dict[str, Any]]) -> KubeProxyTable:
    """The maps and sets kube-proxy dispatches with, from a whole `nft -j list table` (tests)."""
    table = KubeProxyTable(family=family)
    items = list(items)
    for kind, names in (("map", MAPS), ("set", SETS)):
        for name in names:
            mine = [o for o in items if isinstance(o.get(kind), dict) and o[kind].get("name") == name]
            if mine:
                add_object(table, kind, name, mine)
    return table


def _short(value: Any) -> str:
    return json.dumps(value)[:60]


def key_text(value: Any) -> list[str]:
    """A map/set key as text parts: {"concat": ["1.2.3.4", "tcp", 80]} -> ["1.2.3.4", "tcp", "80"]."""
    if isinstance(value, str) and value.strip() == value and value:  # nft prints no empty or padded value
        return [value]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        if kind == "concat" and isinstance(body, list) and body:
            return [p for part in body for p in key_text(part)]
        if kind == "prefix" and isinstance(body, dict) and isinstance(body.get("addr"), str) \
                and isinstance(body.get("len"), int) and not isinstance(body.get("len"), bool):
            return [f"{body['addr']}/{body['len']}"]
        if kind == "range" and isinstance(body, list) and len(body) == 2:
            return ["-".join(_single(v) for v in body)]
    raise MalformedJson(f"a key nft does not print: {_short(value)}")


def _single(value: Any) -> str:
    parts = key_text(value)
    if len(parts) != 1:
        raise MalformedJson(f"a range bound nft does not print: {_short(value)}")
    return parts[0]


def _unwrap(key: Any) -> tuple[Any, str | None]:
    """Element keys with a comment come as {"elem": {"val": KEY, "comment": "..."}}."""
    if isinstance(key, dict) and "elem" in key:
        body = key["elem"]
        if len(key) != 1 or not isinstance(body, dict) or "val" not in body:
            raise MalformedJson(f"an element nft does not print: {_short(key)}")
        comment = body.get("comment")
        if "comment" in body and not (isinstance(comment, str) and comment):
            raise MalformedJson(f"a comment nft does not print: {_short(comment)}")
        return body["val"], comment
    return key, None


def verdict_element(item: Any, shared: dict[str, str] | None = None) -> VerdictElement:
    """`shared`: the key parts of short text seen so far in this map, to use their objects again."""
    if not isinstance(item, list) or len(item) != 2:
        raise MalformedJson(f"a map element that is not [key, verdict]: {_short(item)}")
    key, comment = _unwrap(item[0])
    verdict, target = verdict_of(item[1])
    parts = key_text(key)
    if shared is not None:
        parts = [shared.setdefault(p, p) if len(p) <= 5 else p for p in parts]
    return VerdictElement(key=parts, verdict=verdict, target=target, comment=comment)


def set_key(item: Any) -> str:
    key, _ = _unwrap(item)
    return " . ".join(key_text(key))


_JUMPS = frozenset(("goto", "jump"))
_FINAL = frozenset(("accept", "drop", "return", "continue"))


def verdict_of(value: Any) -> tuple[str, str | None]:
    """{"goto": {"target": "chain"}} -> ("goto", "chain"); {"drop": null} -> ("drop", None)."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        if kind in _JUMPS and isinstance(body, dict) and isinstance(body.get("target"), str) and body["target"]:
            return kind, body["target"]
        if kind in _FINAL and body is None:
            return kind, None
    raise MalformedJson(f"a verdict nft does not print: {_short(value)}")
