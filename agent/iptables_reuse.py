"""Read the same rules again for little: the parse of an `iptables-save` stream reuses what the previous
read of the same backend and family already parsed. Pure: no I/O (the collector feeds the bytes).

Why: at 10k Services a save prints 25 MB. Parsing that costs about as much as the save itself, and the
checks half as much again, while between two reads kube-proxy rewrites only the chains of the Services
that changed (its partial syncs), often none.

How:
- A run of `-A` lines is cut into pieces before each run of a KUBE-SEP chain whose hash ends in A-D
  (one chain in eight) and of a KUBE-SVC/SVL chain whose hash ends in A-H (one in four: ladders are
  several rules long). Those names are sha256-based, so the cuts are evenly spread in any
  order of chains and depend on the text only, never on block or byte offsets: an unchanged chain
  lands in an unchanged piece whatever changed elsewhere.
- Each piece is parsed on its own (the Parser's block path, on a scratch table) and remembered by the
  SHA-1 of its bytes; the next read takes the remembered parse of every piece it has seen before and
  merges the pieces into the table in order. Merging gives exactly what one parse of the whole text
  gives (tests compare the two on every fixture and on generated rule sets cut into odd blocks); the
  one case needing care, a chain whose rules fall into two pieces, is merged into fresh objects so a
  remembered piece is never changed.
- Dispatch rules are also remembered by line, because KUBE-SERVICES is one long chain that changes
  whenever any Service is added or removed.
- Chain declarations (60k lines at 10k Services) are cut alike, before one hash-named chain in 32, and
  each such piece is remembered as its tuple of names.
- Everything else that is not a `-A` line (tables, built-in chains, restore commands, COMMIT) goes to the
  Parser every time it is needed.
- Each piece, and each stretch of other lines without its comments and the built-in chains' packet
  counters (which change with traffic, not with rules), gives a token. While the tokens repeat the
  previous read's, nothing is built, only noted; when the whole read repeats it, the previous RuleSet
  object itself is returned, so every check memoised on it (agent/checks/memo.py) costs nothing. At the
  first token that differs, what was noted is done, and the read goes on as described above.

Only what the current read used is kept for the next one: memory stays that of one rule set, plus
about 5% for the piece index.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from agent.iptables_parse import Parser, declared_counts
from agent.model.iptables import ChainChanges, LadderChain, Rule, RuleSet, Table

# The start of a run of one KUBE-SEP chain whose hash ends in A-D (one in eight), or of one KUBE-SVC/SVL
# chain whose hash ends in A-H (one in four: a ladder has several rules, so its pieces would be long),
# and the whole run (matching the run too lets the search go on after it, so only its first line is a
# cut). The hash's last letter, not its first: iptables-legacy-save prints chains sorted by name.
# Also the start of a run of one of kube-proxy's long dispatch chains: each of those is a piece of its
# own (it ends where its run ends), so that a change to it or to a neighbour costs only one of the two.
_CUT = re.compile(rb"\n-A (KUBE-SEP-[A-Z2-7]{15}[A-D]|KUBE-SV[CL]-[A-Z2-7]{15}[A-H]|KUBE-SERVICES|KUBE-NODEPORTS)"
                  rb" [^\n]*(?:\n-A \1 [^\n]*)*")
# In a run of chain declarations, the start of a piece: a hash-named chain whose hash ends in A (one in 32:
# pieces of about 30 lines; one in 64 measured slower), declared as a user chain. Found from its end (see
# _declaration_cuts).
_DECL_CUT = re.compile(rb"\n:KUBE-[A-Z]{2,3}-[A-Z2-7]{15}A - \[0:0\]")
_DECL_CUT_END = b"A - [0:0]"
_NOT_DECL = re.compile(rb"\n(?!:)")
_ALONE = frozenset({b"KUBE-SERVICES", b"KUBE-NODEPORTS"})
_ODD = re.compile(r"\n(?!-A )")  # in a piece: a line that is not a `-A` rule (restore input, damage)
_RULE_CHAIN = re.compile(r"\n-[AI] (\S+)")
_COMMENT = re.compile(rb"\n#[^\n]*")
_NOTHING = hashlib.sha1().digest()
# packet counters: a built-in chain's change with traffic (a user chain's are always [0:0]); searched from
# the "[", which only chain lines have (from the " " before a policy, it costs 20 ms on 60k declarations)
_COUNTERS = re.compile(rb"\[\d+:\d+\]")
T = TypeVar("T")
GATHER = 1 << 18  # bytes gathered before cutting (a save comes in blocks of a few kB as often as of 256 kB)
MAX_CARRY = 4 << 20  # a run longer than this with no cut is handled anyway (rules: merged as a split chain)


@dataclass(slots=True)
class Piece:
    """The parse of one piece: what it adds to its table."""

    rule_count: int
    dnat: dict[str, str] | None  # None when empty (a few bytes less, times thousands of pieces)
    ladders: dict[str, LadderChain] | None
    jumps: tuple[str, ...]  # KUBE-* chains its rules jump to: all declared, or the piece goes to the Parser
    dispatch: dict[str, list[Rule]] | None = None  # these three are rare: None when empty
    plain: dict[str, list[str]] | None = None


@dataclass(frozen=True, slots=True)
class Declared:
    """The parse of a piece of chain declarations: the names in order, and how many per COUNTED."""

    names: tuple[str, ...]
    counts: tuple[int, ...]


@dataclass
class PieceCache:
    """What one backend and family's previous read left for the next one."""

    pieces: dict[bytes, Piece] = field(default_factory=dict)
    declared: dict[bytes, Declared] = field(default_factory=dict)  # declaration pieces
    rules: dict[str, Rule] = field(default_factory=dict)  # dispatch rules by line: KUBE-SERVICES changes often
    tokens: list[bytes] = field(default_factory=list)  # the read, in order: a digest per piece or other part
    lengths: list[int] = field(default_factory=list)  # bytes of each piece (0 for other parts)
    quick: list[int] = field(default_factory=list)  # hash() of each piece's bytes (0 for other parts): see _follow
    order: list[Piece | None] = field(default_factory=list)  # each piece (None for other parts)
    ruleset: RuleSet | None = None
    names: dict[str, dict[str, str]] = field(default_factory=dict)  # table -> chain names, as the last read has them
    # What ChainChanges are worked out from: the last read's serial, its pieces per table (by id: they are
    # kept alive here), its endpoint chains with no rule, and whether every rule came in a piece
    serial: int | None = None
    table_pieces: dict[str, dict[int, Piece]] = field(default_factory=dict)
    emptied: dict[str, frozenset[str]] = field(default_factory=dict)
    splits: dict[str, set[str]] = field(default_factory=dict)  # table -> chains whose rules were in two pieces
    clean: bool = False
    reused: int = 0  # pieces of the latest read taken from the previous one (for tests and the benchmark)
    parsed: int = 0


