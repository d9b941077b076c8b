"""Text normalisation against evasion, with every character mapped back to the original.

Detectors scan `normalize(text).text` (and each of its `views`); whatever they find is
mapped back with `to_original` so that redaction hits the characters the sender wrote.
The steps, in order:

1. Per character: invisible and formatting characters are removed (Unicode Cf: zero-width
   space and joiners, bidi controls, soft hyphen, BOM; variation selectors U+FE00-FE0F
   and U+E0100-E01EF; tag characters U+E0000-E007F; Hangul fillers U+115F, U+1160,
   U+3164, U+FFA0), then NFKC (fullwidth and mathematical letters become ASCII), then
   accents: a letter whose NFKD decomposition is an ASCII letter plus generic diacritics
   (the Combining Diacritical Marks blocks) loses them ("mürdér" -> "murder"), and a
   separate combining diacritic is removed wherever it stands ("Zalgo" text). Accented
   letters of other scripts (Russian "й", Greek "ά"), symbols ("≠") and the marks other
   scripts spell with (Devanagari vowel signs, Arabic harakat) stay. A stripped combining
   mark counts as part of the character before it, so redacting that character removes
   the mark too.
   Small capitals and enclosed/regional-indicator letters fold to ASCII letters.
2. Confusables (a hand-written subset of UTS #39): Cyrillic and Greek look-alikes fold to
   Latin only in a word that already holds a Latin letter ("kіll" with a Cyrillic "і"),
   or in a word made only of look-alikes when most letters of the whole text are Latin
   ("кіӏӏ" inside English prose). Russian or Greek prose is left alone.
3. Letters separated by spaces or punctuation are joined: at least 3 single characters
   (letters or digits of Latin, Greek, Cyrillic, Armenian, or @/$; not CJK) in a row, with the same separator (1-3 characters) between each, at least 2 of them
   letters and no fewer letters than digits ("m u r d e r", "k.i.l.l", "m-u-r-d-e-r").
4. Leetspeak folds (0->o, 1->i or l, 3->e, 4->a, 5->s, 7->t, 8->b, 9->g, @->a, $->s)
   inside a token of letters and those characters only, and only when one of them sits
   between letters ("murd3r", "k1ll") or a token starts with @/$ before a letter
   ("$tab"). Numbers ("2024", "3.5"), ordinals and units ("3rd", "5km"), versions and
   hashes with other digits ("mp3", "sha256", "b2b") and e-mail addresses are left alone.
   "1" becomes "l" after an "i" or "l" ("ki1l"), "i" otherwise. Tokens longer than 24
   characters (identifiers, keys, encoded payloads) and digits only trailing a word
   ("ki11", "covid19") are left alone.

Encoded payloads become `views`: base64 / base64url and base32 (at least 16 characters),
hex (at least 8 bytes, plain, "\\x41" escapes, or bytes separated by spaces or colons),
URL percent-encoding, quoted-printable, ASCII smuggled in tag characters, and ROT13 of the
whole text. A payload becomes a view only when it decodes to mostly printable UTF-8 text
with letters in it. ROT13 is only guessed: the whole text becomes a view when, after
rotation, at least 2 words and 20% of words are common English words and there are more
such words than before rotation. Each view is normalised again, decoding further payloads
down to `max_depth` levels, and `max_views` bounds the views of the whole tree.

The steps run only where a cheap check finds something for them, so plain ASCII prose
costs a few microseconds and comes back as itself, with no views.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

import re2

__all__ = ["Normalized", "normalize"]


@dataclass(frozen=True, slots=True)
class Normalized:
    """A text as detectors should see it, with the way back to the original.

    For a view, `original` is the decoded payload and `text` its normalised form.
    """

    original: str
    text: str
    views: tuple[Normalized, ...] = ()
    # Per character of `text`: the span [start, end) of the top-level original that
    # produced it. None when `text` is `original` unchanged.
    _starts: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    _ends: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    # For a view: the span of the encoded payload in the top-level original.
    _payload: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Offsets [start, end) in `text` -> the smallest span of `original` that produced them.

        For a view, offsets map to the span of the ENCODED payload in the top-level original
        text. An empty span maps to an empty span at the matching position.
        """
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the normalised text of length {len(self.text)}")
        if self._payload is not None:
            return self._payload
        if self._starts is None or self._ends is None:
            return start, end
        if start < end:
            return self._starts[start], self._ends[end - 1]
        if start < len(self.text):
            return self._starts[start], self._starts[start]
        position = self._ends[-1] if self._ends else 0
        return position, position


