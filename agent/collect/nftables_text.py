"""`nft -t -y list table` text -> the chains of a KubeProxyTable (pure: no I/O).

Only the statements the checks use are taken from a rule: jump/goto targets, `vmap @map`, the
`numgen random mod N vmap { i : goto chain, ... }` endpoint choice, `dnat to ip:port`, `@affinity-*`
lookups and `reject`; anything else just counts as a rule. Set declarations give the affinity
timeouts and the names of the sets and maps the table holds (what makes a map "absent" when the
netlink list cannot be had). nft prints one rule per line; a rule whose braces do not close on its
line (a very long vmap) is joined with the lines that follow.

The listing is judged whole before it is used: one `table <family> kube-proxy {` that closes, every
block closed, no rule left open at the end. Anything else (empty, truncated, garbage) raises
MalformedListing. Every step is linear in the input, whatever it holds: lines are joined once, and
no pattern is allowed to rescan text it has already failed on (hostile text must not cost quadratic time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.model.nftables import TABLE, Chain, KubeProxyTable

MAX_RULE = 16 << 20  # one logical rule: a 5,000-endpoint vmap is ~0.5 MB; far beyond this is not nft's

_TABLE = re.compile(r"^\s*table (\S+) (\S+) \{$")
_CHAIN = re.compile(r"^\s*chain (\S+) \{$")
_SET = re.compile(r"^\s*(?:set|map) (\S+) \{$")
# another named object (counter, quota, flowtable, ct helper, ...): skipped whole
_BLOCK = re.compile(r"^\s*(?:ct )?[a-z]+ \S+ \{$")
# Bounded repeats: an unbounded `[^;]+;` would rescan to the end of a long line from every "type ".
_BASE = re.compile(r"type (\w{1,32}) hook (\w{1,32})(?: device \S{1,256})? priority ([^;]{1,64});")
# nft's symbolic priorities for the ip/ip6/inet families (printed unless -y is given)
_PRIORITY = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_TIMEOUT = re.compile(r"^\s*timeout ((?:\d+[dhms])+|\d+ms)\s*$")
_NUMGEN_VMAP = re.compile(r"numgen (?:random|inc) mod (\d+)(?: offset \d+)? vmap \{ ")
# (?<!\d): an entry starts where a number starts, so a long digit run is scanned once, not once per digit
_VMAP_ENTRY = re.compile(r"(?<!\d)(\d+) : (?:goto|jump) ([^\s,]+)")
_BRACES = re.compile(r"[{}]")
_VERDICT = re.compile(r"(?:^|\s)(?:jump|goto) (\S+)")
_NAMED_VMAP = re.compile(r"vmap @(\S+)")
_DNAT = re.compile(r"(?:^|\s)dnat (?:ip6? )?to (\S+)")
_AFFINITY = re.compile(r"saddr @(affinity-\S+)")
_REJECT = re.compile(r"(?:^|\s)reject(?:$|\s)")
_DURATION = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0}


class MalformedListing(ValueError):
    """The text is not one whole `nft list table` listing of kube-proxy's table."""


def duration_s(text: str) -> int:
    """nft's "3h", "1d2h3m4s", "10800s" in seconds."""
    return sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))


def priority(text: str) -> int | None:
    """"-110", "dstnat - 10", "filter", "srcnat + 5" -> a number (None when unknown)."""
    parts = text.split()
    if not parts:
        return None
    base = _PRIORITY.get(parts[0])
    if base is None:
        return int(parts[0]) if parts[0].lstrip("-").isdigit() else None
    if len(parts) == 3 and parts[2].isdigit():
        return base + int(parts[2]) if parts[1] == "+" else base - int(parts[2])
    return base


def logical_lines(lines: Iterable[str], depth_of: list[int]) -> Iterable[str]:
    """Physical lines joined into logical ones: a line whose braces do not balance continues on the
    next. Outside a chain or set (depth_of[0] < 2, kept up to date by the caller) a line ending in
    `{` opens a block instead. Each physical line is counted once and each logical one joined once."""
    pending: list[str] = []
    balance = size = 0
    for raw in lines:
        line = raw.rstrip("\n")
        balance += line.count("{") - line.count("}")
        if pending:
            pending.append(line)
            size += len(line) + 1
            if size > MAX_RULE:
                raise MalformedListing(f"a statement longer than {MAX_RULE >> 20} MiB (an unclosed brace?)")
            if balance > 0:
                continue
            line, pending = " ".join(pending), []
        elif balance > 0 and not (depth_of[0] < 2 and line.rstrip().endswith("{")):
            pending, size = [line], len(line)
            continue
        balance = 0
        yield line
    if pending:
        raise MalformedListing("the listing ends inside an unclosed `{` (truncated or not nft's)")