class ReusingParser:
    """Feed the save output's bytes in blocks of whole lines; `result()` gives the RuleSet (the previous
    read's own object when nothing but comments and counters changed)."""

    def __init__(self, cache: PieceCache, family: int = 4) -> None:
        self.cache = cache
        self.family = family
        self.base = Parser(family, known_rules=cache.rules)
        self.base.known_names = cache.names
        self.pending = b"\n"  # bytes not consumed yet; always begins with the "\n" before a line
        self.parts: list[bytes] = []  # blocks not cut yet
        self.parts_size = 0
        self.tokens: list[bytes] = []
        self.lengths: list[int] = []  # of each piece (0: other lines), parallel to tokens
        self.quick: list[int] = []  # hash() of each piece's bytes (0: other lines), parallel to tokens
        known = cache.tokens  # the previous read: where each of its pieces was, to follow it from there
        self.known_at = {t: i for i, t in enumerate(known) if cache.lengths[i]} if known else {}
        self.expect: int | None = 0 if known else None  # the previous read's next token
        self.other_digest = hashlib.sha1()  # of the stretch of other lines being read
        self.other_parts: list[bytes] = []  # its blocks, while put off
        # While this read repeats the previous one, nothing is built: what to do is kept here, and done only
        # if the read turns out to differ (None from then on). An unchanged read builds nothing at all.
        self.deferred: list[Piece | Declared | bytes] | None = []
        self.pieces: dict[bytes, Piece] = {}
        self.declared: dict[bytes, Declared] = {}
        self.in_declarations = False  # the bytes carried into the next block begin a piece of declarations
        self.batch: list[Piece] = []  # pieces not merged into the table yet (merged a buffer at a time)
        self.merged: dict[str, list[Piece]] = {}  # table -> the pieces merged into it
        # table -> the last read's endpoint_dnat and ladders, until this read's table begins as copies of them
        self.previous: dict[str, tuple[dict[str, str], dict[str, LadderChain]]] = {}
        self.patches: dict[str, _Patch | None] = {}  # table -> how its stores are being patched (None: merged)
        self.by_id: dict[str, dict[int, Piece]] = {}  # table -> the pieces merged into it, by id
        self.diffs: dict[str, tuple[tuple[int, int, int], tuple[list[Piece], list[Piece]]]] = {}  # see _diff
        self.splits: dict[str, set[str]] = {}  # table -> chains whose rules came in two pieces
        self.fed_rules = False  # a rule or command went to the Parser outside a piece: no ChainChanges
        self.gone: dict[str, tuple[dict[int, Piece], set[str]] | None] = {}  # see _gone
        self.reused = self.parsed = 0

    def feed_block(self, block: bytes) -> None:
        # Gathered before cutting: what is left over is carried into the next buffer (copied each time).
        self.parts.append(block if block.endswith(b"\n") else block + b"\n")
        self.parts_size += len(self.parts[-1])
        if self.parts_size >= GATHER:
            self._feed_parts(final=False)

    def _feed_parts(self, final: bool) -> None:
        buf = b"".join([self.pending, *self.parts])
        self.parts, self.parts_size = [], 0
        self.pending = buf[self._consume(buf, final=final):]
        self._merge_batch()  # while the save is still printing, not all at the end

    def result(self) -> RuleSet:
        self._feed_parts(final=True)
        self._close_other()
        self.pending = b"\n"
        cache = self.cache
        cache.pieces, cache.declared = self.pieces, self.declared
        cache.reused, cache.parsed = self.reused, self.parsed
        if self.deferred is not None and self.tokens == cache.tokens and cache.ruleset is not None:
            return cache.ruleset  # the same rules as last time: the same object
        self._diverge()
        self._merge_batch()
        self._finish_patch()
        self.previous.clear()
        rs = self.base.result()
        in_use = [rules for table in rs.tables.values() for rules in table.dispatch.values()]
        if len(cache.rules) > 2 * sum(map(len, in_use)) + 1024:  # rules long gone: keep only this read's
            cache.rules = {rule.text: rule for rules in in_use for rule in rules}
        clean = not self.fed_rules and not rs.unparsed_count
        if clean and cache.clean and cache.serial is not None and rs.tables.keys() == cache.table_pieces.keys():
            rs.changes = ChainChanges(cache.serial, {name: _changed_chains(
                *self._diff(name, cache.table_pieces[name], self.by_id.get(name, {})),
                (cache.emptied.get(name, frozenset()) ^ self.base.emptied.get(name, frozenset()))
                | cache.splits.get(name, set()) | self.splits.get(name, set())) for name in rs.tables})
        cache.serial, cache.clean, cache.emptied, cache.splits = rs.serial, clean, self.base.emptied, self.splits
        cache.table_pieces = {name: self.by_id.get(name, {}) for name in rs.tables}
        cache.tokens, cache.lengths, cache.quick, cache.ruleset = self.tokens, self.lengths, self.quick, rs
        cache.order = list(map(self.pieces.get, self.tokens))
        # Chain names as this read's objects (the Parser's own name -> name dicts): the next read's declarations
        # use them, not copies, so the pieces it keeps and its own tables share one string per name (not
        # sys.intern: interned strings are never freed on some Pythons, and endpoint chain names churn).
        cache.names = self.base.declared_of
        return rs

    def _repeats(self, token: bytes, length: int, quick: int = 0) -> bool:
        """Note the next part of the read (its length and hash() when a piece, else 0); True while the read so
        far is the previous one again."""
        n = len(self.tokens)
        self.tokens.append(token)
        self.lengths.append(length)
        self.quick.append(quick)
        known = self.cache.tokens
        if self.expect is not None and self.expect < len(known) and known[self.expect] == token:
            self.expect += 1  # where the previous read goes on from here
        else:
            at = self.known_at.get(token)
            self.expect = None if at is None else at + 1
        if self.deferred is None:
            return False
        if n < len(known) and known[n] == token:
            return True
        self._diverge()
        return False

    def _diverge(self) -> None:
        """The read differs from the previous one: do what was put off, in order."""
        if self.deferred is not None and self.cache.ruleset is not None:
            # It will not be returned: not kept alive while the new one is built, but for its two largest
            # stores, which the new tables begin as copies of (see _patch_of)
            self.previous = {name: (table.endpoint_dnat, table.ladders)
                             for name, table in self.cache.ruleset.tables.items()}
            self.cache.ruleset = None
        deferred, self.deferred = self.deferred, None
        for item in deferred or []:
            if isinstance(item, Piece):
                self.batch.append(item)  # it passed the jump check at this very point last time
            elif isinstance(item, Declared):
                self.base.declare_all(item.names, item.counts)
            else:
                self._apply_other(item)

    # -- cutting ------------------------------------------------------------------------------------
    def _consume(self, buf: bytes, final: bool) -> int:
        """Handle buf (which begins with "\\n" and ends with one) up to a place where nothing can continue
        into the next block; returns that position (the "\\n" before the first line not handled).

        From a `-A` line up to the table's COMMIT is cut into pieces; in iptables-save output that is all
        rules. Anything else found there (restore commands, damage) makes its piece go to the Parser."""
        pos, end = 0, len(buf) - 1
        while pos < end:
            if buf.startswith(b"-A ", pos + 1):
                self._close_other()
                commit = buf.find(b"\nCOMMIT", pos)
                stop = end if commit < 0 else commit
                done = self._rules(buf, pos, stop, carry=commit < 0 and not final)
                if done < stop:
                    return done
                pos = stop
            else:
                nxt = buf.find(b"\n-A ", pos + 1)
                stop = end if nxt < 0 else nxt
                done = self._others(buf, pos, stop, carry=nxt < 0 and not final)
                if done < stop:
                    return done
                pos = stop
        return pos

    def _others(self, buf: bytes, pos: int, stop: int, carry: bool) -> int:
        """Lines other than rules between pos and stop. A run of user chain declarations in them (60k lines at
        10k Services) is cut into declaration pieces, as rules are; the rest goes to _other. When the run
        reaches the end of the block (carry), its last piece may go on in the next block: left for then."""
        while pos < stop:
            if self.in_declarations:  # the last block left off within a run, here
                self.in_declarations, begin = False, pos
            else:
                first = _declaration_cuts(buf, pos, stop, first=True)
                if not first:
                    self._other(buf[pos + 1:stop + 1])
                    return stop
                begin = first[0]
                if begin > pos:
                    self._other(buf[pos + 1:begin + 1])
            after = _NOT_DECL.search(buf, begin + 1, stop)  # the first line that declares nothing
            run_end = stop if after is None else after.start()
            bounds = _bounded(buf, [begin, *_declaration_cuts(buf, begin + 1, run_end), run_end])
            carried = run_end == stop and carry
            if carried:
                run_end = bounds.pop(-2)  # the last piece may go on in the next block
                bounds[-1] = run_end
            view = memoryview(buf)
            for start, end in itertools.pairwise(bounds):
                self._declarations(buf, view, start, end)
            if carried:
                self.in_declarations = True
                return run_end
            pos = run_end
        return stop

    def _declarations(self, buf: bytes, view: memoryview, start: int, end: int) -> None:
        """A piece of chain declarations: its names are taken from the last read when its bytes are the same."""
        if buf.count(b"\n", start, end) != buf.count(b" - [0:0]\n", start, end + 1):
            self._other(buf[start + 1:end + 1])  # a built-in chain (its counters change with traffic) among them
            return
        self._close_other()
        key = hashlib.sha1(view[start:end]).digest()
        declared = self.declared.get(key) or self.cache.declared.get(key)
        if self._repeats(key, 0) and declared is not None:
            self.declared[key] = declared
            assert self.deferred is not None
            self.deferred.append(declared)
            return
        self._diverge()
        if self.base.table is None:  # outside a table: the Parser records the lines as unparsed
            self._apply_other(buf[start + 1:end + 1])
            return
        if declared is None:
            text = buf[start:end].decode("utf-8", "replace")
            declared = Declared(tuple(self.base.chain_names(text)), declared_counts(text))
        self.declared[key] = declared
        self.base.declare_all(declared.names, declared.counts)

    def _rules(self, buf: bytes, start: int, stop: int, carry: bool) -> int:
        """Parse or reuse the pieces between start and stop. When they reach the end of the block (carry),
        the last piece may go on in the next block: left for then."""
        view = memoryview(buf)
        pos = start
        while pos < stop:
            pos = self._follow(buf, view, pos, stop, carry)
            if pos >= stop:
                break
            run = _CUT.match(buf, pos)  # a cut's own run is not cut again
            if run is not None and run.group(1) in _ALONE:
                cut = run.end()
            else:
                found = _CUT.search(buf, run.end() if run else pos + 1, stop)
                cut = found.start() if found else stop
            if cut == stop and carry and stop - pos <= MAX_CARRY:
                return pos
            # too long for one piece (KUBE-SERVICES at 30k Services: 6 MB): cut where its own bytes decide,
            # not where a block happened to end, so that the next read cuts it alike and reuses both parts
            cut = _bounded(buf, [pos, cut])[1]
            self._piece(view[pos:cut])
            pos = cut
        return stop

    def _follow(self, buf: bytes, view: memoryview, pos: int, stop: int, carry: bool) -> int:
        """Take, from pos on, the pieces the previous read had next, for as long as the bytes are the same
        (as many bytes as the piece had, ending at a line end, with the same hash): no search for cuts at
        all where nothing changed. A piece taken so is the very bytes of a known one, wherever the cut falls.

        The bytes are compared by Python's own hash() (SipHash, 64 bits, keyed afresh in each process), not
        SHA-1: three times faster on 25 MB. It only ever has to tell one piece from the one that stood at the
        same place last time, never to find a piece among thousands (that is what the SHA-1 key is for): a
        false match needs a changed piece to collide with the one it replaced, 2^-64 each time."""
        known, lengths, quick = self.cache.tokens, self.cache.lengths, self.cache.quick
        if self.deferred is None and self.expect is not None:
            pos = self._follow_changed(buf, view, pos, stop, carry)
        while self.expect is not None and self.expect < len(known) and lengths[self.expect]:
            end = pos + lengths[self.expect]
            if end > stop or (end == stop and carry) or buf[end] != 10:  # 10: "\n"
                break
            same = hash(view[pos:end])
            if same != quick[self.expect]:
                break
            self._piece(view[pos:end], known[self.expect], same)
            pos = end
        return pos

    def _follow_changed(self, buf: bytes, view: memoryview, pos: int, stop: int, carry: bool) -> int:
        """_follow once the read differs from the previous one (after a partial sync: most pieces then), with
        what _piece does for a known piece done inline, and its bookkeeping done in bulk after the loop: 8k
        pieces at 10k Services. Stops at the first piece that needs more (a jump check, a parse), which
        _follow then gives to _piece."""
        known, lengths, order, expect = self.cache.tokens, self.cache.lengths, self.cache.order, self.expect
        quick = self.cache.quick
        assert expect is not None
        gone = self._gone()
        if gone is None:
            return pos
        here, missing = gone
        first = expect
        while expect < len(known) and lengths[expect]:
            end = pos + lengths[expect]
            if end > stop or (end == stop and carry) or buf[end] != 10:  # 10: "\n"
                break
            piece = order[expect]
            if piece is None or id(piece) not in here or not missing.isdisjoint(piece.jumps):
                break
            if hash(view[pos:end]) != quick[expect]:
                break
            expect += 1
            pos = end
        if expect > first:
            keys, taken = known[first:expect], cast(list[Piece], order[first:expect])
            self.tokens += keys
            self.lengths += lengths[first:expect]
            self.quick += quick[first:expect]
            self.pieces.update(zip(keys, taken, strict=True))
            self.batch += taken
            self.reused += expect - first
        self.expect = expect
        return pos

    # -- pieces -------------------------------------------------------------------------------------
    def _piece(self, chunk: memoryview, key: bytes | None = None, quick: int | None = None) -> None:
        key = key or hashlib.sha1(chunk).digest()
        piece = self.pieces.get(key) or self.cache.pieces.get(key)
        if self._repeats(key, len(chunk), hash(chunk) if quick is None else quick) and piece is not None:
            self.reused += 1
            self.pieces[key] = piece
            assert self.deferred is not None
            self.deferred.append(piece)
            return
        self._diverge()
        if piece is not None and self._jumps_declared(piece):
            self.reused += 1
        else:
            text = bytes(chunk).decode("utf-8", "replace")
            piece = None if self.base.table is None or _ODD.search(text) else self._parse(text)
            if piece is None:  # not a plain run of good rules: the Parser takes it, in order, every time
                self._merge_batch()  # (a token that differs: nothing is deferred any more)
                self._to_parser(text[1:] + "\n")
                return
            self.parsed += 1
        self.pieces[key] = piece
        self.batch.append(piece)

    def _gone(self) -> tuple[dict[int, Piece], set[str]] | None:
        """For the jump check of a piece that was in this table last time: (those pieces by id, the chains
        declared then and not now). Such a piece's jumps were all declared then, so only the gone chains
        need looking for among them (a handful, against 70k lookups at 10k Services). Worked out once per
        table, at its first piece, when iptables-save has printed all its chains. None: check every jump."""
        table = self.base.table
        if table is None or self.fed_rules:
            return None
        if table.name not in self.gone:
            before = self.cache.names.get(table.name)
            self.gone[table.name] = None if before is None else (
                self.cache.table_pieces.get(table.name, {}), set(before.keys() - self.base.declared.keys()))
        return self.gone[table.name]

    def _jumps_declared(self, piece: Piece) -> bool:
        gone = self._gone()
        if gone is not None and id(piece) in gone[0]:
            return gone[1].isdisjoint(piece.jumps)
        return all(map(self.base.declared.__contains__, piece.jumps))

    def _parse(self, text: str) -> Piece | None:
        """The piece's parse on a scratch table that sees the table's declared chains. None when a rule in
        it cannot be read, jumps to a chain that is not declared or adds to a built-in chain the table did
        not declare: the Parser then takes the lines itself, so the evidence and its order stay what one
        parse of the whole text gives."""
        scratch = _PieceParser(self.family, known_rules=self.cache.rules)
        scratch.declared = self.base.declared  # only read: a piece that would declare a chain is refused
        table = scratch.table = Table("")
        try:
            scratch._segment(text)  # lines each preceded by "\n", as the block path takes them
        except _NotAPiece:
            return None
        if scratch.rs.unparsed_count or scratch._pending:
            return None
        ladders = table.ladders.values()
        jumps = scratch.jumps.union(itertools.chain.from_iterable(lad.endpoints for lad in ladders),
                                    itertools.chain.from_iterable(lad.affinity_endpoints for lad in ladders))
        return Piece(rule_count=table.rule_count, dnat=table.endpoint_dnat or None,
                     ladders=table.ladders or None, jumps=tuple(jumps), dispatch=table.dispatch or None,
                     plain=table.plain or None)

    def _merge_batch(self) -> None:
        """Merge the pieces read since the last merge into the table, as parsing their lines in order would.
        The usual case (no chain in two pieces, every jump to a declared chain) takes a few dict updates."""
        batch, self.batch = self.batch, []
        if not batch:
            return
        base = self.base
        table = base.table
        assert table is not None
        self.merged.setdefault(table.name, []).extend(batch)
        self.by_id.setdefault(table.name, {}).update(zip(map(id, batch), batch, strict=True))
        splits = self.splits.setdefault(table.name, set())
        # (map and filter over attrgetters: loops in C, over 8k pieces at 10k Services)
        table.rule_count += sum(map(_RULE_COUNT, batch))
        for dispatch in filter(None, map(_DISPATCH, batch)):
            _append(table.dispatch, dispatch, splits)
        for plain in filter(None, map(_PLAIN, batch)):
            _append(table.plain, plain, splits)
        patch = self._patch_of(table)
        if patch is not None:  # only the pieces the last read did not have change anything
            came = [p for p in batch if id(p) not in patch.before]
            patch.came += came
            collections.deque(map(patch.unseen.pop, map(id, batch), itertools.repeat(None)), maxlen=0)  # (in C)
            table.endpoint_dnat.update(itertools.chain.from_iterable(map(dict.items, _entries(_DNAT, came))))
            table.ladders.update(itertools.chain.from_iterable(map(dict.items, _entries(_LADDERS, came))))
            return
        _update_all(table.endpoint_dnat, list(filter(None, map(_DNAT, batch))), _joined_dnat, splits)
        _update_all(table.ladders, list(filter(None, map(_LADDERS, batch))), _joined, splits)

    def _patch_of(self, table: Table) -> _Patch | None:
        """At a table's first merge: whether its two largest stores (50k endpoint DNATs, 10k ladders at 10k
        Services) can begin as copies of the last read's and be patched, instead of taking an entry from every
        piece. Only when the last read's were built from pieces alone, each chain in one piece."""
        if table.name in self.patches:
            return self.patches[table.name]
        previous, before = self.previous.pop(table.name, None), self.cache.table_pieces.get(table.name)
        patch = None
        if (previous is not None and before is not None and self.cache.clean and not self.fed_rules
                and not self.cache.splits.get(table.name) and not table.endpoint_dnat and not table.ladders):
            table.endpoint_dnat, table.ladders = previous[0].copy(), previous[1].copy()
            # what the pieces put there: each entry but the "" of endpoint chains with no rule
            emptied = self.cache.emptied.get(table.name, frozenset())
            patch = _Patch(before, len(previous[0]) - sum(c in previous[0] for c in emptied), len(previous[1]),
                           dict(before))
        self.patches[table.name] = patch
        return patch

    def _finish_patch(self) -> None:
        """Before the Parser sees more of the table, or at its end: the entries of the last read's pieces that
        this read did not have, and of its endpoint chains with no rule, are taken out, unless a new piece
        brought them. Then each store must hold one entry per entry of this read's pieces; if not (a chain in
        two pieces: not in a save), it is merged afresh, the long way."""
        table = self.base.table
        patch = None if table is None else self.patches.get(table.name)
        if table is None or patch is None:
            return
        self.patches[table.name] = None
        now, gone = self.by_id[table.name], list(patch.unseen.values())
        # what _diff would work out, known here without going over every piece again
        self.diffs[table.name] = ((id(patch.before), id(now), len(now)),
                                  (gone, list(dict(zip(map(id, patch.came), patch.came, strict=True)).values())))
        emptied = self.cache.emptied.get(table.name, frozenset())
        splits = self.splits.setdefault(table.name, set())
        merged, came = self.merged[table.name], patch.came
        once = len(now) == len(merged)  # no piece merged twice (the same bytes twice: its chains are joined)
        dnat_brought = _patched(table.endpoint_dnat, _entries(_DNAT, came), _entries(_DNAT, gone), emptied,
                                patch.dnat_count, once, lambda: _entries(_DNAT, merged), _joined_dnat, splits)
        ladders_brought = _patched(table.ladders, _entries(_LADDERS, came), _entries(_LADDERS, gone), (),
                                   patch.ladder_count, once, lambda: _entries(_LADDERS, merged), _joined, splits)
        gone_names = self._gone()
        if dnat_brought is not None and ladders_brought is not None and gone_names is not None:
            # The last read's entries had declared chains (its COMMIT flushed any other). So only a chain that
            # came in a piece, or was declared then and is not now, can be undeclared (until more rules or
            # commands reach the Parser: see _to_parser).
            self.base.stray_suspects = (table, dnat_brought | ladders_brought | gone_names[1])

    def _diff(self, table: str, before: dict[int, Piece], now: dict[int, Piece]) -> tuple[list[Piece], list[Piece]]:
        """_gone_and_came for a table, worked out once while no more pieces came (for the patch, then the
        ChainChanges)."""
        key = (id(before), id(now), len(now))
        have = self.diffs.get(table)
        if have is None or have[0] != key:
            have = self.diffs[table] = (key, _gone_and_came(before, now))
        return have[1]

    def _to_parser(self, text: str) -> None:
        """Lines for the Parser itself. It adds rules to the table's objects, so a ladder that came from a
        piece is copied first: pieces are never changed."""
        self._finish_patch()
        table = self.base.table
        # a rule or command ("-A", "-X", ...) outside a piece; any other line the Parser does not know it
        # records as unparsed, which stops ChainChanges too (in iptables-save output there is neither)
        rules = text.startswith("-") or "\n-" in text
        self.fed_rules = self.fed_rules or rules
        if rules:  # what the Parser adds or deletes is not among the suspects: all are checked
            self.base.stray_suspects = None
        if table is not None and rules:
            for chain in set(_RULE_CHAIN.findall("\n" + text)):
                if chain in table.ladders:
                    table.ladders[chain] = _joined(LadderChain(), table.ladders[chain])
        self.base.feed_block(text)

    def _other(self, seg: bytes) -> None:
        """Lines that are not `-A` rules, for the Parser. A stretch of them (it may come in several blocks)
        gives one token: its lines without the parts that change with traffic or time (comments, built-in
        chains' packet counters), line by line so that it does not depend on where blocks were cut."""
        self.other_digest.update(_COUNTERS.sub(b"", _COMMENT.sub(b"", b"\n" + seg)[1:]))
        if self.deferred is None:
            self._apply_other(seg)
        else:
            self.other_parts.append(seg)

    def _close_other(self) -> None:
        """The stretch of other lines has ended (a rule or the end follows): its token decides whether
        what it holds is put off too or done now."""
        if self.other_digest.digest() == _NOTHING:
            return
        token, self.other_digest = self.other_digest.digest(), hashlib.sha1()
        parts, self.other_parts = self.other_parts, []
        if self._repeats(token, 0):
            assert self.deferred is not None
            self.deferred.extend(parts)
        else:
            for seg in parts:
                self._apply_other(seg)

    def _apply_other(self, seg: bytes) -> None:
        self._merge_batch()
        self._to_parser(seg.decode("utf-8", "replace"))