def normalize(text: str, *, max_depth: int = 2, max_views: int = 8) -> Normalized:
    """Normalise `text` for detection; decode embedded payloads into views (see module doc)."""
    if max_depth < 0 or max_views < 0:
        raise ValueError(f"max_depth and max_views must be >= 0, got {max_depth}, {max_views}")
    # A lone surrogate (a JSON "\\ud800" escape) cannot be encoded for RE2; one
    # replacement character in its place keeps every offset.
    return _normalize(_LONE_SURROGATE.sub("\ufffd", text), max_depth, [max_views], None)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# --- the working text: characters with their spans in the top-level original ---------


@dataclass(slots=True)
class _Buf:
    text: str
    starts: list[int] | None  # None: identity map (text is still the original)
    ends: list[int] | None

    def spans(self) -> tuple[list[int], list[int]]:
        if self.starts is None or self.ends is None:
            n = len(self.text)
            self.starts, self.ends = list(range(n)), list(range(1, n + 1))
        return self.starts, self.ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def _normalize(original: str, depth: int, budget: list[int], payload: tuple[int, int] | None) -> Normalized:
    buf = _fold_chars(original)
    if not buf.text.isascii():
        _fold_confusables(buf)
    # The common case is prose with nothing for steps 3-4 or the decoders to do.
    busy = _PREFILTER.search(buf.text) is not None
    views: tuple[Normalized, ...] = ()
    if depth > 0 and budget[0] > 0:
        views = _decode_views(original, buf, depth, budget, payload, rot13_only=not busy)
    if busy:
        if _SPACED.search(buf.text):
            _join_spaced(buf)
        if _LEET_HINT.search(buf.text):
            _fold_leet(buf)
    if buf.starts is None:
        return Normalized(original, buf.text, views, _payload=payload)
    return Normalized(original, buf.text, views, tuple(buf.starts), tuple(buf.ends or ()), payload)


# One RE2 scan (a DFA: linear, and fast on short texts) that any text needing more than
# ROT13 and tag decoding matches: a letter next to a leet character, a single character
# followed by a separator and another single character, a 16-character run of
# base64/base32/hex, or an escape.
_PREFILTER = re2.compile(
    r"[A-Za-z][0-9@$]|[0-9@$][A-Za-z]"
    r"|(?:^|[^\pL\pN@$])[\pL\pN@$][^\pL\pN@$]{1,3}[\pL\pN@$](?:[^\pL\pN@$]|$)"
    r"|[A-Za-z0-9+/_-]{16}|%[0-9A-Fa-f]{2}|=[0-9A-F]{2}|=\r?\n|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}"
    r"|[0-9a-fA-F]{2}[ :][0-9a-fA-F]{2}[ :][0-9a-fA-F]{2}"
)


# --- step 1: invisibles, NFKC, diacritics ---------------------------------------------