def add_text(table: KubeProxyTable, lines: Iterable[str]) -> set[str]:
    """Fill table.chains and table.affinity_timeouts from the listing; return the names of the sets and
    maps it declares. Raises MalformedListing unless the text is one whole listing of kube-proxy's
    table in table.family."""
    depth = [0]  # 0: before/after the table, 1: in the table, 2: in a chain, set or other block
    chain: Chain | None = None
    current_set: str | None = None
    declared: set[str] = set()
    opened = closed = False
    for line in logical_lines(lines, depth):
        stripped = line.strip()
        if not stripped:
            continue
        if depth[0] == 0:
            m = _TABLE.match(line)
            if closed or m is None or (m.group(1), m.group(2)) != (table.family, TABLE) or stripped.count("{") != 1:
                raise MalformedListing(f"expected one `table {table.family} {TABLE} {{`, found: {stripped[:80]!r}")
            depth[0], opened = 1, True
        elif depth[0] == 1:
            if stripped.endswith("{") and (stripped.count("{") != 1 or "}" in stripped):
                raise MalformedListing(f"not a block nft opens: {stripped[:80]!r}")
            if stripped == "}":
                depth[0], closed = 0, True
            elif (m := _CHAIN.match(line)) is not None:
                chain = table.chains.setdefault(m.group(1), Chain(name=m.group(1)))
                chain.rules_read = True
                depth[0] = 2
            elif (m := _SET.match(line)) is not None:
                current_set = m.group(1)
                declared.add(current_set)
                depth[0] = 2
            elif _BLOCK.match(line):
                depth[0] = 2  # a named object of another kind: its body says nothing about Services
            elif not stripped.startswith(("comment ", "flags ")) or stripped.count("{") != stripped.count("}"):
                raise MalformedListing(f"not a table-level statement nft prints: {stripped[:80]!r}")
            # else the table's comment or flags: nothing for the checks
        elif stripped == "}":
            depth[0], chain, current_set = 1, None, None
        elif stripped.count("{") != stripped.count("}"):
            raise MalformedListing(f"unbalanced braces in a block: {stripped[:80]!r}")
        elif current_set is not None:
            t = _TIMEOUT.match(line) if len(line) < 200 else None
            if t and current_set.startswith("affinity-"):
                table.affinity_timeouts[current_set] = duration_s(t.group(1))
        elif chain is not None and not stripped.startswith("comment "):
            base = _BASE.search(stripped) if stripped.startswith("type ") else None
            if base:
                chain.type, chain.hook, chain.priority = base.group(1), base.group(2), priority(base.group(3))
            else:
                add_rule(chain, strip_comment(stripped))
    if not opened:
        raise MalformedListing(f"no `table {table.family} {TABLE}` in the listing (empty or not nft's)")
    if not closed:
        raise MalformedListing(f"`table {table.family} {TABLE}` is not closed (the listing was cut short)")
    return declared


def strip_comment(rule: str) -> str:
    """A rule without its trailing `comment "..."`."""
    at = rule.rfind(' comment "')
    if at < 0 or not rule.endswith('"') or '"' in rule[at + 10:-1]:
        return rule
    return rule[:at].rstrip()


def outside_braces(rule: str) -> str:
    """The rule with every `{ ... }` group (nested ones included) taken out: the verdicts inside an
    anonymous vmap or set are not this rule's own."""
    parts: list[str] = []
    depth = start = 0
    for m in _BRACES.finditer(rule):
        if m.group() == "{":
            if depth == 0:
                parts.append(rule[start:m.start()])
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                start = m.end()
    if depth == 0:
        parts.append(rule[start:])
    return "".join(parts)


def add_rule(chain: Chain, rule: str) -> None:
    chain.rule_count += 1
    numgen = _NUMGEN_VMAP.search(rule)
    close = rule.find("}", numgen.end()) if numgen else -1
    if numgen and close > numgen.end() and rule[close - 1] == " ":
        chain.numgen_mod = int(numgen.group(1))
        body = rule[numgen.end():close - 1]
        chain.vmap = dict(chain.vmap or {}, **dict(_VMAP_ENTRY.findall(body)))
    elif "vmap {" in rule:
        chain.unparsed = [*(chain.unparsed or []), rule[:200]]
    outside = outside_braces(rule)
    chain.targets += tuple(_VERDICT.findall(outside))
    chain.dnat += tuple(_DNAT.findall(outside))
    maps, affinity = _NAMED_VMAP.findall(outside), _AFFINITY.findall(outside)
    if maps:
        chain.vmap_maps = [*(chain.vmap_maps or []), *maps]
    if affinity:
        chain.affinity_sets = [*(chain.affinity_sets or []), *affinity]
    if _REJECT.search(outside):
        chain.rejects = True