@dataclass
class _Patch:
    """A table whose endpoint_dnat and ladders began as copies of the last read's."""

    before: dict[int, Piece]  # the last read's pieces of the table, by id
    dnat_count: int  # the entries those pieces have in each store (each chain is in one piece)
    ladder_count: int
    unseen: dict[int, Piece]  # those not merged again yet: at the table's end, the pieces gone
    came: list[Piece] = field(default_factory=list)  # this read's pieces that are not among them


_RULE_COUNT, _DISPATCH, _PLAIN, _DNAT, _LADDERS = map(operator.attrgetter, (
    "rule_count", "dispatch", "plain", "dnat", "ladders"))


class _PieceParser(Parser):
    """The Parser, noting every KUBE-* chain a rule jumps to (besides the ladders' endpoint chains, which
    the ladders list): a later read reuses the piece only while all of them are declared."""

    def __init__(self, family: int, known_rules: dict[str, Rule]) -> None:
        super().__init__(family, known_rules=known_rules)
        self.jumps: set[str] = set()

    def _check_target(self, table: Table, target: str, line: str) -> None:
        if target.startswith("KUBE-"):
            self.jumps.add(target)
        super()._check_target(table, target, line)

    def _declare(self, table: Table, name: str) -> str:
        raise _NotAPiece  # a rule for a built-in chain the table did not declare (restore input)


