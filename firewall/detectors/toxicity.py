"""The embedded toxicity detector: alt-profanity-check's linear model, evaluated by hand.

alt-profanity-check ships a TfidfVectorizer and a CalibratedClassifierCV over LinearSVC.
Calling sklearn per message costs ~0.5 ms of sparse-matrix and validation overhead for a
few dot products, so we unpickle both once, keep only plain numbers (per vocabulary term
its idf and one coefficient per calibrated classifier; per classifier its intercept and
calibrator) and evaluate the same arithmetic in Python: tokenise, count, tf-idf,
l2-normalise, dot, calibrate, average. `profanity_check.predict_prob` and `score` agree
to ~1e-15 (only float summation order differs); tests/unit/test_toxicity.py checks it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from firewall.detectors.base import DetectorError, DetectorResult

__all__ = ["EmbeddedToxicity"]

_PACKAGE = "profanity_check"
# The vectorizer's settings this module re-implements; a shipped model trained with
# different ones must fail loudly at load, not score silently wrong.
_EXPECTED_VECTORIZER = {
    "analyzer": "word",
    "lowercase": True,
    "strip_accents": None,
    "preprocessor": None,
    "tokenizer": None,
    "token_pattern": r"(?u)\b\w\w+\b",
    "ngram_range": (1, 1),
    "norm": "l2",
    "use_idf": True,
    "sublinear_tf": False,
    "binary": False,
}


@dataclass(frozen=True, slots=True)
class _Calibrator:
    """One calibrated classifier of the ensemble: decision = w·x + intercept, then p."""

    intercept: float
    method: str  # "sigmoid" or "isotonic"
    a: float = 0.0
    b: float = 0.0
    x_thresholds: tuple[float, ...] = ()
    y_thresholds: tuple[float, ...] = ()

    def probability(self, decision: float) -> float:
        if self.method == "sigmoid":
            # sklearn: expit(-(a*T + b)); written so exp never overflows.
            z = self.a * decision + self.b
            if z >= 0:
                e = math.exp(-z)
                return e / (1.0 + e)
            return 1.0 / (1.0 + math.exp(z))
        return _interp_clipped(decision, self.x_thresholds, self.y_thresholds)


@dataclass(frozen=True, slots=True)
class _Model:
    # term -> (idf, coef of classifier 0, coef of classifier 1, ...)
    terms: dict[str, tuple[float, ...]]
    calibrators: tuple[_Calibrator, ...]


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # sklearn's default token_pattern, stdlib re on purpose


class EmbeddedToxicity:
    """Probability that a text is toxic/profane, from the model alt-profanity-check ships.

    Scores are {"toxicity": p} with p in [0, 1]. The model is loaded once per process
    (about 1 s, mostly importing sklearn to unpickle it) and shared by every instance.
    """

    name = "toxicity"

    def __init__(self) -> None:
        self._model = _load_model()

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        return [DetectorResult(scores={"toxicity": self._probability(t)}) for t in texts]

    def _probability(self, text: str) -> float:
        model = self._model
        n = len(model.calibrators)
        dots = [0.0] * n
        sum_sq = 0.0
        terms = model.terms
        # sklearn lowercases with str.lower (no accent stripping), tokenises, drops stop
        # words, then drops out-of-vocabulary tokens; stop words are never in the fitted
        # vocabulary (checked at load), so the vocabulary lookup does both.
        for token, count in Counter(_TOKEN.findall(text.lower())).items():
            row = terms.get(token)
            if row is None:
                continue
            weight = count * row[0]
            sum_sq += weight * weight
            for k in range(n):
                dots[k] += weight * row[k + 1]
        # An empty tf-idf row stays all zeros in sklearn (normalize skips zero norms).
        norm = math.sqrt(sum_sq) if sum_sq > 0.0 else 1.0
        total = 0.0
        for k, cal in enumerate(model.calibrators):
            total += cal.probability(dots[k] / norm + cal.intercept)
        return total / n


def _interp_clipped(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """IsotonicRegression.predict with out_of_bounds="clip": piecewise-linear in xs."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lo, hi = 0, len(xs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    span = xs[hi] - xs[lo]
    if span == 0.0:
        return ys[hi]
    return ys[lo] + (ys[hi] - ys[lo]) * (x - xs[lo]) / span


@lru_cache(maxsize=1)
def _load_model() -> _Model:
    try:
        import joblib  # imported here: it pulls in sklearn to unpickle, ~1 s

        data = resources.files(_PACKAGE) / "data"
        with resources.as_file(data / "vectorizer.joblib") as path:
            vectorizer = joblib.load(path)
        with resources.as_file(data / "model.joblib") as path:
            classifier = joblib.load(path)
    except (ImportError, OSError) as exc:
        raise DetectorError(
            f"embedded toxicity model unavailable: cannot load the data files of the "
            f"{_PACKAGE!r} package (pip install alt-profanity-check): {exc}"
        ) from exc
    return _extract(vectorizer, classifier)


def _extract(vectorizer: Any, classifier: Any) -> _Model:
    params = vectorizer.get_params()
    wrong = {k: params.get(k) for k, v in _EXPECTED_VECTORIZER.items() if params.get(k) != v}
    if wrong:
        raise DetectorError(f"embedded toxicity: unsupported vectorizer settings {wrong}")
    vocabulary: dict[str, int] = vectorizer.vocabulary_
    stop_words = vectorizer.get_stop_words() or frozenset()
    if any(word in vocabulary for word in stop_words):
        raise DetectorError("embedded toxicity: vectorizer vocabulary contains stop words")
    if list(classifier.classes_) != [0, 1]:
        raise DetectorError(
            f"embedded toxicity: expected a binary model, classes are {classifier.classes_}"
        )

    coefs: list[list[float]] = []
    calibrators: list[_Calibrator] = []
    for calibrated in classifier.calibrated_classifiers_:
        estimator = calibrated.estimator
        coefs.append([float(c) for c in estimator.coef_.ravel()])
        (calibrator,) = calibrated.calibrators  # binary: one calibrator, positive class
        intercept = float(estimator.intercept_.ravel()[0])
        if calibrated.method == "sigmoid":
            calibrators.append(
                _Calibrator(intercept, "sigmoid", a=float(calibrator.a_), b=float(calibrator.b_))
            )
        elif calibrated.method == "isotonic":
            calibrators.append(
                _Calibrator(
                    intercept,
                    "isotonic",
                    x_thresholds=tuple(float(x) for x in calibrator.X_thresholds_),
                    y_thresholds=tuple(float(y) for y in calibrator.y_thresholds_),
                )
            )
        else:
            raise DetectorError(
                f"embedded toxicity: unsupported calibration method {calibrated.method!r}"
            )

    idf = [float(x) for x in vectorizer.idf_]
    terms = {
        term: (idf[i], *(coef[i] for coef in coefs)) for term, i in vocabulary.items()
    }
    return _Model(terms=terms, calibrators=tuple(calibrators))
