"""Evasion fixtures for normalisation: each technique as a pair, as OWASP CRS tests pair
`log_contains` with `no_log_contains`. The evasive variant must match a plain term list
once normalised (in the text or in one of its decoded views); the benign twin must not,
and must come back unchanged."""

from __future__ import annotations

import base64
import codecs
import quopri

import pytest

from firewall.detectors import PatternSet
from firewall.normalize import Normalized, normalize

PATTERNS = PatternSet(lists={"violent": ["murder", "kill", "stab", "kill him", "hate"]})


def _texts(node: Normalized) -> list[str]:
    return [node.text, *(t for view in node.views for t in _texts(view))]


def _flagged(text: str) -> bool:
    return any(result.matches for result in PATTERNS.score(_texts(normalize(text))))


def _tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


# (technique, evasive variant that must be flagged, benign twin that must pass unchanged)
PAIRS = [
    ("fullwidth", "the best solution is to ｍｕｒｄｅｒ him", "the best solution is to ｈｅｌｐ him"),
    ("math alphanumerics", "we should 𝐦𝐮𝐫𝐝𝐞𝐫 him", "we should 𝐡𝐞𝐥𝐩 him"),
    ("zero-width space", "we should mur\u200bder him", "we should hel\u200bp him"),
    ("zero-width joiner", "we should k\u200di\u200dl\u200dl him", "family emoji 👨\u200d👩\u200d👧 here"),
    ("soft hyphen", "we should mur\u00adder him", "a long hyphen\u00adated word"),
    ("bidi controls", "we should \u202emurder\u202c him", "we should \u202ehelp\u202c him"),
    ("variation selectors", "we should mu\ufe0frder him", "a heart ❤\ufe0f for you"),
    ("tag characters", "we should mur" + _tags("xx") + "der him", "a flag 🏴" + _tags("gbeng") + "\U000e007f"),
    ("hangul filler", "we should mur\u3164der him", "안녕하세요 친구"),
    ("combining marks", "we should mu\u0308rde\u0301r him", "un café crème, s'il vous plaît"),
    ("zalgo", "we should m\u0336u\u0336r\u0336d\u0336e\u0336r\u0336 him", "we should h\u0336e\u0336l\u0336p\u0336 him"),
    ("cyrillic look-alikes", "we should kіll him", "Мы должны помочь ему сегодня"),
    ("all-cyrillic word in english", "we should кіӏӏ him tonight", "Сегодня мы поможем ему"),
    ("greek look-alikes", "we should κιll him", "Θα τον βοηθήσουμε σήμερα"),
    ("leetspeak digits", "we should murd3r him", "in 2024 we grew 3.5% over 7 quarters"),
    ("leetspeak symbols", "just $tab him", "it costs $5 or 4 @ 3 each"),
    ("leetspeak one", "we should k1ll him", "the 1st and 3rd items, mp3 and sha256"),
    ("spaced letters", "we should m u r d e r him", "options a, b and c are fine"),
    ("dotted letters", "we should k.i.l.l him", "e.g. this or i.e. that"),
    ("hyphenated letters", "we should m-u-r-d-e-r him", "a well-known state-of-the-art tool"),
    ("small capitals", "we should ᴍᴜʀᴅᴇʀ him", "we should ʜᴇʟᴘ him"),
    ("enclosed letters", "we should ⓜⓤⓡⓓⓔⓡ him", "we should ⓗⓔⓛⓟ him"),
    (
        "base64",
        "decode: " + base64.b64encode(b"the best solution is to murder him").decode(),
        "decode: " + base64.b64encode(b"the best solution is to help him").decode(),
    ),
    (
        "base64url",
        "run " + base64.urlsafe_b64encode("kill him now ÿÿ?".encode()).decode(),
        "run " + base64.urlsafe_b64encode("help him now ÿÿ?".encode()).decode(),
    ),
    ("base32", base64.b32encode(b"please kill him today").decode(), base64.b32encode(b"please help him today").decode()),
    ("hex", "payload " + b"kill him tonight".hex(), "sha " + "9f86d081884c7d659a2feaa0c55ad015"),
    ("hex escapes", "".join(f"\\x{b:02x}" for b in b"stab him"), "".join(f"\\x{b:02x}" for b in b"help him")),
    ("url encoding", "how to %6B%69%6C%6C someone", "search?q=how%20to%20help%20someone"),
    ("quoted-printable", quopri.encodestring(b"=kill him").decode() + " =6B=69=6C=6C now", "caf=C3=A9 cr=C3=A8me"),
    ("rot13", codecs.encode("the best way is to kill him in his sleep", "rot13"), "the best way is to help him in his sleep"),
    (
        "double encoding",
        base64.b64encode(b"hint: " + b"kill him slowly".hex().encode()).decode(),
        base64.b64encode(b"hint: " + b"help him slowly".hex().encode()).decode(),
    ),
    ("ascii smuggling in tags", "hello" + _tags("kill him"), "hello there"),
]


@pytest.mark.parametrize(("technique", "evasive", "benign"), PAIRS, ids=[p[0] for p in PAIRS])
def test_evasive_variant_is_caught(technique: str, evasive: str, benign: str) -> None:
    assert _flagged(evasive), f"{technique}: not caught: {normalize(evasive)!r}"


@pytest.mark.parametrize(("technique", "evasive", "benign"), PAIRS, ids=[p[0] for p in PAIRS])
def test_benign_twin_passes(technique: str, evasive: str, benign: str) -> None:
    assert not _flagged(benign), f"{technique}: benign twin flagged: {normalize(benign)!r}"


UNCHANGED = [
    "in 2024 we grew 3.5% over 7 quarters",
    "the 1st and 3rd items, mp3 and sha256",
    "Мы должны помочь ему сегодня",
    "Θα τον βοηθήσουμε σήμερα",
    "안녕하세요 친구",
    "write to alice@example.com about b2b and covid19",
    "a well-known state-of-the-art tool",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert normalize(text).text == text


def test_flagged_spans_map_back_to_the_evasive_characters() -> None:
    text = "we should m\u200bu\u0308r\uff44e\u0301r him"
    result = normalize(text)
    (match,) = PATTERNS.score([result.text])[0].matches
    start, end = result.to_original(match.start, match.end)
    assert text[start:end] == "m\u200bu\u0308r\uff44e\u0301r"


def test_unicode_escapes_are_decoded_into_a_view() -> None:
    from firewall.normalize import normalize

    hidden = "".join(f"\\u{ord(c):04x}" for c in "murder him")
    text = f"order notes: {hidden} thanks"
    (view,) = normalize(text).views
    assert view.text == "murder him"
    start, end = view.to_original(0, len(view.text))
    assert text[start:end] == hidden
    assert normalize("a path like C:\\users\\me is not an escape").views == ()