class _NotAPiece(Exception):
    pass


def _declaration_cuts(buf: bytes, start: int, end: int, first: bool = False) -> list[int]:
    """Where _DECL_CUT matches in buf[start:end] (the "\\n" before each such line), or only the first. Every
    declaration line begins as the pattern does, so a regular expression search tries each of 60k lines;
    the rare end of the pattern is found by bytes.find instead, and only those lines are matched."""
    cuts: list[int] = []
    at = buf.find(_DECL_CUT_END, start, end)
    while at >= 0:
        line = buf.rfind(b"\n", start, at)
        if line >= 0 and _DECL_CUT.match(buf, line, end):
            cuts.append(line)
            if first:
                break
        at = buf.find(_DECL_CUT_END, at + len(_DECL_CUT_END), end)
    return cuts


def _bounded(buf: bytes, bounds: list[int]) -> list[int]:
    """`bounds` (line starts, in order), with one added wherever two are more than MAX_CARRY apart: at the
    last line end within MAX_CARRY. It depends on the bytes only, so every read cuts a long run alike."""
    out = bounds[:1]
    for end in bounds[1:]:
        while end - out[-1] > MAX_CARRY:
            at = buf.rfind(b"\n", out[-1] + 1, out[-1] + MAX_CARRY + 1)
            if at <= out[-1]:
                break  # one line longer than that
            out.append(at)
        out.append(end)
    return out


