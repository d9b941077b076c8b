"""The one protocol every detector implements, and the result it returns.

Detectors are batch-first: `score(texts)` takes every text of an exchange at once and
returns one `DetectorResult` per text, in order. They are pure functions of the text,
which is what lets `CachedDetector` remember results by text hash: an agent resends its
whole history on every turn, and only the new message should cost anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Match:
    """Characters [start, end) of the scored text, with what they matched."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class DetectorResult:
    scores: dict[str, float] = field(default_factory=dict)
    matches: tuple[Match, ...] = ()


EMPTY = DetectorResult()


class Detector(Protocol):
    name: str

    def score(self, texts: Sequence[str]) -> list[DetectorResult]: ...


class DetectorError(RuntimeError):
    """A detector failed; the engine blocks unless the policy says on_error: allow."""


def without_overlaps(found: list[tuple[int, int, int, str]]) -> list[Match]:
    """(priority, start, end, label) candidates -> non-overlapping matches in text order;
    where two overlap, the lower priority number (the more specific kind) wins."""
    kept: list[Match] = []
    for _, start, end, label in sorted(found):
        if all(end <= other.start or start >= other.end for other in kept):
            kept.append(Match(start, end, label))
    kept.sort(key=lambda match: match.start)
    return kept


def reject_unknown_options(detector: str, options: Mapping[str, Any], valid: Iterable[str]) -> None:
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"{detector}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")


def set_matches(candidates: Any, text: str) -> tuple[Any, str]:
    """Which patterns of an RE2 set occur in `text`, and the text RE2 read. A lone
    surrogate (possible after JSON decoding) cannot be UTF-8 encoded for RE2; "?" in its
    place keeps every str offset."""
    try:
        return candidates.Match(text), text
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
        return candidates.Match(text), text
