"""CachedDetector: only unseen texts reach the inner detector, in one batch, in order."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from firewall.detectors import CachedDetector, CacheStats, DetectorError, DetectorResult


class CountingDetector:
    """Scores a text by its length and records every batch it is asked to score."""

    name = "length"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        self.batches.append(list(texts))
        return [DetectorResult(scores={"length": float(len(t))}) for t in texts]


class ShortDetector(CountingDetector):
    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        return super().score(texts)[:-1]


def _lengths(results: list[DetectorResult]) -> list[float]:
    return [r.scores["length"] for r in results]


def test_second_call_on_same_texts_does_not_call_inner() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner)
    texts = ["a", "bb", "ccc"]
    first = cached.score(texts)
    second = cached.score(texts)
    assert inner.batches == [texts]
    assert second == first
    assert _lengths(second) == [1.0, 2.0, 3.0]
    assert cached.stats() == CacheStats(hits=3, misses=3, size=3, maxsize=100_000)
    assert cached.name == "length"


def test_mixed_hits_and_misses_keep_order_and_send_only_misses_once() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner)
    cached.score(["bb", "dddd"])
    results = cached.score(["a", "bb", "ccc", "a", "dddd", "ccc", "eeeee"])
    assert inner.batches == [["bb", "dddd"], ["a", "ccc", "eeeee"]]
    assert _lengths(results) == [1.0, 2.0, 3.0, 1.0, 4.0, 3.0, 5.0]
    assert cached.stats().misses == 5
    assert cached.stats().hits == 4  # "bb", "dddd", and the repeats of "a" and "ccc"


def test_duplicates_within_one_batch_are_scored_once() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner)
    assert _lengths(cached.score(["x", "x", "x"])) == [1.0, 1.0, 1.0]
    assert inner.batches == [["x"]]


def test_all_hits_make_no_inner_call_and_empty_batch_is_empty() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner)
    assert cached.score([]) == []
    cached.score(["a"])
    cached.score(["a", "a"])
    assert inner.batches == [["a"]]


def test_lru_eviction_bounds_size_and_keeps_recently_used() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner, maxsize=2)
    cached.score(["a", "bb"])
    cached.score(["a"])  # "a" is now the most recently used
    cached.score(["ccc"])  # evicts "bb"
    assert cached.stats().size == 2
    inner.batches.clear()
    cached.score(["a", "ccc"])
    assert inner.batches == []
    cached.score(["bb"])
    assert inner.batches == [["bb"]]
    assert cached.stats().size == 2


def test_a_batch_larger_than_maxsize_still_answers_every_text() -> None:
    cached = CachedDetector(CountingDetector(), maxsize=2)
    texts = ["a", "bb", "ccc", "dddd"]
    assert _lengths(cached.score(texts)) == [1.0, 2.0, 3.0, 4.0]
    assert cached.stats().size == 2


def test_texts_that_differ_only_in_unicode_are_distinct_keys() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner)
    cached.score(["café", "cafe\u0301", "\ud800"])  # NFC, NFD, lone surrogate
    assert inner.batches == [["café", "cafe\u0301", "\ud800"]]


def test_inner_returning_wrong_count_raises_and_caches_nothing() -> None:
    cached = CachedDetector(ShortDetector())
    with pytest.raises(DetectorError, match="returned 1 results for 2 texts"):
        cached.score(["a", "b"])
    assert cached.stats().size == 0


def test_rejects_non_positive_maxsize() -> None:
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        CachedDetector(CountingDetector(), maxsize=0)


def test_concurrent_use_from_threads_stays_consistent() -> None:
    inner = CountingDetector()
    cached = CachedDetector(inner, maxsize=50)
    batches = [[str(i % 97) * (i % 7 + 1) for i in range(j, j + 32)] for j in range(200)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(cached.score, batches))
    for batch, results in zip(batches, outputs):
        assert _lengths(results) == [float(len(t)) for t in batch]
    stats = cached.stats()
    assert stats.size == 50
    assert stats.hits + stats.misses == 200 * 32
    assert stats.misses == sum(len(b) for b in inner.batches)
