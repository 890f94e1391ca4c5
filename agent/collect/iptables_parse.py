"""`iptables-save` text (and `iptables-restore` input) -> agent.model.iptables.RuleSet. Pure: no I/O.

One grammar, one path: lines are fed in order (`Parser.feed`, any number of times, then `result()`).
Of a KUBE-SEP chain only its DNAT target is kept, of a KUBE-SVC/SVL chain its endpoint ladder (nine in
ten of kube-proxy's rules), and only the dispatch rules are parsed into their parts. A line that is not
understood is recorded (the first 50, and a count) and skipped: one odd rule never fails the parse; the
reader decides whether a parse is a whole read (`Parser.sections`, `incompatible`, the counts).

Forms accepted: what iptables-legacy-save / iptables-nft-save print (quoted comments, `/32` on host
addresses, `! -s` negations, 11-digit probabilities) and kube-proxy's restore input (`-A` with options
in kube-proxy's order, unquoted one-word comments, `-X` in partial syncs, `-I` in node-base.rules).
Every step is linear in the input: a line over MAX_LINE characters is recorded, not searched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.model.iptables import (
    DISPATCH_CHAINS,
    DISPATCH_PREFIXES,
    ENDPOINT_PREFIX,
    LADDER_PREFIXES,
    Jump,
    LadderChain,
    Rule,
    RuleSet,
    Table,
    frozen_map,
    jump_target,
)

MAX_UNPARSED = 50  # lines kept as evidence (the rest are counted)
MAX_EVIDENCE = 300  # characters of each
MAX_LINE = 16 << 10  # iptables prints no rule near this long (a comment is at most 256 characters)
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
# iptables-nft-save's line for a table holding rules it cannot show (added by another nft user)
_INCOMPATIBLE = re.compile(r"# Table [`']([^']*)' is incompatible")  # "# Table `nat' is incompatible, use 'nft' tool."
_UNESCAPE = re.compile(r"\\(.)")


def _host(addr: str) -> str:
    """Drop the /32 (/128) iptables-save adds to a single address, so save and restore forms compare."""
    if addr.endswith("/32") or addr.endswith("/128"):
        return addr.rsplit("/", 1)[0]
    return addr


# Found from the space before an option (or before its "!"): the search then tries each space, not each
# character.
_OPTION = re.compile(
    r" (?:(!) )?(-s|--source|--src|-d|--destination|--dst|-p|--protocol|--dports?|--destination-port|--comment"
    r'|--src-type|--dst-type|-j|--jump|-g|--goto) (?:(!) )?("(?:[^"\\]|\\.)*"|[^\s"]+)')
_FIELD = {"-s": "source", "--source": "source", "--src": "source", "-d": "destination",
          "--destination": "destination", "--dst": "destination", "-p": "protocol", "--protocol": "protocol",
          "--dport": "dport", "--dports": "dport", "--destination-port": "dport", "--comment": "comment",
          "--src-type": "src_type", "--dst-type": "dst_type", "-j": "target", "--jump": "target", "-g": "goto",
          "--goto": "goto"}


def parse_rule(text: str, chain: str | None = None, target: str | None = None) -> Rule:
    """Parse one `-A CHAIN ...` (or `-I CHAIN [n] ...`) rule into the parts the checks use. Raises
    ValueError if it is not a rule; other matches and options are skipped (the checks do not use them).
    A "!" before an option (save form) or after it (old form) negates it: kept as a leading "!".
    `chain`/`target`: the string objects to use for those names (shared with the table's)."""
    head = text.split(" ", 2)
    if len(head) < 2 or head[0] not in ("-A", "-I", "--append", "--insert") or not head[1]:
        raise ValueError("not a rule")
    if text.count('"') % 2:
        raise ValueError("unbalanced quotes")
    parts: dict[str, str | bool] = {}
    for neg_before, option, neg_after, raw in _OPTION.findall(text):
        value = raw
        if raw.startswith('"'):
            value = _UNESCAPE.sub(r"\1", raw[1:-1]) if "\\" in raw else raw[1:-1]
        name = _FIELD[option]
        if name == "comment":
            parts.setdefault("comment", value)
        elif name in ("target", "goto"):
            parts["target"], parts["goto"] = value, name == "goto"
        else:
            if name in ("source", "destination"):
                value = _host(value)
            elif name == "protocol":
                value = value.lower()
            parts[name] = ("!" if neg_before or neg_after else "") + value
    found_target = str(parts.pop("target", ""))
    return Rule(chain=chain or head[1], target=target or found_target, text=text, **parts)  # type: ignore[arg-type]


def _after(line: str, key: str) -> str | None:
    """The word after `key` in `line` (key includes its surrounding spaces)."""
    at = line.find(key)
    if at < 0:
        return None
    start = at + len(key)
    end = line.find(" ", start)
    return line[start:] if end < 0 else line[start:end]


def _first_comment(line: str) -> str | None:
    at = line.find("--comment ")
    if at < 0:
        return None
    rest = line[at + 10:]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        while end > 0 and rest[end - 1] == "\\":
            end = rest.find('"', end + 1)
        text = rest[1:end] if end > 0 else rest[1:]
        return _UNESCAPE.sub(r"\1", text) if "\\" in text else text
    return rest.split(" ", 1)[0]


@dataclass
class _Ladder:
    """A KUBE-SVC/SVL chain while it is read (LadderChain when done)."""

    endpoints: list[str] = field(default_factory=list)
    probabilities: list[float | None] = field(default_factory=list)
    affinity_seconds: int | None = None
    affinity_endpoints: list[str] = field(default_factory=list)
    comment: str | None = None
    protocol: str | None = None

    def done(self) -> LadderChain:
        return LadderChain(tuple(self.endpoints), tuple(self.probabilities), self.affinity_seconds,
                           tuple(self.affinity_endpoints), self.comment, self.protocol)


@dataclass
class _Table:
    """A table while it is read (Table when done)."""

    name: str
    declared: dict[str, str] = field(default_factory=dict)  # chain -> the one string object for it, in order
    rule_count: int = 0
    plain: dict[str, list[str]] = field(default_factory=dict)
    dispatch: dict[str, list[Rule]] = field(default_factory=dict)
    ladders: dict[str, _Ladder] = field(default_factory=dict)
    dnat: dict[str, str] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)

    def flush(self, name: str) -> None:
        plain, dispatch = self.plain.pop(name, []), self.dispatch.pop(name, [])
        ladder, dnat = self.ladders.pop(name, None), self.dnat.pop(name, None)
        if ladder is not None:
            self.rule_count -= len(ladder.endpoints) + len(ladder.affinity_endpoints) + (1 if ladder.comment else 0)
        self.rule_count -= len(plain) + len(dispatch) + (0 if dnat is None else 1)

    def done(self) -> Table:
        dnat = self.dnat
        for chain in self.declared:  # an endpoint chain with no rule has no DNAT either
            if chain.startswith(ENDPOINT_PREFIX) and chain not in dnat:
                dnat[chain] = ""
        return Table(self.name, tuple(self.declared), self.rule_count,
                     frozen_map({c: tuple(r) for c, r in self.plain.items()}),
                     frozen_map({c: tuple(r) for c, r in self.dispatch.items()}),
                     frozen_map({c: lad.done() for c, lad in self.ladders.items()}), frozen_map(dnat),
                     frozen_map(self.policies))