_REMOVED_RANGES = (
    (0xFE00, 0xFE0F),  # variation selectors
    (0xE0100, 0xE01EF),  # variation selectors supplement
    (0xE0000, 0xE007F),  # tag characters (also Cf; listed so the intent is explicit)
    (0x180B, 0x180F),  # Mongolian free variation selectors
)
_HANGUL_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")
# Generic diacritics: what accent and "Zalgo" evasion stack on letters.
_DIACRITIC_RANGES = (
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
_SMALL_CAPS = dict(
    zip(
        "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢıɑɡɩ",
        "abcdefghijklmnoprstuvwyziagi",
        strict=True,
    )
)
_SPECIAL = {"\u2800": " "}  # braille blank: an "invisible" space


def _in_ranges(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


def _is_removed(ch: str) -> bool:
    return ch in _HANGUL_FILLERS or unicodedata.category(ch) == "Cf" or _in_ranges(ord(ch), _REMOVED_RANGES)


def _is_diacritic(ch: str) -> bool:
    return _in_ranges(ord(ch), _DIACRITIC_RANGES)


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """One non-ASCII character -> its folded form ("" when it is removed)."""
    if _is_removed(ch) or _is_diacritic(ch):
        return ""
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    code = ord(ch)
    if 0x1F1E6 <= code <= 0x1F1FF:  # regional indicators
        return chr(code - 0x1F1E6 + ord("A"))
    if 0x1F150 <= code <= 0x1F169 or 0x1F170 <= code <= 0x1F189:  # negative circled/squared
        return chr((code - 0x1F150) % 0x20 + ord("A"))
    folded = unicodedata.normalize("NFKC", ch)
    decomposed = unicodedata.normalize("NFKD", folded)
    # Only Latin letters lose their accents: "é" -> "e", but Russian "й" and Greek "ά"
    # stay, and so does "≠" (an "=" with an overlay).
    if decomposed[0].isascii() and decomposed[0].isalpha() and any(_is_diacritic(c) for c in decomposed):
        folded = "".join(c for c in decomposed if not _is_diacritic(c))
    # NFKC maps some characters onto removed ones (U+3164 -> U+1160).
    folded = "".join(_SMALL_CAPS.get(c, c) for c in folded if not _is_removed(c))
    return folded


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# In a text that is already NFKC, only these characters can fold (a test checks this
# against every code point): format characters (Cf), the other removed characters,
# combining diacritics, accented Latin letters, small capitals, enclosed letters, the
# braille blank.
_MAY_FOLD = re.compile(
    "["
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f"
    "\ufe00-\ufe0f\U000e0100-\U000e01ef\u115f\u1160\u3164\uffa0"
    "\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
    "\u00c0-\u024f\u1e00-\u1eff" + "".join(_SMALL_CAPS) + "\U0001f100-\U0001f1ff\u2800"
    "]"
)


def _fold_chars(original: str) -> _Buf:
    if original.isascii():
        return _Buf(original, None, None)
    candidates = (_MAY_FOLD if unicodedata.is_normalized("NFKC", original) else _NON_ASCII).finditer(original)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    changed = False
    position = 0  # original[:position] is done; ASCII stretches are copied whole
    for m in candidates:
        i = m.start()
        ch = m.group()
        folded = _fold_char(ch)
        if folded == ch:
            continue
        changed = True
        out.append(original[position:i])
        starts.extend(range(position, i))
        ends.extend(range(position + 1, i + 1))
        position = i + 1
        if not folded:
            if ends and ends[-1] == i and _is_diacritic(ch):
                ends[-1] = i + 1  # a stripped mark belongs to its base character
            continue
        out.append(folded)
        starts.extend([i] * len(folded))
        ends.extend([i + 1] * len(folded))
    if not changed:
        return _Buf(original, None, None)
    out.append(original[position:])
    starts.extend(range(position, len(original)))
    ends.extend(range(position + 1, len(original) + 1))
    return _Buf("".join(out), starts, ends)


# --- step 2: confusables ----------------------------------------------------------------

_CONFUSABLES = dict(
    zip(
        # Cyrillic lower, Cyrillic upper, Greek lower, Greek upper, Armenian
        "аеорсухіјѕкмнтвԁӏһԛԝүьѡАВЕЅІЈКМНОРСТУХԌοαειηκνρτυχωγβΑΒΕΖΗΙΚΜΝΟΡΤΥΧօսհ",
        "aeopcyxijskmhtbdlhqwybwABESIJKMHOPCTYXGoaeinkvptuxwybABEZHIKMNOPTYXouh",
        strict=True,
    )
)
_WORD = re.compile(r"[^\W\d_]+")
_LETTER = re.compile(r"[^\W\d_]")
# Latin letters that step 1 left non-ASCII (ø, ß, æ) are few; ASCII stands in for Latin.
_ASCII_LETTER = re.compile(r"[A-Za-z]")
_CONFUSABLE = re.compile("[" + "".join(_CONFUSABLES) + "]")
_ONLY_CONFUSABLES = re.compile("[" + "".join(_CONFUSABLES) + "]+")


def _fold_confusables(buf: _Buf) -> None:
    text = buf.text
    if _CONFUSABLE.search(text) is None:
        return
    latin_letters = len(_ASCII_LETTER.findall(text))
    if latin_letters == 0:
        return  # no word mixes scripts, and the text is not mostly Latin
    mostly_latin: bool | None = None
    chars: list[str] | None = None
    for m in _WORD.finditer(text):
        word = m.group()
        if _CONFUSABLE.search(word) is None:
            continue
        if _ASCII_LETTER.search(word) is None:
            if _ONLY_CONFUSABLES.fullmatch(word) is None:
                continue
            if mostly_latin is None:
                mostly_latin = latin_letters * 2 > len(_LETTER.findall(text))
            if not mostly_latin:
                continue
        if chars is None:
            chars = list(text)
        for i in range(m.start(), m.end()):
            chars[i] = _CONFUSABLES.get(chars[i], chars[i])
    if chars is not None:
        buf.spans()  # freeze the identity map before the text stops being the original
        buf.text = "".join(chars)


# --- step 3: spaced-out letters ---------------------------------------------------------

# An element is a letter or digit of a script written with spaces between words (Latin,
# Greek, Cyrillic, Armenian: below U+0530), or a leet symbol. CJK characters are words of
# their own, so "我，你，他" is left alone.
_ELEMENT = r"(?:[A-Za-z0-9@$]|(?![\W\d_])[\u0080-\u052f])"
_NOT_ELEMENT_BEFORE = r"(?<![A-Za-z0-9@$])(?<![\u00aa-\u052f])"
_NOT_ELEMENT_AFTER = r"(?![A-Za-z0-9@$])(?![\u00aa-\u052f])"
_SPACED = re.compile(
    rf"{_NOT_ELEMENT_BEFORE}{_ELEMENT}((?:[^\w@$]|_){{1,3}}){_ELEMENT}(?:\1{_ELEMENT})+"
    rf"{_NOT_ELEMENT_AFTER}"
)


def _join_spaced(buf: _Buf) -> None:
    drop: list[tuple[int, int]] = []
    for m in _SPACED.finditer(buf.text):
        run = m.group()
        sep = m.group(1)
        elements = run[:: len(sep) + 1]
        letters = sum(c.isalpha() for c in elements)
        if letters < 2 or letters * 2 < len(elements):
            continue
        step = len(sep) + 1
        for k in range(m.start() + 1, m.end() - 1, step):
            drop.append((k, k + len(sep)))
    if drop:
        _delete(buf, drop)


def _delete(buf: _Buf, spans: list[tuple[int, int]]) -> None:
    starts, ends = buf.spans()
    keep_text: list[str] = []
    keep_starts: list[int] = []
    keep_ends: list[int] = []
    position = 0
    for start, end in spans:
        keep_text.append(buf.text[position:start])
        keep_starts.extend(starts[position:start])
        keep_ends.extend(ends[position:start])
        position = end
    keep_text.append(buf.text[position:])
    keep_starts.extend(starts[position:])
    keep_ends.extend(ends[position:])
    buf.text, buf.starts, buf.ends = "".join(keep_text), keep_starts, keep_ends


# --- step 4: leetspeak ------------------------------------------------------------------

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
_LEET.update({"@": "a", "$": "s"})
# Starts with a character class, which lets `re` skip ahead quickly.
_LEET_HINT = re.compile(r"[0-9@$](?:(?<=[A-Za-z].)|(?=[A-Za-z]))")
# Only tokens with a digit, @ or $ in them can be leetspeak: matching just those leaves
# ordinary words to the regex engine instead of a Python loop (the whole run is matched,
# from its first character, whenever it holds one).
_TOKEN = re.compile(r"[A-Za-z0-9@$]*[0-9@$][A-Za-z0-9@$]*")
_INNER_LEET = re.compile(r"[A-Za-z][0-9@$]+[A-Za-z]|^[@$]+[A-Za-z]")
_MAX_LEET_TOKEN = 24
_EMAIL_TAIL = re.compile(r"\.[A-Za-z0-9]")


def _fold_leet(buf: _Buf) -> None:
    text = buf.text
    chars: list[str] | None = None
    for m in _TOKEN.finditer(text):
        token = m.group()
        if len(token) > _MAX_LEET_TOKEN or any(c.isdigit() and c not in _LEET for c in token) or not _INNER_LEET.search(token):
            continue
        if "@" in token and _EMAIL_TAIL.match(text, m.end()):
            continue
        if chars is None:
            chars = list(text)
        upper = token.upper() == token
        previous = ""
        for offset, c in enumerate(token):
            if c in _LEET:
                c = "l" if c == "1" and previous in ("i", "l") else _LEET[c]
                chars[m.start() + offset] = c.upper() if upper else c
            previous = c.lower()
    if chars is not None:
        buf.spans()
        buf.text = "".join(chars)


# --- views: decoded payloads ------------------------------------------------------------

_B64 = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/_=-])")
_B32 = re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{16,}={0,6}(?![A-Za-z0-9=])")
_HEX = re.compile(
    r"(?<![0-9A-Za-z])(?:0x)?(?:[0-9a-fA-F]{2}){8,}(?![0-9A-Za-z])"
    r"|(?:\\x[0-9a-fA-F]{2}){4,}"
    r"|(?<![0-9A-Za-z:])[0-9a-fA-F]{2}(?:([ :])[0-9a-fA-F]{2})(?:\1[0-9a-fA-F]{2}){6,}(?![0-9A-Za-z:])"
)
# URL and quoted-printable payloads are runs of space-separated tokens that each hold an
# escape; found token by token (not with one regex) so that the cost stays linear.
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_QP_ESCAPE = re.compile(r"=[0-9A-F]{2}")
_QP_TOKEN = re.compile(r"(?:=\r?\n|\S)+")
_URL_TOKEN = re.compile(r"\S+")
_BLANKS = re.compile(r"[ \t]+")
_TAGS = re.compile("[\U000e0020-\U000e007e]{4,}")
_ENCODED_HINT = re.compile(
    r"[A-Za-z0-9+/_-]{16,}|%[0-9A-Fa-f]{2}|=[0-9A-F]{2}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}"
    r"|[0-9a-fA-F]{2}[ :][0-9a-fA-F]{2}[ :][0-9a-fA-F]{2}"
)
_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_COMMON_WORDS = frozenset(
    """the be to of and in that have it for not on with he as you do at this but his by
    from they we say her she or an will my one all would there their what so up out if
    about who get which go me when make can like time no just him know take people into
    year your good some could them see other than then now look only come its over think
    also back after use two how our work first well way even new want because any these
    give day most us is are was were been has had did does am how why where should must
    please tell write explain step steps made need help
    here very much more many such each every those through down off again never always
    something someone nothing anything everything""".split()
)


