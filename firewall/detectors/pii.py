"""Personal data: emails, phone numbers, payment cards, IBANs, national ids, IP addresses.

Every kind is a loose RE2 candidate regex plus a validator in Python that checks what a
regex cannot: Luhn and card-network prefixes, the IBAN length table and mod-97 checksum,
the SSN area/group/serial rules, the NINO prefix rules, the DNI check letter, the INSEE
key, IP octet ranges. A candidate glued to a letter or digit ("v1.2.3.4", "x4111…",
"1.2.3.4.5") is not a match: it is part of something longer.

Labels (also the names `kinds` accepts): email, phone, card, iban, ssn, nino, dni,
insee, ipv4, ipv6. Scores are {label: 1.0} for every label found; matches do not
overlap (where two kinds claim the same characters, the earlier kind in `KINDS` wins:
an IBAN is not also a phone number). Offsets are str indices into the scored text.

Cost: an RE2 Set of every enabled kind's candidate regex runs first, in one pass, and
says which kinds have candidates; only those kinds' regexes run. A text with no
candidate at all costs that one pass (~1 µs for a paragraph).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from firewall.detectors.base import EMPTY, DetectorResult, reject_unknown_options, set_matches, without_overlaps

__all__ = ["KINDS", "PiiDetector", "build"]

# Validate a candidate span [start, end) of text; return the (possibly trimmed) span to
# report, or None to reject it.
_Validator = Callable[[str, int, int], "tuple[int, int] | None"]

_DIGITS = frozenset("0123456789")


def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _compile_set(patterns: Iterable[str]) -> Any:
    """One RE2 pass that tells which of `patterns` match somewhere, by index."""
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    candidates = re2.Set.SearchSet(options)
    for pattern in patterns:
        candidates.Add(pattern)
    candidates.Compile()
    return candidates


def _glued(text: str, start: int, end: int, joiners: str) -> bool:
    """Whether [start, end) continues a longer token on either side.

    A letter, digit or "_" next to the span glues it; so does a joiner ("." in an IP
    address, "-" in a number) with a letter or digit beyond it: "1.2.3.4" in
    "1.2.3.4.5" is glued, "10.0.0.1" in "ping 10.0.0.1." is not.
    """
    if start > 0:
        before = text[start - 1]
        if before.isalnum() or before == "_":
            return True
        if before in joiners and start > 1 and text[start - 2].isalnum():
            return True
    if end < len(text):
        after = text[end]
        if after.isalnum() or after == "_":
            return True
        if after in joiners and end + 1 < len(text) and text[end + 1].isalnum():
            return True
    return False


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch in _DIGITS)


# --- email -------------------------------------------------------------------------


def _email(text: str, start: int, end: int) -> tuple[int, int] | None:
    while text[start] == ".":  # "...john@x.org": the dots are punctuation, not address
        start += 1
    local, _, domain = text[start:end].partition("@")
    if not local or len(local) > 64 or local.endswith(".") or ".." in local:
        return None
    if any(label.startswith("-") or label.endswith("-") for label in domain.split(".")):
        return None
    return start, end


# --- phone -------------------------------------------------------------------------

_DATE = _compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
# "Order 0123 456 789", "invoice no. 555-123-4567", "#07700900123": numbers, not phones.
_NOT_A_PHONE_CONTEXT = _compile(
    r"(?i)(?:\b(?:order|invoice|ref|reference|tracking|ticket|case|po|sku|serial|"
    r"account|acct|iban|isbn|id)\.?\s*(?:#|no\.?|nr\.?|number|id)?|#)\s*[:#]?\s*$"
)


def _phone(text: str, start: int, end: int) -> tuple[int, int] | None:
    candidate = text[start:end]
    count = len(_digits(candidate))
    if not 8 <= count <= 15:
        return None
    if candidate[0] != "+":
        if _DATE.search(candidate) is not None:
            return None
        if candidate[0] == "0":
            # Trunk-prefix national formats ("020 7946 0958", "01 23 45 67 89"): one
            # kind of separator, so "01.02.2023 10:30" is not a phone number.
            if count < 9 or len({ch for ch in candidate if ch in " .-"}) > 1:
                return None
            if candidate.startswith("00") and candidate.isdigit():
                return None  # an unseparated "00…" run is a padded id, not a dial string
    # "1 85 05 78 006 084 36" holds "05 78 006 084 36": a phone number does not sit
    # inside a longer run of digit groups.
    if start > 1 and text[start - 1] in " .-" and text[start - 2].isdigit():
        return None
    if end + 1 < len(text) and text[end] in " .-" and text[end + 1].isdigit():
        return None
    if _NOT_A_PHONE_CONTEXT.search(text[max(0, start - 24) : start]) is not None:
        return None
    return start, end


# --- payment card -------------------------------------------------------------------


def _luhn(number: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(number)):
        digit = ord(ch) - 48
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_network_ok(number: str) -> bool:
    """IIN prefix and length sanity for Visa, Mastercard, Amex and Discover."""
    length = len(number)
    if number[0] == "4":
        return length in (13, 16, 19)  # Visa
    two, four, six = int(number[:2]), int(number[:4]), int(number[:6])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return length == 16  # Mastercard
    if two in (34, 37):
        return length == 15  # Amex
    if four == 6011 or two == 65 or 644 <= int(number[:3]) <= 649 or 622126 <= six <= 622925:
        return 16 <= length <= 19  # Discover
    return False


def _card(text: str, start: int, end: int) -> tuple[int, int] | None:
    # The candidate regex takes every digit group in a row, so "4111 1111 1111 1111 2025"
    # arrives whole; try it, then ever shorter runs of whole leading groups.
    candidate = text[start:end]
    cuts = [i for i in range(1, len(candidate)) if candidate[i] in " -"] + [len(candidate)]
    for cut in reversed(cuts):
        number = _digits(candidate[:cut])
        if len(number) < 13:
            break
        if len(number) <= 19 and _card_network_ok(number) and _luhn(number):
            if not _glued(text, start, start + cut, ".,-"):
                return start, start + cut
    return None


# --- IBAN ---------------------------------------------------------------------------

# Lengths per ISO 13616 registry (SWIFT IBAN registry) for the countries we check.
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27,
    "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26,
    "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24,
    "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29,
}  # fmt: skip


def _iban(text: str, start: int, end: int) -> tuple[int, int] | None:
    expected = _IBAN_LENGTH.get(text[start : start + 2])
    if expected is None:
        return None
    # The regex may run on into a following capitalised word ("… 7654 32 IN LONDON"):
    # keep exactly as many characters as the country's IBAN has.
    chars: list[str] = []
    stop = start
    for index in range(start, end):
        if text[index] != " ":
            chars.append(text[index])
            if len(chars) == expected:
                stop = index + 1
                break
    if len(chars) < expected or _glued(text, start, stop, ""):
        return None
    compact = "".join(chars)
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return (start, stop) if int(numeric) % 97 == 1 else None


# --- national ids -------------------------------------------------------------------


def _ssn(text: str, start: int, end: int) -> tuple[int, int] | None:
    number = _digits(text[start:end])
    area, group, serial = number[:3], number[3:5], number[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return None if _glued(text, start, end, ".,-") else (start, end)


_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _nino(text: str, start: int, end: int) -> tuple[int, int] | None:
    # HMRC: first letter not D F I Q U V; second not D F I O Q U V; some pairs unused.
    first, second = text[start], text[start + 1]
    if first in "DFIQUV" or second in "DFIOQUV" or text[start : start + 2] in _NINO_BAD_PREFIXES:
        return None
    return None if _glued(text, start, end, "") else (start, end)


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _dni(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Spanish DNI (8 digits + letter) and NIE (X/Y/Z + 7 digits + letter)."""
    compact = text[start:end].replace("-", "").replace(" ", "")
    body = "XYZ".find(compact[0])
    number = (str(body) + compact[1:-1]) if body >= 0 else compact[:-1]
    if _DNI_LETTERS[int(number) % 23] != compact[-1]:
        return None
    return None if _glued(text, start, end, ".,-") else (start, end)


