"""`iptables-save` text (and `iptables-restore` input) -> agent.model.iptables.RuleSet. Pure: no I/O.

Built for 200k-line dumps read as a stream. `Parser.feed_block` takes blocks of whole lines and lets
regular expressions do the per-line work in C: of a KUBE-SEP chain only its DNAT target is kept, of a
KUBE-SVC/SVL chain its endpoint ladder (nine in ten of kube-proxy's rules), and only the dispatch rules
are parsed into their parts. `Parser.feed` is the line-by-line reference it must agree with (a test
compares them on every fixture); it also takes the rare lines the block path hands back. A line that
is not understood is recorded (the first 50, and a count) and skipped: one odd rule never fails the read.

Forms accepted: what iptables-legacy-save / iptables-nft-save print (quoted comments, `/32` on host
addresses, `! -s` negations, 11-digit probabilities) and kube-proxy's restore input (`-A` with options
in kube-proxy's order, unquoted one-word comments, `-X` in partial syncs, `-I` in node-base.rules).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence

from agent.model.iptables import (
    COUNTED,
    DISPATCH_CHAINS,
    DISPATCH_PREFIXES,
    ENDPOINT_PREFIX,
    LADDER_PREFIXES,
    Jump,
    LadderChain,
    Rule,
    RuleSet,
    Table,
)

MAX_UNPARSED = 50
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})

_UNESCAPE = re.compile(r"\\(.)")


def _host(addr: str) -> str:
    """Drop the /32 (/128) iptables-save adds to a single address, so save and restore forms compare."""
    if addr.endswith("/32") or addr.endswith("/128"):
        return addr.rsplit("/", 1)[0]
    return addr


# Found from the space before an option (or before its "!"): the search then tries each space, not each
# character (10k KUBE-SERVICES rules on a first read: 0.16 s -> 0.10 s).
_OPTION = re.compile(
    r" (?:(!) )?(-s|--source|--src|-d|--destination|--dst|-p|--protocol|--dports?|--destination-port|--comment"
    r'|--src-type|--dst-type|-j|--jump|-g|--goto) (?:(!) )?("(?:[^"\\]|\\.)*"|[^\s"]+)')
_FIELD = {"-s": "source", "--source": "source", "--src": "source", "-d": "destination",
          "--destination": "destination", "--dst": "destination", "-p": "protocol", "--protocol": "protocol",
          "--dport": "dport", "--dports": "dport", "--destination-port": "dport", "--comment": "comment",
          "--src-type": "src_type", "--dst-type": "dst_type", "-j": "target", "--jump": "target", "-g": "goto",
          "--goto": "goto"}


def parse_rule(text: str) -> Rule:
    """Parse one `-A CHAIN ...` (or `-I CHAIN [n] ...`) rule into the parts the checks use. Raises
    ValueError if it is not a rule; other matches and options are skipped (the checks do not use them).
    A "!" before an option (save form) or after it (old form) negates it: kept as a leading "!"."""
    head = text.split(" ", 2)
    if len(head) < 2 or head[0] not in ("-A", "-I", "--append", "--insert") or not head[1]:
        raise ValueError("not a rule")
    if text.count('"') % 2:
        raise ValueError("unbalanced quotes")
    rule = Rule(chain=head[1], target="", text=text)
    for neg_before, option, neg_after, raw in _OPTION.findall(text):
        value = raw
        if raw.startswith('"'):
            value = _UNESCAPE.sub(r"\1", raw[1:-1]) if "\\" in raw else raw[1:-1]
        field = _FIELD[option]
        if field == "comment":
            if rule.comment is None:
                rule.comment = value
            continue
        if field in ("target", "goto"):
            rule.target, rule.goto = value, field == "goto"
            continue
        if field in ("source", "destination"):
            value = _host(value)
        elif field == "protocol":
            value = value.lower()
        setattr(rule, field, ("!" if neg_before or neg_after else "") + value)
    return rule


_PROBABILITIES: dict[str, float] = {}  # "0.2000000000" -> 0.2: a few values for 50k rules, one float each


def _probability(text: str) -> float:
    value = _PROBABILITIES.get(text)
    if value is None:
        value = float(text)
        if len(_PROBABILITIES) < 10_000:  # 1/n for n up to 10k endpoints, as kube-proxy and iptables print it
            _PROBABILITIES[text] = value
    return value


def _after(line: str, key: str) -> str | None:
    """The word after `key` in `line` (key includes its surrounding spaces)."""
    at = line.find(key)
    if at < 0:
        return None
    start = at + len(key)
    end = line.find(" ", start)
    return line[start:] if end < 0 else line[start:end]


def _target(line: str) -> str:
    """The -j/-g target: the last one on the line (a comment cannot follow the target)."""
    at = max(line.rfind(" -j "), line.rfind(" -g "))
    if at < 0:
        return ""
    start = at + 4
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


class Parser:
    """Feed lines in order; `result()` gives the RuleSet. Kept as a class so a collector can stream."""

    def __init__(self, family: int = 4, known_rules: dict[str, Rule] | None = None) -> None:
        self.rs = RuleSet(family=family)
        # Dispatch rules by line: looked up before parsing and recorded after. agent/iptables_reuse.py passes
        # one kept across reads; a Rule is never changed once parsed, so it can be shared.
        self.known_rules = known_rules if known_rules is not None else {}
        # table -> chain name -> one string object for it, from an earlier read
        self.known_names: dict[str, dict[str, str]] = {}
        self.table: Table | None = None
        self.declared: dict[str, str] = {}  # chain name -> the one string object for it (shared by references)
        self.declared_of: dict[str, dict[str, str]] = {}  # table -> its `declared`
        self._pending: dict[str, str] = {}  # KUBE-* jump target not declared (yet) in this table -> a rule
        self.emptied: dict[str, frozenset[str]] = {}  # table -> endpoint chains given "" at COMMIT (no rule)
        # chains declared in the current table per COUNTED (KUBE-SEP- first), while that is simply
        # counted (a table opened a second time, chains deleted: None, and counted the long way)
        self.counts: list[int] | None = None
        # Set by agent/iptables_reuse.py for a table whose endpoint_dnat and ladders it patched from the last
        # read's, whose chains were all declared: the only chains of those two stores that may be undeclared
        # at COMMIT (50k lookups at 10k Services, missing the CPU cache, are not made again)
        self.stray_suspects: tuple[Table, set[str]] | None = None

    def result(self) -> RuleSet:
        if self.table is not None:  # input without a final COMMIT (restore input cut short)
            self._end_table()
        return self.rs

    def _unparsed(self, line: str, why: str) -> None:
        self.rs.unparsed_count += 1
        if len(self.rs.unparsed) < MAX_UNPARSED:
            self.rs.unparsed.append(f"{why}: {line}")

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if not line or line[0] == "#":
            return
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
                return
            name = line[1:].split(" ", 1)[0]
            self._declare(self.table, name)
        elif head == "*":
            name = line[1:].strip()
            self.table = self.rs.tables.get(name)
            if self.table is None:
                self.table = self.rs.tables[name] = Table(name)
            self.declared = self.declared_of.setdefault(name, {c: c for c in self.table.chains})
            self.counts = None if self.table.chains else [0] * len(COUNTED)
        elif line.strip() == "COMMIT":
            self._end_table()
        else:
            self._unparsed(line, "unknown line")

    def _declare(self, table: Table, name: str) -> str:
        have = self.declared.get(name)
        if have is None:
            if self.counts is not None and name.startswith("KUBE-"):
                for i, prefix in enumerate(COUNTED):
                    self.counts[i] += name.startswith(prefix)
            have = self.declared[name] = name
            table.chains.append(name)
        return have

    def chain_names(self, seg: str) -> list[str]:
        """The chains `seg` (lines of the current table, each after a "\\n") declares, as the string objects
        the last read used where it had them (its kept pieces still hold those)."""
        names: list[str] = _CHAIN_DECL.findall(seg)
        known = self.known_names.get(self.table.name) if self.table is not None else None
        return list(map(known.get, names, names)) if known else names

    def declare_all(self, names: Sequence[str], counts: Sequence[int]) -> None:
        """Declare these chains in the current table, in order (`counts` of them per COUNTED): what
        their `:NAME` lines do, at the cost of a dict update when all are new (60k at 10k Services)."""
        table, declared = self.table, self.declared
        assert table is not None
        before = len(declared)
        declared.update(zip(names, names, strict=True))
        if len(declared) == before + len(names):  # all new (the usual case): add them in one go
            table.chains.extend(names)
            if self.counts is not None:
                self.counts = list(map(operator.add, self.counts, counts))
        else:  # some were declared before: keep the first declaration and its position
            self.counts = None
            for name in names:
                if declared[name] is name and name not in table.chains:
                    table.chains.append(name)

    def _command(self, table: Table, line: str) -> None:
        parts = line.split()
        cmd = parts[0]
        self.counts = None  # chains deleted, flushed: counted the long way
        if cmd in ("-N", "--new-chain") and len(parts) == 2:
            self._declare(table, parts[1])
        elif cmd in ("-X", "--delete-chain", "-F", "--flush"):
            names = parts[1:] or [c for c in table.chains if c not in BUILTIN_CHAINS]
            for name in names:
                table.rule_count -= self._flush(table, name)
                if cmd in ("-X", "--delete-chain") and name in self.declared:
                    del self.declared[name]
                    table.chains.remove(name)
        else:
            self._unparsed(line, "unsupported command")

    @staticmethod
    def _flush(table: Table, name: str) -> int:
        plain, dispatch = table.plain.pop(name, []), table.dispatch.pop(name, [])
        ladder, dnat = table.ladders.pop(name, None), table.endpoint_dnat.pop(name, None)
        if ladder is not None:
            return len(ladder.endpoints) + len(ladder.affinity_endpoints) + (1 if ladder.comment else 0)
        return len(plain) + len(dispatch) + (0 if dnat is None else 1)

    def _rule(self, table: Table, line: str) -> None:
        end = line.find(" ", 3)
        chain = line[3:] if end < 0 else line[3:end]
        if chain in BUILTIN_CHAINS and chain not in self.declared:
            self._declare(table, chain)  # restore input may add to a built-in chain it did not list
        chain = self.declared.get(chain, chain)  # an undeclared chain is flagged at COMMIT
        target = _target(line)
        table.rule_count += 1
        if chain.startswith(ENDPOINT_PREFIX):  # its only jump is to KUBE-MARK-MASQ: not checked for speed
            dest = _after(line, " --to-destination ")
            if dest is not None:
                have = table.endpoint_dnat.get(chain)
                table.endpoint_dnat[chain] = f"{have},{dest}" if have else dest
            else:
                table.endpoint_dnat.setdefault(chain, "")
            return
        self._check_target(table, target, line)
        target = self.declared.get(target, target)
        if chain.startswith(LADDER_PREFIXES):
            self._ladder_rule(table, chain, target, line)
            return
        self._other_rule(table, chain, target, line)

    def _other_rule(self, table: Table, chain: str, target: str, line: str) -> None:
        if chain in DISPATCH_CHAINS or chain.startswith(DISPATCH_PREFIXES):
            rule = self.known_rules.get(line)
            if rule is None:
                try:
                    rule = parse_rule(line)
                except ValueError as exc:
                    table.rule_count -= 1
                    self._unparsed(line, str(exc))
                    return
                rule.chain, rule.target = chain, target or rule.target
                self.known_rules[line] = rule
            rules = table.dispatch.setdefault(chain, [])
            rules.insert(0, rule) if line.startswith("-I ") else rules.append(rule)
            return
        rules_text = table.plain.setdefault(chain, [])
        rules_text.insert(0, line) if line.startswith("-I ") else rules_text.append(line)

    def _ladder_rule(self, table: Table, chain: str, target: str, line: str) -> None:
        ladder = table.ladders.get(chain)
        if ladder is None:
            ladder = table.ladders[chain] = LadderChain()
        if not target.startswith(ENDPOINT_PREFIX):
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
        prob = _after(line, " --probability ")
        try:
            probability = _probability(prob) if prob is not None else None
        except ValueError:
            self._bad_probability(table, line)
            return
        ladder.endpoints.append(target)
        ladder.probabilities.append(probability)

    def _bad_probability(self, table: Table, line: str) -> None:
        table.rule_count -= 1
        self._unparsed(line, "probability is not a number")

    # fast path: a block of complete lines at once --------------------------------------------------
    def feed_block(self, block: str) -> None:
        """Same result as feeding each line, for the lines of `block` (which must end at a line end).
        Regular expressions do the per-line work in C; each runs only on blocks that hold its kind of
        line (iptables-save prints a chain's rules together, so most blocks hold one or two kinds)."""
        block = "\n" + block  # every line starts after a newline: lets `re` scan for a literal prefix
        pos = 0
        for m in _TABLE_EDGE.finditer(block):
            self._segment(block[pos:m.start()])
            pos = m.end()
            edge = m.group(1)
            if edge == "COMMIT":
                self._end_table()
            else:
                self.feed(edge)
        self._segment(block[pos:])

    def _segment(self, seg: str) -> None:
        """Lines of one table (no '*table' or COMMIT among them), each preceded by a newline."""
        if not seg or seg.isspace():
            return
        table = self.table
        if table is None or _ODD_LINE.search(seg):
            for line in seg.split("\n"):  # commands (-X, -N), stray or unknown lines: the careful way
                self.feed(line)
            return
        declared = self.declared
        if "\n:" in seg:
            self.declare_all(self.chain_names(seg), declared_counts(seg))
        if "\n-" not in seg:  # declarations only (60k of them at 10k Services): no rule to look for
            return
        table.rule_count += seg.count("\n-A ") + seg.count("\n-I ")
        if "\n-A KUBE-SEP-" in seg:  # endpoint chains without a DNAT get "" at COMMIT
            # keyed by the declared name: one string per chain name, however often it is used
            pairs = _SEP_DNAT.findall(seg)
            found = {declared.get(chain, chain): dest for chain, dest in pairs}
            if len(found) == len(pairs) and not found.keys() & table.endpoint_dnat.keys():
                table.endpoint_dnat.update(found)
            else:  # a chain with two DNATs (not kube-proxy's doing): join them, as feed() does
                for chain, dest in pairs:
                    have = table.endpoint_dnat.get(chain)
                    table.endpoint_dnat[chain] = f"{have},{dest}" if have else dest
        if "\n-A KUBE-SV" in seg:
            ladders = table.ladders
            for chain, middle, target in _LADDER_RULE.findall(seg):
                if "--rcheck" in middle:  # session affinity (rare): the careful way
                    line = f"-A {chain} {middle}-j {target}"
                    self._check_target(table, target, line)
                    self._ladder_rule(table, declared.get(chain, chain), declared.get(target, target), line)
                    continue
                ladder = ladders.get(chain)
                if ladder is None:
                    ladder = ladders[declared.get(chain, chain)] = LadderChain()
                if not target.startswith(ENDPOINT_PREFIX):  # the masquerade rule: its protocol and comment
                    self._check_target(table, target, f"-A {chain} {middle}-j {target}")  # (what _ladder_rule does)
                    if ladder.protocol is None:
                        ladder.protocol = _after(" " + middle, " -p ")
                    if ladder.comment is None:
                        ladder.comment = _first_comment(middle)
                    continue
                if target not in declared:
                    self._check_target(table, target, f"-A {chain} {middle}-j {target}")
                at = middle.find("--probability ")
                try:
                    probability = _probability(middle[at + 14:middle.find(" ", at + 14)]) if at >= 0 else None
                except ValueError:
                    self._bad_probability(table, f"-A {chain} {middle}-j {target}")
                    continue
                ladder.endpoints.append(declared.get(target, target))
                ladder.probabilities.append(probability)
        for line, chain in _OTHER_RULE.findall(seg):
            if chain in BUILTIN_CHAINS and chain not in declared:
                self._declare(table, chain)
            target = _target(line)
            self._check_target(table, target, line)
            self._other_rule(table, declared.get(chain, chain), declared.get(target, target), line)

    def _check_target(self, table: Table, target: str, line: str) -> None:
        if target.startswith("KUBE-") and target not in self.declared and target not in self._pending:
            self._pending[target] = line

    def _end_table(self) -> None:
        table = self.table
        if table is not None:
            for target, text in sorted(self._pending.items()):
                if target not in self.declared:
                    text = text if text.startswith("-") else "-A ? " + text
                    self.rs.dangling.append(Jump(table.name, text.split(" ", 2)[1], target, text))
            known = self.declared.keys()  # set operations: a table may have 60k chains
            suspects = self.stray_suspects[1] if self.stray_suspects and self.stray_suspects[0] is table else None
            stores = ((table.endpoint_dnat, True), (table.ladders, True), (table.dispatch, False), (table.plain, False))
            for store, patched in stores:
                maybe = suspects.intersection(store) if suspects is not None and patched else store.keys()
                if maybe <= known:  # the usual case, checked without building a set
                    continue
                stray = maybe - known
                for chain in [c for c in store if c in stray]:
                    self._unparsed(f"-A {chain} ...", "rules for an undeclared chain")
                    self._flush(table, chain)
            # an endpoint chain with no rule at all has no DNAT either (none such when every declared one has
            # a DNAT entry: all of those are declared)
            empty: set[str] = set()
            if self.counts is None or self.counts[0] != len(table.endpoint_dnat):
                empty = {c for c in known - table.endpoint_dnat.keys() if c.startswith(ENDPOINT_PREFIX)}
            for chain in [c for c in table.chains if c in empty] if empty else []:
                table.endpoint_dnat[chain] = ""
            self.emptied[table.name] = self.emptied.get(table.name, frozenset()) | empty
            table.prefixes = None if self.counts is None else dict(zip(COUNTED, self.counts, strict=True))
        self._pending.clear()
        self.stray_suspects = None
        self.table = None


_TABLE_EDGE = re.compile(r"\n(\*\S+|COMMIT)[ \t]*(?=\n|$)")
# a line the fast path leaves to feed(): anything but a rule, a chain, a comment or a blank line
_ODD_LINE = re.compile(r"\n(?!-A |-I |:|#|\n|$)")
_CHAIN_DECL = re.compile(r"\n:(\S+)")
_SEP_DNAT = re.compile(r"\n-A (KUBE-SEP-\S+) [^\n]* --to-destination (\S+)")
# a KUBE-SVC/SVL rule: chain, what lies between, -j target (kube-proxy writes no such rule without -j or with -g)
_LADDER_RULE = re.compile(r"\n-A (KUBE-SV[CL]-\S+) ([^\n]*)-j (\S+)[^\n]*")
_OTHER_RULE = re.compile(r"\n(-[AI] (?!KUBE-SEP-|KUBE-SVC-|KUBE-SVL-)(\S+)[^\n]*)")


def declared_counts(seg: str) -> tuple[int, ...]:
    """How many chains `seg` (lines each after a "\\n") declares per COUNTED."""
    if "\n:KUBE-" not in seg:
        return (0,) * len(COUNTED)
    return tuple(seg.count("\n:" + prefix) for prefix in COUNTED)


def parse_save(lines: Iterable[str], family: int = 4) -> RuleSet:
    """Parse a whole iptables-save (or restore-input) text, given as lines, one at a time."""
    parser = Parser(family)
    for line in lines:
        parser.feed(line)
    return parser.result()


def parse_text(text: str, family: int = 4) -> RuleSet:
    """Parse a whole text with the fast block path (same result as parse_save)."""
    parser = Parser(family)
    parser.feed_block(text if text.endswith("\n") else text + "\n")
    return parser.result()


def jump_target(rule_text: str) -> str:
    """The chain or target a rule's text jumps to (-j/-g), "" when it has none."""
    return _target(rule_text)