def _decode_views(
    original: str,
    buf: _Buf,
    depth: int,
    budget: list[int],
    payload: tuple[int, int] | None,
    *,
    rot13_only: bool,
) -> tuple[Normalized, ...]:
    found: list[tuple[tuple[int, int], str]] = []
    seen: set[str] = set()

    def add(span: tuple[int, int], decoded: str | None) -> None:
        if decoded is None or decoded in seen or not _looks_like_text(decoded):
            return
        seen.add(decoded)
        found.append((span, decoded))

    if not original.isascii() and _TAGS.search(original):
        for m in _TAGS.finditer(original):
            add(m.span(), "".join(chr(ord(c) - 0xE0000) for c in m.group()))
    clean = buf.text
    if not rot13_only and _ENCODED_HINT.search(clean):
        for regex, decode in _DECODERS:
            for m in regex.finditer(clean):
                add(buf.span(*m.span()), decode(m.group()))
        for token, escape, decode_run in (
            (_URL_TOKEN, _URL_ESCAPE, _decode_url),
            (_QP_TOKEN, _QP_ESCAPE, _decode_qp),
        ):
            for start, end in _escaped_runs(clean, token, escape):
                add(buf.span(start, end), decode_run(clean[start:end]))
    rotated = _rot13_view(clean)
    if rotated is not None:
        add((0, len(original)), rotated)

    views: list[Normalized] = []
    for span, decoded in found:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        views.append(_normalize(decoded, depth - 1, budget, payload or span))
    return tuple(views)