class Parser:
    """Feed lines in order (as many `feed` calls as you like); `result()` gives the RuleSet."""

    def __init__(self, family: int = 4) -> None:
        self.family = family
        self.tables: dict[str, _Table] = {}
        self.table: _Table | None = None  # the table being read (between `*name` and COMMIT)
        self.sections: list[tuple[str, bool]] = []  # (table, ended with COMMIT) per `*table` line, in order
        self.incompatible: list[str] = []  # tables iptables-nft-save said it cannot show
        self.lines = 0  # lines that were not blank
        self.overlong = 0  # lines over MAX_LINE (recorded, not read)
        self.unparsed: list[str] = []
        self.unparsed_count = 0
        self.dangling: list[Jump] = []
        self._pending: dict[str, str] = {}  # KUBE-* jump target not declared (yet) in this table -> a rule
        self._probabilities: dict[str, float] = {}  # "0.2000000000" -> 0.2: one float per value

    def result(self) -> RuleSet:
        if self.table is not None:  # input without a final COMMIT (restore input cut short)
            self._end_table(committed=False)
        return RuleSet(self.family, frozen_map({name: t.done() for name, t in self.tables.items()}),
                       tuple(self.dangling), tuple(self.unparsed), self.unparsed_count)

    def _unparsed(self, line: str, why: str) -> None:
        self.unparsed_count += 1
        if len(self.unparsed) < MAX_UNPARSED:
            self.unparsed.append(f"{why}: {line[:MAX_EVIDENCE]}")

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            if len(line) > MAX_LINE:  # before anything copies it
                self.lines += 1
                self.overlong += 1
                self._unparsed(line, "line too long")
                continue
            line = line.rstrip("\r\n")
            if not line:
                continue
            self.lines += 1
            head = line[0]
            if head == "-":
                if self.table is None:
                    self._unparsed(line, "rule outside a table")
                elif line.startswith("-A ") or line.startswith("-I "):
                    self._rule(self.table, line)
                else:
                    self._command(self.table, line)
            elif head == ":":
                if self.table is None:
                    self._unparsed(line, "chain outside a table")
                else:
                    name, _, rest = line[1:].partition(" ")
                    self.table.declared.setdefault(name, name)
                    policy = rest.split(" ", 1)[0]
                    if name in BUILTIN_CHAINS and policy in ("ACCEPT", "DROP"):
                        self.table.policies[name] = policy
            elif head == "#":
                m = _INCOMPATIBLE.match(line)
                if m:
                    self.incompatible.append(m.group(1))
            elif head == "*":
                if self.table is not None:
                    self._end_table(committed=False)
                name = line[1:].strip()
                self.table = self.tables.get(name) or self.tables.setdefault(name, _Table(name))
                self.sections.append((name, False))
            elif line.strip() == "COMMIT" and self.table is not None:
                self._end_table(committed=True)
            else:
                self._unparsed(line, "unknown line")

    def _command(self, table: _Table, line: str) -> None:
        parts = line.split()
        cmd = parts[0]
        if cmd in ("-N", "--new-chain") and len(parts) == 2:
            table.declared.setdefault(parts[1], parts[1])
        elif cmd in ("-X", "--delete-chain", "-F", "--flush"):
            for name in parts[1:] or [c for c in table.declared if c not in BUILTIN_CHAINS]:
                table.flush(name)
                if cmd in ("-X", "--delete-chain"):
                    table.declared.pop(name, None)
        else:
            self._unparsed(line, "unsupported command")

    def _rule(self, table: _Table, line: str) -> None:
        end = line.find(" ", 3)
        name = line[3:] if end < 0 else line[3:end]
        declared = table.declared
        chain = declared.get(name)
        if chain is None:
            if name not in BUILTIN_CHAINS:
                self._unparsed(line, "rule for an undeclared chain")
                return
            chain = declared[name] = name  # restore input may add to a built-in chain it did not list
        table.rule_count += 1
        if chain.startswith(ENDPOINT_PREFIX):  # its only jump is to KUBE-MARK-MASQ: not checked for speed
            dest = _after(line, " --to-destination ")
            if dest is not None:
                have = table.dnat.get(chain)
                table.dnat[chain] = f"{have},{dest}" if have else dest
            return
        target = jump_target(line)
        if target.startswith("KUBE-") and target not in declared and target not in self._pending:
            self._pending[target] = line
        target = declared.get(target, target)
        if chain.startswith(LADDER_PREFIXES):
            self._ladder_rule(table, chain, target, line)
        elif chain in DISPATCH_CHAINS or chain.startswith(DISPATCH_PREFIXES):
            try:
                rule = parse_rule(line, chain, target)
            except ValueError as exc:
                table.rule_count -= 1
                self._unparsed(line, str(exc))
                return
            rules = table.dispatch.setdefault(chain, [])
            rules.insert(0, rule) if line.startswith("-I ") else rules.append(rule)
        else:
            texts = table.plain.setdefault(chain, [])
            texts.insert(0, line) if line.startswith("-I ") else texts.append(line)

    def _ladder_rule(self, table: _Table, chain: str, target: str, line: str) -> None:
        ladder = table.ladders.get(chain)
        if ladder is None:
            ladder = table.ladders[chain] = _Ladder()
        if not target.startswith(ENDPOINT_PREFIX):  # the masquerade rule: its protocol and comment
            if ladder.protocol is None:
                ladder.protocol = _after(line, " -p ")
            if ladder.comment is None:
                ladder.comment = _first_comment(line)
            return
        if " --rcheck" in line:
            seconds = _after(line, " --seconds ")
            ladder.affinity_seconds = int(seconds) if seconds and seconds.isdigit() else ladder.affinity_seconds
            ladder.affinity_endpoints.append(target)
            return
        text = _after(line, " --probability ")
        probability = None
        if text is not None:
            probability = self._probabilities.get(text)
            if probability is None:
                try:
                    probability = self._probabilities[text] = float(text)
                except ValueError:
                    table.rule_count -= 1
                    self._unparsed(line, "probability is not a number")
                    return
        ladder.endpoints.append(target)
        ladder.probabilities.append(probability)

    def _end_table(self, committed: bool) -> None:
        table = self.table
        if table is not None:
            for target, text in sorted(self._pending.items()):
                if target not in table.declared:
                    self.dangling.append(Jump(table.name, text.split(" ", 2)[1], target, text))
            self.sections[-1] = (table.name, committed)
        self._pending.clear()
        self.table = None


def parse_text(text: str, family: int = 4) -> RuleSet:
    """Parse a whole iptables-save (or restore-input) text."""
    parser = Parser(family)
    parser.feed(text.split("\n"))
    return parser.result()
