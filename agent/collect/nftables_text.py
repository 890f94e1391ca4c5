"""`nft -t -y list table` text -> the chains of a KubeProxyTable (pure: no I/O).

Only the statements the checks use are taken from a rule: jump/goto targets, `vmap @map`, the
`numgen random mod N vmap { i : goto chain, ... }` endpoint choice, `dnat to ip:port`, `@affinity-*`
lookups and `reject`; anything else just counts as a rule. Set declarations give the affinity
timeouts. nft prints one rule per line; a rule whose braces do not close on its line (a very long
vmap) is joined with the lines that follow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agent.model.nftables import Chain, KubeProxyTable

_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_SET = re.compile(r"^\s*(?:set|map) (\S+) \{")
_BASE = re.compile(r"type (\w+) hook (\w+)(?: device \S+)? priority ([^;]+);")
# nft's symbolic priorities for the ip/ip6/inet families (printed unless -y is given)
_PRIORITY = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_TIMEOUT = re.compile(r"^\s*timeout ((?:\d+[dhms])+|\d+ms)\s*$")
_NUMGEN_VMAP = re.compile(r"numgen (?:random|inc) mod (\d+)(?: offset \d+)? vmap \{ ([^}]*) \}")
_VMAP_ENTRY = re.compile(r"(\d+) : (?:goto|jump) ([^\s,]+)")
_ANON = re.compile(r"\{[^}]*\}")
_VERDICT = re.compile(r"(?:^|\s)(?:jump|goto) (\S+)")
_NAMED_VMAP = re.compile(r"vmap @(\S+)")
_DNAT = re.compile(r"(?:^|\s)dnat (?:ip6? )?to (\S+)")
_AFFINITY = re.compile(r"saddr @(affinity-\S+)")
_REJECT = re.compile(r"(?:^|\s)reject(?:$|\s)")
_COMMENT = re.compile(r'\s+comment "[^"]*"\s*$')
_DURATION = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0}


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


def add_text(table: KubeProxyTable, lines: Iterable[str]) -> None:
    chain: Chain | None = None
    current_set: str | None = None
    pending = ""
    for raw in lines:
        line = pending + raw.rstrip("\n") if pending else raw.rstrip("\n")
        if line.count("{") > line.count("}") and not line.rstrip().endswith("{"):
            pending = line + " "  # a rule continued on the next line
            continue
        pending = ""
        stripped = line.strip()
        m = _CHAIN.match(line)
        if m:
            chain = table.chains.setdefault(m.group(1), Chain(name=m.group(1)))
            chain.rules_read = True
            current_set = None
            continue
        m = _SET.match(line)
        if m:
            chain, current_set = None, m.group(1)
            continue
        if stripped == "}" or not stripped:
            if stripped == "}":
                chain, current_set = None, None
            continue
        if current_set is not None:
            t = _TIMEOUT.match(line)
            if t and current_set.startswith("affinity-"):
                table.affinity_timeouts[current_set] = duration_s(t.group(1))
            continue
        if chain is None or stripped.startswith("comment "):
            continue
        base = _BASE.search(stripped)
        if base:
            chain.type, chain.hook, chain.priority = base.group(1), base.group(2), priority(base.group(3))
            continue
        add_rule(chain, _COMMENT.sub("", stripped))


def add_rule(chain: Chain, rule: str) -> None:
    chain.rule_count += 1
    numgen = _NUMGEN_VMAP.search(rule)
    if numgen:
        chain.numgen_mod = int(numgen.group(1))
        chain.vmap = dict(chain.vmap or {}, **dict(_VMAP_ENTRY.findall(numgen.group(2))))
    elif "vmap {" in rule:
        chain.unparsed = [*(chain.unparsed or []), rule[:200]]
    outside = _ANON.sub("", rule)  # verdicts inside an anonymous vmap/set are not this rule's own
    chain.targets.extend(_VERDICT.findall(outside))
    chain.dnat.extend(_DNAT.findall(outside))
    maps, affinity = _NAMED_VMAP.findall(outside), _AFFINITY.findall(outside)
    if maps:
        chain.vmap_maps = [*(chain.vmap_maps or []), *maps]
    if affinity:
        chain.affinity_sets = [*(chain.affinity_sets or []), *affinity]
    if _REJECT.search(outside):
        chain.rejects = True