def _looks_like_text(decoded: str) -> bool:
    if len(decoded) < 3:
        return False
    printable = sum(c.isprintable() or c in "\t\r\n" for c in decoded)
    letters = sum(c.isalpha() for c in decoded)
    alnum = sum(c.isalnum() or c.isspace() for c in decoded)
    return printable >= 0.95 * len(decoded) and letters >= 3 and alnum >= 0.6 * len(decoded)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_base64(s: str) -> str | None:
    body = s.rstrip("=")
    if len(body) % 4 == 1 or not (any(c.isupper() for c in body) and any(c.islower() for c in body)):
        return None
    if "-" in body or "_" in body:
        if "+" in body or "/" in body:
            return None
        body = body.replace("-", "+").replace("_", "/")
    try:
        return _utf8(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
    except binascii.Error:
        return None


def _decode_base32(s: str) -> str | None:
    body = s.rstrip("=")
    if len(body) % 8 in (1, 3, 6):
        return None
    try:
        return _utf8(base64.b32decode(body + "=" * (-len(body) % 8)))
    except binascii.Error:
        return None


def _decode_hex(s: str) -> str | None:
    digits = s.replace("\\x", "").replace(" ", "").replace(":", "")
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    try:
        return _utf8(bytes.fromhex(digits))
    except ValueError:
        return None


def _decode_url(s: str) -> str | None:
    try:
        decoded = (unquote_plus if " " not in s else unquote)(s, errors="strict")
    except UnicodeDecodeError:
        return None
    return decoded if decoded != s else None


def _decode_qp(s: str) -> str | None:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        return None
    decoded = _utf8(quopri.decodestring(raw))
    return decoded if decoded != s else None


_UNICODE_ESCAPES = re.compile(r"(?:\\u[0-9a-fA-F]{4}){4,}")
_ONE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _decode_unicode_escapes(s: str) -> str | None:
    """JSON / JavaScript escapes ("\\u0049\\u0067..."), surrogate pairs joined."""
    chars = _ONE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), s)
    try:
        return chars.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None


