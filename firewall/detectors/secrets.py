"""Credentials: provider API keys, private key blocks, JWTs and high-entropy tokens.

Provider formats are matched by prefix and shape (RE2, so linear time) and then checked
in Python where the shape allows it (a JWT header must decode to JSON with "alg"; an
"sk-" key must carry random-looking characters, so "sk-" in prose is not a key). A
token glued to a longer word ("risk-free-…", "xAKIA…") is not a match.

Labels: openai_key, anthropic_key, aws_access_key, aws_secret_key, github_token,
slack_token, google_api_key, stripe_key, private_key, jwt, high_entropy. Scores are
{label: 1.0} for every label found; matches do not overlap (the specific label wins
over high_entropy). Offsets are str indices into the scored text.

High-entropy tokens (option `entropy`, on by default) are runs of >= 20 characters of
the base64/base64url alphabet that look random. The trade-off, chosen for a firewall
where a false positive redacts a harmless token and a false negative leaks a key:

- Entropy thresholds depend on the length, set at about the 1st percentile of the
  Shannon entropy of uniformly random tokens of that length (simulated: base62 of 20
  chars has a median of 4.0 bits/char, 1st percentile 3.65; of 40 chars 4.77 and 4.45;
  hex of 20 chars 3.38 and 2.90), so ~99% of random tokens pass this test. A single
  fixed threshold (truffleHog's 4.5) would miss most tokens under 40 characters.
- Entropy alone cannot tell "HunYuanDenseV1Config" from a key, so an unlabelled base64
  token must also mix lower and upper case and digits, have a separator ("_", "-",
  "/", "+") at most every 10 characters (identifiers and paths have more), no "/"
  segment that is a plain word ("com/owner/blob/…"), and capitalised words ("Dense",
  "Config") covering under 70% of it (random base62: ~20%; CamelCase: 75-95%).
  Measured on random tokens, all the rules together flag ~95% of 20-char base62
  tokens, 98% at 30 characters, 99.7% at 40; on 2.1 million lines of Python sources
  (stdlib and site-packages, dense with identifiers) they flag ~420 tokens, mostly
  CamelCase class names with embedded version digits ("MiniCPMV4_6Processor").
- Hex digests are everywhere in agent traffic (git commits, sha256 sums, ETags), so a
  lone hex token of a digest length (32, 40, 56, 64, 96, 128) and a UUID are not
  flagged: a hex secret of exactly those lengths is missed unless it is labelled.
- A token right after a label such as `token=`, `api_key:`, `"password": "` needs
  only letters, digits and the entropy (hex digests and UUIDs included): the label
  says what it is.
- Base64 payloads (data URIs, encoded files) of high entropy are flagged: they may
  carry anything; a policy that expects them can set `entropy: false`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from firewall.detectors.base import EMPTY, DetectorResult, reject_unknown_options, set_matches, without_overlaps

__all__ = ["LABELS", "SecretsDetector", "build"]

_Validator = Callable[[str, int, int], bool]

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _compile(pattern: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _glued(text: str, start: int, end: int) -> bool:
    """Whether [start, end) is part of a longer token (base64url characters around it)."""
    return (start > 0 and text[start - 1] in _TOKEN_CHARS) or (end < len(text) and text[end] in _TOKEN_CHARS)


def _free_standing(text: str, start: int, end: int) -> bool:
    return not _glued(text, start, end)


def _random_looking(body: str) -> bool:
    return any(ch.isdigit() for ch in body) and any(ch.isalpha() for ch in body)


def _openai(text: str, start: int, end: int) -> bool:
    token = text[start:end]
    if token.startswith("sk-ant-"):
        return False  # Anthropic's, or a malformed one of theirs
    return _free_standing(text, start, end) and _random_looking(token[3:])


def _random_suffix(prefix_length: int) -> _Validator:
    def validate(text: str, start: int, end: int) -> bool:
        return _free_standing(text, start, end) and _random_looking(text[start + prefix_length : end])

    return validate


def _anthropic(text: str, start: int, end: int) -> bool:
    body = text[text.index("-", start + 7) + 1 : end]  # after "sk-ant-api03-"
    return _free_standing(text, start, end) and _random_looking(body)


def _aws_secret(text: str, start: int, end: int) -> bool:
    # The 40 characters are the value after a label; base64 characters around them
    # mean the value is longer than an AWS secret key.
    return not (end < len(text) and (text[end] in _TOKEN_CHARS or text[end] in "+/="))


def _jwt(text: str, start: int, end: int) -> bool:
    if _glued(text, start, end) or (start > 0 and text[start - 1] == "."):
        return False
    header = text[start : text.index(".", start)]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError too
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _private_key(text: str, start: int, end: int) -> bool:
    return True


# --- high entropy -------------------------------------------------------------------

_HASH_LENGTHS = frozenset({32, 40, 56, 64, 96, 128})
_UUID = _compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_LABELLED = _compile(
    r"(?i)(?:secret|token|api[_-]?key|apikey|access[_-]?key|passw(?:or)?d|passwd|pwd|"
    r"credentials?|auth)[\w-]*[\"']?\s*[:=]\s*[\"']?$"
)
_CAPITALISED_WORD = _compile(r"[A-Z][a-z]{2,}")
_PATH_WORD = _compile(r"^[A-Z]?[a-z]{2,}$")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _entropy(token: str) -> float:
    n = len(token)
    return -sum(count / n * math.log2(count / n) for count in Counter(token).values())


def _threshold(length: int, hex_alphabet: bool) -> float:
    # Fitted to the simulated 1st percentile of random tokens (see the module docstring):
    # base62: 3.65 @20, 3.86 @24, 4.20 @32, 4.45 @40, 4.90 @64; hex: 2.90 @20, 3.40 @40.
    if hex_alphabet:
        return min(3.5, 0.44 * math.log2(length) + 1.0)
    return min(4.4, 0.744 * math.log2(length) + 0.44)


def _high_entropy(text: str, start: int, end: int) -> bool:
    token = text[start:end].rstrip("=")
    length = len(token)
    if length < 20:
        return False
    labelled = _LABELLED.search(text[max(0, start - 40) : start]) is not None
    # Hex with dashes (a UUID, a grouped key) is judged on its hex digits.
    is_hex = all(ch in _HEX_CHARS or ch == "-" for ch in token)
    core = token.replace("-", "") if is_hex else token
    if not _random_looking(token):
        return False
    if not labelled:
        # Identifiers and paths ("TF2_RemoveWeaponSlot", "org/GNOME/gtk/-/commit/…")
        # have a separator every few characters; random base64url one in ~32.
        if sum(not ch.isalnum() for ch in token) * 10 > length:
            return False
        if "/" in token and any(_PATH_WORD.search(part) for part in token.split("/")):
            return False  # "com/owner/repo/blob/1115a25c…", "Modules/sha256module"
        if _UUID.search(token) is not None:
            return False
        if is_hex:
            if len(core) in _HASH_LENGTHS:
                return False
            if sum(ch.isalpha() for ch in core) < 3:
                return False  # "2246467991473531772e-16" (a float); random hex: ~37% letters
            if token != token.lower() and token != token.upper():
                return False  # mixed-case "hex" is a word-ish token, not a digest
        else:
            if not (any(ch.islower() for ch in token) and any(ch.isupper() for ch in token)):
                return False
            # CamelCase identifiers ("HunYuanDenseV1Config") are mostly capitalised
            # words; in random base62 such words cover a fifth of the characters.
            words = sum(len(word) for word in _CAPITALISED_WORD.findall(token))
            if words >= 0.7 * length:
                return False
    return len(core) >= 20 and _entropy(core) >= _threshold(len(core), is_hex)


# --- the table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Kind:
    label: str
    candidate: str  # RE2 regex; group 1 if it has one, else the whole match, is the secret
    validate: _Validator


_BEGIN = r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_END = r"-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"

# In priority order: where two kinds claim the same characters, the earlier one wins.
_KINDS: tuple[_Kind, ...] = (
    # A block cut short (a truncated paste) still has its key material redacted.
    _Kind("private_key", rf"{_BEGIN}(?s:.*?){_END}|{_BEGIN}[A-Za-z0-9+/=:,\s-]*[A-Za-z0-9+/=]", _private_key),
    _Kind("jwt", r"e[wy][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", _jwt),
    _Kind("anthropic_key", r"sk-ant-[a-z]{3,6}\d{2}-[A-Za-z0-9_-]{20,}", _anthropic),
    _Kind("openai_key", r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", _openai),
    _Kind("aws_access_key", r"(?:AKIA|ASIA)[A-Z0-9]{16}", _free_standing),
    _Kind(
        "aws_secret_key",
        r"(?i)(?:aws_?secret_?(?:access_?)?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
        r"([A-Za-z0-9/+]{40})",
        _aws_secret,
    ),
    _Kind("github_token", r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}", _free_standing),
    _Kind("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,}", _random_suffix(5)),
    _Kind("google_api_key", r"AIza[0-9A-Za-z_-]{35}", _free_standing),
    _Kind("stripe_key", r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}", _free_standing),
)  # fmt: skip
_ENTROPY_KIND = _Kind("high_entropy", r"[A-Za-z0-9+/_-]{20,}=*", _high_entropy)

LABELS: tuple[str, ...] = (*(kind.label for kind in _KINDS), _ENTROPY_KIND.label)
_OPTIONS = ("entropy",)


@dataclass(frozen=True, slots=True)
class _Compiled:
    label: str
    regex: Any
    validate: _Validator


class SecretsDetector:
    """Finds credentials; `entropy=False` turns off the high-entropy token heuristic."""

    name = "secrets"

    def __init__(self, entropy: bool = True) -> None:
        kinds = (*_KINDS, _ENTROPY_KIND) if entropy else _KINDS
        self.labels: tuple[str, ...] = tuple(kind.label for kind in kinds)
        self._compiled = tuple(_Compiled(kind.label, _compile(kind.candidate), kind.validate) for kind in kinds)
        # One RE2 pass tells which kinds have candidates; only their regexes run.
        options = re2.Options()
        options.log_errors = False
        options.never_capture = True
        self._candidates = re2.Set.SearchSet(options)
        for kind in kinds:
            self._candidates.Add(kind.candidate)
        self._candidates.Compile()

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
                start, end = candidate.span(1 if entry.regex.groups else 0)
                if entry.validate(text, start, end):
                    found.append((priority, start, end, entry.label))
        if not found:
            return EMPTY
        matches = without_overlaps(found)
        return DetectorResult(scores={match.label: 1.0 for match in matches}, matches=tuple(matches))


def build(options: Mapping[str, Any]) -> SecretsDetector:
    """The `secrets` detector from its policy options: `{entropy: false}` or none."""
    reject_unknown_options("secrets", options, _OPTIONS)
    entropy = options.get("entropy", True)
    if not isinstance(entropy, bool):
        raise ValueError(f"secrets: entropy must be true or false, got {entropy!r}")
    return SecretsDetector(entropy=entropy)