def _entries(store: Callable[[Piece], dict[str, T] | None], pieces: Iterable[Piece]) -> list[dict[str, T]]:
    """Each piece's entries in one store, for the pieces that have any."""
    return list(filter(None, map(store, pieces)))


def _patched(store: dict[str, T], came: list[dict[str, T]], gone: list[dict[str, T]], stale: Iterable[str],
             count: int, once: bool, merged: Callable[[], list[dict[str, T]]], join: Callable[[T, T], T],
             splits: set[str]) -> set[str] | None:
    """A store that began as the last read's, whose pieces had `count` entries, with the entries of the
    pieces that came since already in it: the chains of the pieces gone, and `stale` ones, are taken out
    unless a piece that came has them. When each piece was merged `once`, it must then hold one entry per
    entry of this read's pieces, which is the count less the gone pieces' entries and plus those that came;
    if not (a chain in two pieces), it is merged afresh from all of them. Returns the chains the pieces
    that came brought, or None when the patch did not hold."""
    brought = set(itertools.chain.from_iterable(came))
    for chain in itertools.chain(itertools.chain.from_iterable(gone), stale):
        if chain not in brought:
            store.pop(chain, None)
    if not once or len(store) != count - sum(map(len, gone)) + sum(map(len, came)):
        store.clear()
        _update_all(store, merged(), join, splits)
        return None
    return brought