_DECODERS: tuple[tuple[re.Pattern[str], Callable[[str], str | None]], ...] = (
    (_B64, _decode_base64),
    (_B32, _decode_base32),
    (_HEX, _decode_hex),
    (_UNICODE_ESCAPES, _decode_unicode_escapes),
)


def _escaped_runs(text: str, token: re.Pattern[str], escape: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    start = end = -1
    for m in token.finditer(text):
        if escape.search(m.group()) is None:
            continue
        if end >= 0 and _BLANKS.fullmatch(text, end, m.start()):
            end = m.end()
            continue
        if end >= 0:
            yield start, end
        start, end = m.span()
    if end >= 0:
        yield start, end


def _common_words(text: str) -> tuple[int, int]:
    words = _ASCII_WORD.findall(text)
    return sum(w.lower() in _COMMON_WORDS for w in words), len(words)


def _rot13_view(text: str) -> str | None:
    low = text.lower()
    # e, t, a, o lead English letter frequencies; ROT13 turns them into r, g, n, b.
    if low.count("e") + low.count("t") + low.count("a") + low.count("o") >= (
        low.count("r") + low.count("g") + low.count("n") + low.count("b")
    ):
        return None
    before, total = _common_words(text)
    rotated = text.translate(_ROT13)
    after, _ = _common_words(rotated)
    if after >= 2 and after * 5 >= total and after > before:
        return rotated
    return None