def _insee(text: str, start: int, end: int) -> tuple[int, int] | None:
    """French NIR: sex, year, month, department (2A/2B for Corsica), commune, order, key."""
    compact = text[start:end].replace(" ", "").upper()
    month = int(compact[3:5])
    if month == 0 or 13 <= month <= 19:
        return None
    body = compact[:13]
    # Corsica: the key is computed with 2A as 19 and 2B as 18.
    body = body[:5] + {"2A": "19", "2B": "18"}.get(body[5:7], body[5:7]) + body[7:]
    if 97 - int(body) % 97 != int(compact[13:]):
        return None
    return None if _glued(text, start, end, ".,-") else (start, end)


# --- IP addresses -------------------------------------------------------------------

_VERSION_CONTEXT = _compile(r"(?i)\b(?:version|ver|v|release|build|rev)\.?\s*$")


def _ipv4(text: str, start: int, end: int) -> tuple[int, int] | None:
    for octet in text[start:end].split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None  # leading zeros: a version or dotted number, not an address
    if _glued(text, start, end, "."):
        return None
    if _VERSION_CONTEXT.search(text[max(0, start - 12) : start]) is not None:
        return None
    return start, end


def _ipv6(text: str, start: int, end: int) -> tuple[int, int] | None:
    candidate = text[start:end]
    if candidate.endswith(":") and not candidate.endswith("::"):
        end -= 1  # "at 2001:db8::1: it" — the colon is punctuation
        candidate = candidate[:-1]
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    # "::", "::1" and "a::b" (in code: "dead::beef") are valid but not worth flagging.
    groups = [group for group in candidate.split(":") if group]
    if len(groups) < 2 or not any(ch in _DIGITS for ch in candidate):
        return None
    return None if _glued(text, start, end, ":") else (start, end)


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    label: str
    candidate: str  # RE2 regex for candidates
    validate: _Validator


