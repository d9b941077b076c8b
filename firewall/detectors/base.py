"""The one protocol every detector implements, and the result it returns.

Detectors are batch-first: `score(texts)` takes every text of an exchange at once and
returns one `DetectorResult` per text, in order. They are pure functions of the text,
which is what lets `CachedDetector` remember results by text hash: an agent resends its
whole history on every turn, and only the new message should cost anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
