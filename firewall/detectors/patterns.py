"""Named term lists and named regexes, compiled with RE2 (linear time, no ReDoS).

Term lists (as in Falco's `lists:`) match whole words, case-insensitively:

- "kill" matches "kill", "Kill", "KILL", but not "skill", "killing" or "kill_it";
- a trailing "*" makes a prefix term: "kill*" matches "kill", "killing", "killer"
  (the match spans the whole word);
- a phrase "kill him" matches its words separated by any run of whitespace;
- any other character is literal ("f*ck", "c++").

"Whole word" is Unicode-aware: a word character is a letter, a mark, a number or "_"
(RE2's own \\b is ASCII-only, so "kill" would match inside "killé"). A term must not be
glued to a word character on either side. Matches of one list do not overlap; at one
position the longest term wins.

Regexes are RE2 syntax as written (case-sensitive unless they say "(?i)"); empty matches
are ignored since they mark nothing. Offsets are Python str indices into the text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from threading import Lock
from typing import Any

import re2

from firewall.detectors.base import EMPTY, DetectorResult, Match

__all__ = ["PatternError", "PatternSet", "compile_regex"]

_WORD_CHAR = r"[\pL\pM\pN_]"
_NOT_WORD_CHAR = r"[^\pL\pM\pN_]"
_SPACE = r"[\s\p{Z}]+"
# Term regexes capture the term in group 1 between consumed boundary characters; the
# scan resumes at the end of group 1, so the trailing boundary character can serve as
# the leading one of the next match. RE2 evaluates "^" against the whole text, not the
# resume position (verified in tests: "xkill" never matches "kill").
_TERM_TEMPLATE = rf"(?i)(?:^|{_NOT_WORD_CHAR})({{alternation}})(?:{_NOT_WORD_CHAR}|$)"
_WORD = re2.compile(rf"{_WORD_CHAR}+")
_MAX_MEM = 64 << 20  # big term lists exceed RE2's 8 MiB default
_NEAR_MEMO_SIZE = 1024


class PatternError(ValueError):
    """A term list or regex that cannot be compiled; the message names it."""


def compile_regex(name: str, pattern: str) -> Any:
    """Compile one named RE2 regex, or raise PatternError naming it and RE2's reason.

    A policy loader calls this to reject a bad regex with a precise message before
    building anything else.
    """
    if not isinstance(pattern, str) or not pattern:
        raise PatternError(f"regex {name!r}: pattern must be a non-empty string")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raise PatternError(
            f"regex {name!r}: RE2 cannot compile {pattern!r}: {_reason(exc)}"
        ) from exc


@dataclass(frozen=True, slots=True)
class _Compiled:
    label: str
    regex: Any
    group: int  # 1 for term lists (boundaries are consumed around group 1), 0 for regexes


class PatternSet:
    """A detector for named term lists and named regexes.

    `score` labels matches "list:<name>" / "regex:<name>" and scores each label that
    matched 1.0. `near` answers proximity questions on one list.
    """

    name = "patterns"

    def __init__(
        self,
        lists: Mapping[str, Sequence[str]] | None = None,
        regexes: Mapping[str, str] | None = None,
    ) -> None:
        self._lists: dict[str, _Compiled | None] = {}
        compiled: list[_Compiled] = []
        for list_name, terms in (lists or {}).items():
            _check_name("list", list_name)
            entry = _compile_terms(f"list {list_name!r}", f"list:{list_name}", terms)
            self._lists[list_name] = entry
            if entry is not None:
                compiled.append(entry)
        for regex_name, pattern in (regexes or {}).items():
            _check_name("regex", regex_name)
            compiled.append(_Compiled(f"regex:{regex_name}", compile_regex(regex_name, pattern), 0))
        self._compiled = tuple(compiled)
        self._any = _prefilter(compiled)
        self._near_memo: dict[tuple[str, tuple[str, ...]], _Compiled | None] = {}
        self._near_lock = Lock()

    @property
    def list_names(self) -> frozenset[str]:
        return frozenset(self._lists)

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        return [self._score_one(text) for text in texts]

    def near(
        self, text: str, list_name: str, words: Sequence[str], within: int
    ) -> tuple[Match, ...]:
        """Terms of `list_name` within `within` words of any of `words`, as list matches.

        Distance counts words: in "murder him" the two are 1 apart. `words` follow the
        term rules (case-insensitive, whole words, trailing "*" for a prefix, phrases).
        An occurrence of a word inside the term's own span does not count.
        """
        if list_name not in self._lists:
            known = ", ".join(sorted(self._lists)) or "none"
            raise KeyError(f"unknown list {list_name!r}; lists defined: {known}")
        if within < 0:
            raise ValueError(f"within must be >= 0, got {within}")
        terms = self._lists[list_name]
        anchors = self._anchors(list_name, words)
        if terms is None or anchors is None or not text:
            return ()
        data = _encode(text)
        found = list(_spans(terms, data))
        if not found:
            return ()
        anchor_spans = list(_spans(anchors, data))
        if not anchor_spans:
            return ()
        word_starts = [m.start() for m in _WORD.finditer(data)]

        def word_range(start: int, end: int) -> tuple[int, int]:
            return bisect_right(word_starts, start) - 1, bisect_left(word_starts, end) - 1

        # Anchors come in text order, so their first word indices are sorted; each term
        # looks only at the anchors that start within reach of it.
        anchor_ranges = [(s, e, *word_range(s, e)) for s, e in anchor_spans]
        anchor_firsts = [first for _, _, first, _ in anchor_ranges]
        reach = within + max(last - first for _, _, first, last in anchor_ranges)
        qualified: list[tuple[int, int]] = []
        for start, end in found:
            first, last = word_range(start, end)
            lo = bisect_left(anchor_firsts, first - reach)
            hi = bisect_right(anchor_firsts, last + within)
            for a_start, a_end, a_first, a_last in anchor_ranges[lo:hi]:
                if a_start >= start and a_end <= end:
                    continue  # the word is part of the term itself
                if max(0, a_first - last, first - a_last) <= within:
                    qualified.append((start, end))
                    break
        return tuple(_to_matches(text, data, qualified, terms.label))

    def _score_one(self, text: str) -> DetectorResult:
        if not text:
            return EMPTY
        data = _encode(text)
        # One pass over the text with every pattern at once; most traffic matches none.
        if self._any is not None and self._any.search(data) is None:
            return EMPTY
        spans: list[tuple[int, int, str]] = []
        for entry in self._compiled:
            spans.extend((s, e, entry.label) for s, e in _spans(entry, data))
        if not spans:
            return EMPTY
        spans.sort()
        to_char = _offset_converter(text, data, (o for s, e, _ in spans for o in (s, e)))
        matches = tuple(Match(to_char(s), to_char(e), label) for s, e, label in spans)
        return DetectorResult(scores={label: 1.0 for _, _, label in spans}, matches=matches)

    def _anchors(self, list_name: str, words: Sequence[str]) -> _Compiled | None:
        key = (list_name, tuple(words))
        with self._near_lock:
            if key in self._near_memo:
                return self._near_memo[key]
        anchors = _compile_terms(f"near words of list {list_name!r}", "near", key[1])
        with self._near_lock:
            if len(self._near_memo) >= _NEAR_MEMO_SIZE:
                self._near_memo.pop(next(iter(self._near_memo)))
            self._near_memo[key] = anchors
        return anchors


def _options() -> Any:
    options = re2.Options()
    options.max_mem = _MAX_MEM
    options.log_errors = False  # errors are raised as PatternError; RE2 would also print them
    return options


def _reason(exc: BaseException) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise PatternError(f"{kind} name must be a non-empty string, got {name!r}")


def _term_regex(where: str, term: object) -> str:
    if not isinstance(term, str):
        raise PatternError(f"{where}: term {term!r} is not a string")
    prefix = term.endswith("*")
    words = (term[:-1] if prefix else term).split()
    if not words:
        raise PatternError(f"{where}: term {term!r} has no words")
    body = _SPACE.join(re2.escape(word) for word in words)
    return body + (f"{_WORD_CHAR}*" if prefix else "")


def _compile_terms(where: str, label: str, terms: Sequence[str]) -> _Compiled | None:
    if isinstance(terms, str):
        raise PatternError(f"{where}: expected a list of terms, got the string {terms!r}")
    unique = dict.fromkeys(_term_regex(where, term) for term in terms)
    if not unique:
        return None
    # Longest first so that, where terms share a start, the longest one that still ends
    # on a word boundary wins (RE2's alternation is leftmost-first, like Perl's).
    alternation = "|".join(sorted(unique, key=len, reverse=True))
    try:
        regex = re2.compile(_TERM_TEMPLATE.format(alternation=alternation), _options())
    except re2.error as exc:
        raise PatternError(f"{where}: RE2 cannot compile the terms: {_reason(exc)}") from exc
    return _Compiled(label, regex, 1)


def _prefilter(compiled: Sequence[_Compiled]) -> Any | None:
    if len(compiled) < 2:
        return None
    if any("\\Q" in entry.regex.pattern for entry in compiled):
        # An unterminated \Q quotes to the end of its pattern, so wrapping it in a group
        # would quote the closing parenthesis and change what it matches.
        return None
    options = _options()
    options.never_capture = True
    alternation = "|".join(f"(?:{entry.regex.pattern})" for entry in compiled)
    try:
        return re2.compile(alternation, options)
    except re2.error:
        return None  # e.g. too large together; each pattern still runs on its own


def _spans(entry: _Compiled, data: bytes) -> Iterator[tuple[int, int]]:
    """Non-empty, non-overlapping byte spans of `entry` in the UTF-8 `data`."""
    regex, group = entry.regex, entry.group
    pos, end = 0, len(data)
    while pos <= end:
        found = regex.search(data, pos)
        if found is None:
            return
        start, stop = found.span(group)
        if stop > start:
            yield start, stop
        # Resume at the end of the term, not of the whole match: the consumed trailing
        # boundary may be the leading boundary of the next term.
        if stop > pos:
            pos = stop
        else:  # an empty match: step over one whole UTF-8 character
            pos += 1
            while pos < end and data[pos] & 0xC0 == 0x80:
                pos += 1


def _encode(text: str) -> bytes:
    # A lone surrogate (possible after JSON decoding) becomes "?": still one character,
    # so str offsets survive, and always valid UTF-8, so RE2 never splits a character.
    return text.encode("utf-8", "replace")


def _offset_converter(text: str, data: bytes, offsets: Iterable[int]) -> Callable[[int], int]:
    """Map UTF-8 byte offsets (at character boundaries) of `data` to str indices."""
    if len(data) == len(text):  # ASCII: byte offsets are str offsets
        return lambda offset: offset
    table: dict[int, int] = {}
    last_byte = last_char = 0
    for offset in sorted(set(offsets)):
        last_char += len(data[last_byte:offset].decode("utf-8"))
        last_byte = offset
        table[offset] = last_char
    return table.__getitem__


def _to_matches(
    text: str, data: bytes, spans: Sequence[tuple[int, int]], label: str
) -> Iterator[Match]:
    to_char = _offset_converter(text, data, (o for span in spans for o in span))
    for start, end in spans:
        yield Match(to_char(start), to_char(end), label)
