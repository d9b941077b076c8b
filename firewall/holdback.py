"""The hold-back: how much of a stream's newest text must wait for more to arrive.

Text may be released once no rule that acts mid-stream (an enforced `block` or `redact`
on responses) could still match across it. That is usually very little: the last
unfinished word, if it could begin a listed term; a secret's prefix (`sk-`, `AKIA`...)
and what follows it; a listed term that a `near` rule may still pair with a word coming
after it. Tag rules need nothing: they cannot change bytes already sent.

`HoldBack.for_policy` reads what the rules need once; `hold_from(text, released)` answers,
for each new event, from which offset the text must still be held.
"""

from __future__ import annotations

import bisect
import re
import re._constants as sre_constants
import re._parser as sre_parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from firewall.model import Action, Direction, Mode
from firewall.policy.compiler import MESSAGE_VARIABLES, CompiledRule, Policy

__all__ = ["HoldBack", "acts_mid_stream"]

_DETECT_TAIL_WORDS: Final = 8  # a phone number, an injected phrase: a few words at most
_PREFIX_LIMIT: Final = 64  # literal prefixes of one regex beyond which it counts as having none
_SENTENCE_END: Final = re.compile(r"[.!?\u3002\uff01\uff1f][\"')\]]*(?=\s)|\n")
_WORD: Final = re.compile(r"\S+")
_WORD_START: Final = re.compile(r"(?<!\S)\S|(?<!\w)\w")  # after a space, or a word after a non-word
_LISTS_IN_CEL: Final = re.compile(r"\b(?:mentions|near)\s*\(\s*['\"]([^'\"]+)['\"]")
_PATTERNS_IN_CEL: Final = re.compile(r"\bpattern\s*\(\s*['\"]([^'\"]+)['\"]")
_NEAR_IN_CEL: Final = re.compile(r"\bnear\s*\(\s*['\"]([^'\"]+)['\"]\s*,\s*\[[^\]]*\]\s*,\s*(\d+)")


def acts_mid_stream(rule: CompiledRule) -> bool:
    """Rules that can change a stream while it flows: enforced blocks and redactions."""
    return (Direction.RESPONSE in rule.directions and rule.mode is Mode.ENFORCE
            and rule.action in (Action.BLOCK, Action.REDACT))


@dataclass(frozen=True, slots=True)
class _Prefixes:
    """The literal prefixes of the regexes that act mid-stream (of one case mode): a match
    can only begin where one of them does."""

    width: dict[str, int]  # prefix -> how far past its start a match may still be incomplete
    partials: frozenset[str]  # proper prefixes of the prefixes: what the end of the text may be
    finder: re.Pattern[str]  # the prefixes as one alternation, longest first
    reach: int
    longest_partial: int
    ignorecase: bool

    @classmethod
    def build(cls, widths: dict[str, int], ignorecase: bool) -> _Prefixes:
        ordered = sorted(widths, key=len, reverse=True)
        partials = frozenset(p[:size] for p in widths for size in range(1, len(p)))
        return cls(widths, partials, re.compile("|".join(map(re.escape, ordered))), max(widths.values()),
                   max(map(len, partials), default=0), ignorecase)