# In priority order: where two kinds claim the same characters, the earlier one wins.
_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "email",
        r"[\pL\pN._%+-]+@[\pL\pN-]+(?:\.[\pL\pN-]+)*\.\pL{2,}",
        _email,
    ),
    _Kind("iban", r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}", _iban),
    _Kind("card", r"\d(?:[ -]?\d){12,}", _card),
    _Kind(
        "insee",
        r"[12378] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}",
        _insee,
    ),
    _Kind("ssn", r"\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}", _ssn),
    _Kind("nino", r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]", _nino),
    _Kind("dni", r"(?:\d{8}|[XYZ]-?\d{7})-?[A-Z]", _dni),
    _Kind(
        "ipv6",
        r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?",
        _ipv6,
    ),
    _Kind("ipv4", r"\d{1,3}(?:\.\d{1,3}){3}", _ipv4),
    _Kind(
        "phone",
        # E.164 with optional grouping; NANP (US/CA) shapes; national formats with a
        # trunk "0" ("020 7946 0958", "01 23 45 67 89", "030 1234567").
        r"\+\d(?:[ .()-]{0,2}\d){6,14}"
        r"|(?:\b1[ .-])?(?:\([2-9]\d{2}\) ?|\b[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
        r"|\b0\d{1,4}(?:[ .-]?\d{2,4}){2,4}",
        _phone,
    ),
)

KINDS: tuple[str, ...] = tuple(kind.label for kind in _KINDS)
_OPTIONS = ("kinds",)


@dataclass(frozen=True, slots=True)
class _Compiled:
    label: str
    regex: Any
    validate: _Validator
    glue_joiners: str | None  # None: the validator checks glue itself


# Kinds whose validator does not already check the surroundings.
_GENERIC_GLUE = {"email": "", "phone": ".,-"}


class PiiDetector:
    """Finds personal data of the enabled `kinds` (all of `KINDS` by default)."""

    name = "pii"

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        enabled = KINDS if kinds is None else tuple(dict.fromkeys(kinds))
        unknown = [kind for kind in enabled if kind not in KINDS]
        if unknown:
            raise ValueError(f"pii: unknown kind(s) {', '.join(map(repr, unknown))}; valid kinds: {', '.join(KINDS)}")
        if not enabled:
            raise ValueError(f"pii: kinds must name at least one of: {', '.join(KINDS)}")
        selected = [kind for kind in _KINDS if kind.label in enabled]
        self.kinds: tuple[str, ...] = tuple(kind.label for kind in selected)
        self._compiled = tuple(
            _Compiled(k.label, _compile(k.candidate), k.validate, _GENERIC_GLUE.get(k.label)) for k in selected
        )
        self._candidates = _compile_set(kind.candidate for kind in selected)

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        return [self._score_one(text) for text in texts]

    def _score_one(self, text: str) -> DetectorResult:
        if not text:
            return EMPTY
        hits, text = set_matches(self._candidates, text)
        if hits is None:
            return EMPTY
        found: list[tuple[int, int, int, str]] = []  # priority, start, end, label
        for priority in sorted(hits):
            entry = self._compiled[priority]
            for candidate in entry.regex.finditer(text):
                start, end = candidate.span()
                span = entry.validate(text, start, end)
                if span is None:
                    continue
                if entry.glue_joiners is not None and _glued(text, *span, entry.glue_joiners):
                    continue
                found.append((priority, span[0], span[1], entry.label))
        if not found:
            return EMPTY
        matches = without_overlaps(found)
        return DetectorResult(scores={match.label: 1.0 for match in matches}, matches=tuple(matches))


def build(options: Mapping[str, Any]) -> PiiDetector:
    """The `pii` detector from its policy options: `{kinds: [email, card, …]}` or none."""
    reject_unknown_options("pii", options, _OPTIONS)
    kinds = options.get("kinds")
    if kinds is not None and (
        isinstance(kinds, str) or not isinstance(kinds, Sequence) or not all(isinstance(kind, str) for kind in kinds)
    ):
        raise ValueError(f"pii: kinds must be a list of kind names, got {kinds!r}")
    return PiiDetector(kinds)