def _update_all(store: dict[str, T], adds: list[dict[str, T]], join: Callable[[T, T], T], splits: set[str]) -> None:
    """store.update(each of adds), in order; a chain already there (split over two pieces) is joined, and
    noted in `splits`. Costs the adds, not the store: the table is merged into many times during a read."""
    if not store or store.keys().isdisjoint(itertools.chain.from_iterable(adds)):
        size = len(store) + sum(map(len, adds))
        store.update(itertools.chain.from_iterable(add.items() for add in adds))
        if len(store) == size:
            return  # no chain twice: the usual case
        for add in adds:  # a chain twice among the adds (none was in the store): undone, and joined below
            for chain in add:
                store.pop(chain, None)
    for add in adds:
        for chain, value in add.items():
            have = store.get(chain)
            if have is not None:
                splits.add(chain)
            store[chain] = value if have is None else join(have, value)


def _append(store: dict[str, list[T]], add: dict[str, list[T]], splits: set[str]) -> None:
    """Each chain's rules after those it has (a chain that had some is noted in `splits`). Copied: a later
    `-I` (restore input) inserts into the table's list, never into the piece's."""
    for chain, rules in add.items():
        have = store.get(chain)
        if have is not None:
            splits.add(chain)
        store[chain] = list(rules) if have is None else have + rules