@dataclass(frozen=True)
class HoldBack:
    cap: int  # never hold more than this many characters
    fixed: int | None = None  # stream.holdback: exactly the last N characters
    terms: tuple[str, ...] = ()  # list terms, lower-cased, spaces collapsed, sorted (prefix terms: the stem)
    longest_term: int = 0
    near: tuple[tuple[str, int], ...] = ()  # (list label, within words)
    regexes: tuple[_Prefixes, ...] = ()
    blind: int = 0  # regexes without a literal prefix: the last `blind` characters
    sentences: bool = False  # a model score or a condition over the text: whole sentences only
    look_back_words: int = 0  # released words a window must still show (a near anchor before a term)
    reach: int = 32  # released characters a window must still show (a match that began there)
    # Every rule that acts mid-stream needs a list term or a pattern to occur: a window
    # in which none occurs cannot make one fire.
    pattern_gated: bool = False
    tail_words: int = 0  # span detectors (`detect:`): the last words, where a match may still be growing

    @classmethod
    def for_policy(cls, policy: Policy, route: str | None = None) -> HoldBack:
        """What `policy` holds back in a stream of wire format `route` (None: any route;
        rules scoped to other routes are left out)."""
        spec = policy.stream
        if spec.holdback is not None:
            return cls(cap=spec.max_holdback, fixed=min(spec.holdback, spec.max_holdback))
        lists: set[str] = set()
        patterns: set[str] = set()
        near: dict[str, int] = {}
        sentences = False
        gated = True
        tail_words = 0
        for rule in policy.rules:
            if not acts_mid_stream(rule) or (route is not None and rule.routes is not None and route not in rule.routes):
                continue
            gated = gated and bool(rule.lists or rule.patterns or rule.near) and rule.condition is None \
                and not rule.thresholds
            lists.update(rule.lists)
            patterns.update(rule.patterns)
            if rule.detect:
                tail_words = _DETECT_TAIL_WORDS
            if rule.near is not None:
                near[rule.near.list] = max(near.get(rule.near.list, 0), rule.near.within)
            scored = rule.detectors - {entry.partition(":")[0] for entry in rule.detect}
            sentences = sentences or bool(rule.thresholds or scored)
            if rule.condition is not None:
                source = rule.condition.source
                lists.update(_LISTS_IN_CEL.findall(source))
                patterns.update(_PATTERNS_IN_CEL.findall(source))
                for name, within in _NEAR_IN_CEL.findall(source):
                    near[name] = max(near.get(name, 0), int(within))
                # A condition over the text itself may turn on any sentence.
                sentences = sentences or bool(rule.condition_variables & MESSAGE_VARIABLES)
        lists.update(near)
        terms = sorted({_collapse(term.rstrip("*").lower()) for name in lists for term in policy.spec.lists.get(name, [])})
        widths: dict[bool, dict[str, int]] = {False: {}, True: {}}
        blind = 0
        for name in sorted(patterns):
            found = _regex(policy.spec.patterns[name], spec.max_holdback)
            if isinstance(found, int):
                blind = max(blind, found)
                continue
            prefixes, width, ignorecase = found
            for prefix in prefixes:
                widths[ignorecase][prefix] = max(width, widths[ignorecase].get(prefix, 0))
        regexes = [_Prefixes.build(found, ignorecase) for ignorecase, found in widths.items() if found]
        return cls(
            cap=spec.max_holdback,
            terms=tuple(terms),
            longest_term=max(map(len, terms), default=0),
            near=tuple(sorted((f"list:{name}", within) for name, within in near.items())),
            regexes=tuple(regexes),
            blind=min(blind, spec.max_holdback),
            sentences=sentences,
            look_back_words=max(near.values(), default=0),
            reach=max(max(map(len, terms), default=0), min(blind, spec.max_holdback),
                      *(r.reach for r in regexes), 32),
            pattern_gated=gated,
            tail_words=tail_words,
        )

    @property
    def needs_list_matches(self) -> bool:
        return bool(self.near)

    def hold_from(self, text: str, released: int, list_matches: Iterable[tuple[int, int, str]] = ()) -> int:
        """The offset from which `text` must still be held (never before `released`).
        `list_matches` are (start, end, label) of list terms in the unreleased text."""
        n = len(text)
        if self.fixed is not None:
            return max(released, n - self.fixed)
        point = n - self.blind
        if self.terms:
            point = min(point, self._term_start(text, released))
        for regex in self.regexes:
            point = min(point, _regex_start(regex, text, released))
        for start, end, label in list_matches:
            within = next((w for name, w in self.near if name == label), None)
            if within is not None and start < point and _words_after(text, end, within) < within:
                point = start  # a term waits for an anchor that may still follow it
        if self.sentences:
            ends = [m.end() for m in _SENTENCE_END.finditer(text, released)]
            point = min(point, ends[-1] if ends else released)
        if self.tail_words:
            starts = [m.start() for m in _WORD.finditer(text, max(released, n - 64 * self.tail_words))]
            point = min(point, starts[-self.tail_words] if len(starts) >= self.tail_words else released)
        return max(point, released)

    def window_start(self, text: str, released: int) -> int:
        """Where the text to inspect begins: enough released text for a match to look back
        (a `near` anchor up to `within` words before a term, a match that began there).
        Words are counted as at most 48 characters each."""
        return max(0, released - max(self.reach, self.fixed or 0, 48 * self.look_back_words))

    def _term_start(self, text: str, released: int) -> int:
        """The first word start in the tail from which the rest of the text could still
        grow into a listed term."""
        n = len(text)
        for found in _WORD_START.finditer(text, max(released, n - self.longest_term)):
            tail = _collapse(text[found.start():].lower())
            if tail and _is_proper_prefix(self.terms, tail):
                return found.start()
        return n


