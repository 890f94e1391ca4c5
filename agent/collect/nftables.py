"""kube-proxy's nftables table(s): `table ip kube-proxy` and `table ip6 kube-proxy`.

The dispatch maps and sets are read first, one targeted `nft -j list map|set` each, element by
element with kube-proxy's comments (~0.1-0.4 s each at 10k Services). The chains and rules then come
from nf_tables netlink dumps (agent/collect/nftables_netlink.py), reduced to what the checks use as
they arrive: nft has no cheap way to list many chains (one `list chain` per process re-reads the whole
cache, ~90 ms each, and several `list chain` in one `nft -f` batch fail on its cache filter), and its
full `list table` costs ~20 s and 400-900 MB at 10k Services (bench/bench_nftables.py). If netlink is
refused, `nft -t -y list table` text is parsed instead (agent/collect/nftables_text.py).

Read-only: only `list` commands. nft would make the kernel load nf_tables on a node that never used
it, so the module is looked for first and its absence is reported as "absent", not probed.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from agent.collect.base import Absent, CollectContext, CollectError, read_text, run_command
from agent.collect.nftables_netlink import list_tables, read_chains
from agent.collect.nftables_text import add_text
from agent.model.nftables import MAPS, SETS, TABLE, KubeProxyTable, NftablesState, VerdictElement

FAMILIES = ("ip", "ip6")


def collect(ctx: CollectContext) -> NftablesState:
    if not kernel_module_present(ctx, "nf_tables"):
        raise Absent("the nf_tables kernel module is not loaded (nothing uses nftables on this node)")
    nft = Nft(ctx)
    state = NftablesState(nft_version=run_command(["nft", "--version"], nft.left()).split(" (")[0].strip(),
                          read_at=time.time())
    present: set[str] = set()
    try:
        tables = list_tables(nft.left())
    except TimeoutError:
        raise
    except OSError:  # netlink refused: ask nft (which builds its whole cache for this, see above)
        tables = [(o["table"]["family"], o["table"]["name"]) for o in nft.json(["list", "tables"]) if "table" in o]
    for family, name in tables:
        if name == TABLE and family in FAMILIES:
            present.add(family)
        else:
            state.other_tables.append(f"{family} {name}")
    for family in FAMILIES:
        if family in present:
            state.tables.append(read_table(nft, family))
    state.read_mode = "maps and sets: nft -j list map|set; chains: " + (nft.fallback or "nf_tables netlink dumps")
    return state


def read_table(nft: Nft, family: str) -> KubeProxyTable:
    targeted: list[dict[str, Any]] = []
    for kind, names in (("map", MAPS), ("set", SETS)):
        for name in names:
            targeted.extend(nft.json_or_none(["list", kind, family, TABLE, name]) or [])
    table = table_from_items(family, targeted)
    try:
        read_chains(table, nft.left())
    except TimeoutError:
        raise
    except OSError as exc:  # netlink refused (an old kernel, a seccomp profile): nft's listing instead
        table.chains, table.affinity_timeouts = {}, {}
        # -t (terse): no named-set elements; -y: numeric priorities. Streamed: ~14 MB at 10k Services.
        add_text(table, stream_lines(["nft", "-t", "-y", "list", "table", family, TABLE], nft.left()))
        nft.fallback = f"nft -t -y list table (netlink read failed: {exc})"
    return table


def table_from_items(family: str, items: Iterable[dict[str, Any]]) -> KubeProxyTable:
    """The maps and sets kube-proxy dispatches with, from `nft -j list map|set` items."""
    table = KubeProxyTable(family=family)
    for obj in items:
        if "map" in obj and obj["map"]["name"] in MAPS:
            table.maps[obj["map"]["name"]] = [verdict_element(e) for e in obj["map"].get("elem", [])]
        elif "set" in obj and obj["set"]["name"] in SETS:
            table.sets[obj["set"]["name"]] = [set_key(e) for e in obj["set"].get("elem", [])]
    return table


class Nft:
    """`nft -j` under the collector's deadline."""

    def __init__(self, ctx: CollectContext) -> None:
        self.deadline = time.monotonic() + max(ctx.deadline_s, 1.0)
        self.fallback: str | None = None

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.5)

    def json(self, args: list[str]) -> list[dict[str, Any]]:
        out = run_command(["nft", "-j", *args], self.left())
        if not out.strip():
            return []
        items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return items

    def json_or_none(self, args: list[str]) -> list[dict[str, Any]] | None:
        """None when the object does not exist (nft: "No such file or directory")."""
        try:
            return self.json(args)
        except CollectError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise


def stream_lines(argv: list[str], timeout_s: float) -> Iterator[str]:
    """Run argv (read-only) and yield its stdout lines without holding them all. The child is killed
    when timeout_s passes; a non-zero exit raises CollectError, as run_command does."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise Absent(f"{argv[0]} is not installed") from exc
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        yield from proc.stdout
        stderr = proc.stderr.read()
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code < 0:
        raise CollectError(f"{' '.join(argv)} did not finish within {timeout_s:.0f}s (killed)")
    if code != 0:
        first = (stderr.strip().splitlines() or ["no message"])[0]
        raise CollectError(f"{' '.join(argv)} exited {code}: {first}")


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


# JSON -> model -------------------------------------------------------------------------------------

def key_text(value: Any) -> list[str]:
    """A map/set key as text parts: {"concat": ["1.2.3.4", "tcp", 80]} -> ["1.2.3.4", "tcp", "80"]."""
    if isinstance(value, dict):
        if "concat" in value:
            return [p for part in value["concat"] for p in key_text(part)]
        if "prefix" in value:
            return [f"{value['prefix']['addr']}/{value['prefix']['len']}"]
        if "range" in value:
            return ["-".join(str(v) for v in value["range"])]
    return [str(value)]


def _unwrap(key: Any) -> tuple[Any, str | None]:
    """Element keys with a comment come as {"elem": {"val": KEY, "comment": "..."}}."""
    if isinstance(key, dict) and "elem" in key:
        return key["elem"].get("val"), key["elem"].get("comment")
    return key, None


def verdict_element(item: Any) -> VerdictElement:
    key, value = item
    key, comment = _unwrap(key)
    verdict, target = verdict_of(value)
    return VerdictElement(key=key_text(key), verdict=verdict, target=target, comment=comment)


def set_key(item: Any) -> str:
    key, _ = _unwrap(item)
    return " . ".join(key_text(key))


def verdict_of(value: Any) -> tuple[str, str | None]:
    if isinstance(value, dict) and value:
        kind, body = next(iter(value.items()))
        target = body.get("target") if isinstance(body, dict) else None
        return kind, target
    return str(value), None


