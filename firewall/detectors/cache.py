"""Remember detector results by text hash, so a resent history costs nothing.

An agent resends its whole conversation on every turn; wrapped in `CachedDetector`, a
detector only ever sees the texts it has not scored before. Detectors are pure functions
of the text (see base.py), which is what makes this safe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from threading import Lock

from firewall.detectors.base import Detector, DetectorError, DetectorResult

__all__ = ["CacheStats", "CachedDetector"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int  # texts answered without calling the inner detector
    misses: int  # texts sent to the inner detector
    size: int
    maxsize: int


class CachedDetector:
    """A `Detector` that wraps another and keeps its last `maxsize` results (LRU).

    Each `score` call sends the inner detector, in one batch, only the texts missing from
    the cache (each once, however often it repeats in the batch). The inner call runs
    outside the lock, so an executor thread scoring does not stall the event loop; two
    concurrent calls may both score a new text, which is wasteful but correct.
    """

    def __init__(self, inner: Detector, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.inner = inner
        self.name = inner.name
        self._maxsize = maxsize
        self._results: OrderedDict[bytes, DetectorResult] = OrderedDict()
        self._lock = Lock()
        self._hits = 0
        self._misses = 0

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        keys = [_key(text) for text in texts]
        found: dict[bytes, DetectorResult] = {}
        missing: dict[bytes, str] = {}  # insertion-ordered: first occurrence wins
        with self._lock:
            for key, text in zip(keys, texts):
                if key in found or key in missing:
                    continue
                result = self._results.get(key)
                if result is None:
                    missing[key] = text
                else:
                    self._results.move_to_end(key)
                    found[key] = result
            self._misses += len(missing)
            self._hits += len(keys) - len(missing)

        if missing:
            fresh = self.inner.score(list(missing.values()))
            if len(fresh) != len(missing):
                raise DetectorError(
                    f"detector {self.name!r} returned {len(fresh)} results for {len(missing)} texts"
                )
            found.update(zip(missing, fresh))
            with self._lock:
                for key, result in zip(missing, fresh):
                    self._results[key] = result
                    self._results.move_to_end(key)
                while len(self._results) > self._maxsize:
                    self._results.popitem(last=False)

        return [found[key] for key in keys]

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._results), self._maxsize)


def _key(text: str) -> bytes:
    # surrogatepass: a lone surrogate (possible after JSON decoding) must hash, not raise.
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