def _collapse(text: str) -> str:
    return " ".join(text.split()) + (" " if text[-1:].isspace() else "")


def _is_proper_prefix(terms: tuple[str, ...], tail: str) -> bool:
    """Whether some term is longer than `tail` and starts with it."""
    index = bisect.bisect_left(terms, tail)
    while index < len(terms) and terms[index].startswith(tail):
        if terms[index] != tail:
            return True
        index += 1
    return False


def _words_after(text: str, position: int, limit: int) -> int:
    count = 0
    for _ in _WORD.finditer(text, position):
        count += 1
        if count >= limit:
            break
    return count


def _regex_start(prefixes: _Prefixes, text: str, released: int) -> int:
    n = len(text)
    low = max(released, n - prefixes.reach)
    haystack = text[low:].lower() if prefixes.ignorecase else text[low:]
    point = n
    for found in prefixes.finder.finditer(haystack):
        if n - (low + found.start()) < prefixes.width[found.group()]:
            point = low + found.start()  # a match may be under way from here
            break
    for size in range(min(prefixes.longest_partial, n - released), 0, -1):
        tail = text[n - size:]
        if (tail.lower() if prefixes.ignorecase else tail) in prefixes.partials:
            return min(point, n - size)  # the end of the text may begin a prefix
    return point


def _regex(pattern: str, cap: int) -> tuple[list[str], int, bool] | int:
    """A regex's literal prefixes, how far past its start a match may still be incomplete
    (the longest match, or the shortest for an unbounded regex: a longer match is held as
    long as it reaches the end of the text), and whether it ignores case; or, for a
    regex with no literal prefix, the number of characters to hold."""
    try:
        parsed = sre_parse.parse(pattern)
        low, high = parsed.getwidth()
    except Exception:  # noqa: BLE001 - RE2 syntax Python cannot read: hold the most we may
        return cap
    width = high if high <= cap else max(low, 1)
    ignorecase = bool(parsed.state.flags & re.IGNORECASE)
    prefixes, _ = _literal_prefixes(list(parsed))
    if not prefixes or min(map(len, prefixes)) < 2:
        return width
    return sorted({p.lower() if ignorecase else p for p in prefixes}), width, ignorecase


def _literal_prefixes(items: list[tuple[Any, Any]]) -> tuple[list[str] | None, bool]:
    """The literal strings every match of `items` starts with, and whether `items` was
    literal throughout (so what follows extends the prefixes)."""
    out = [""]
    for op, av in items:
        if op is sre_constants.AT:
            continue  # \b and anchors match no characters
        if op is sre_constants.LITERAL:
            out = [p + chr(av) for p in out]
        elif op is sre_constants.IN and len(av) <= 8 and all(o is sre_constants.LITERAL for o, _ in av):
            out = [p + chr(v) for p in out for _, v in av]
        elif op is sre_constants.SUBPATTERN or op is sre_constants.BRANCH:
            alternatives = [list(av[-1])] if op is sre_constants.SUBPATTERN else [list(a) for a in av[1]]
            results = [_literal_prefixes(a) for a in alternatives]
            if any(r[0] is None for r in results):
                return (out if out != [""] else None), False
            out = [p + s for p in out for r in results for s in r[0] or [""]]
            if not all(complete for _, complete in results):
                return out, False
        else:
            return (out if out != [""] else None), False
        if len(out) > _PREFIX_LIMIT:
            return None, False
    return out, True