def _gone_and_came(before: dict[int, Piece], now: dict[int, Piece]) -> tuple[list[Piece], list[Piece]]:
    """The pieces one read had and the next did not, and those the next had and the one before did not (a
    piece parsed again is a new object)."""
    return (list(map(before.__getitem__, before.keys() - now.keys())),
            list(map(now.__getitem__, now.keys() - before.keys())))


def _changed_chains(gone: list[Piece], came: list[Piece], also: Iterable[str]) -> frozenset[str]:
    """The chains whose entries differ between the pieces gone and those that came (see _gone_and_came),
    and `also` (chains split over pieces, endpoint chains with no rule). A piece holds about eight chains:
    comparing entries keeps one changed chain from naming its neighbours."""
    changed = set(also)
    for store in (_DNAT, _LADDERS, _DISPATCH, _PLAIN):
        sides: list[dict[str, object]] = []
        for pieces in (gone, came):
            parts: list[dict[str, object]] = _entries(store, pieces)
            merged = dict(itertools.chain.from_iterable(map(dict.items, parts)))
            if len(merged) != sum(map(len, parts)):  # a chain in two of these pieces: named, not compared
                counts = collections.Counter(itertools.chain.from_iterable(parts))
                changed.update(chain for chain, n in counts.items() if n > 1)
            sides.append(merged)
        old, new = sides
        if store is _DNAT:  # strings: the differing entries found in C
            changed.update(chain for chain, _ in old.items() ^ new.items())
        else:
            changed.update(old.keys() ^ new.keys())
            changed.update(chain for chain in old.keys() & new.keys() if old[chain] != new[chain])
    return frozenset(changed)


def _joined_dnat(first: str, second: str) -> str:
    """Two DNATs of one endpoint chain, joined as the Parser joins them."""
    return f"{first},{second}" if first else second


def _joined(first: LadderChain, second: LadderChain) -> LadderChain:
    """One ladder from a chain's rules in two pieces, in order, as the Parser builds it line by line."""
    out = copy.copy(first)
    out.endpoints = first.endpoints + second.endpoints
    out.probabilities = first.probabilities + second.probabilities
    out.affinity_endpoints = first.affinity_endpoints + second.affinity_endpoints
    out.comment = first.comment if first.comment is not None else second.comment
    out.protocol = first.protocol if first.protocol is not None else second.protocol
    out.affinity_seconds = second.affinity_seconds if second.affinity_seconds is not None else first.affinity_seconds
    return out
