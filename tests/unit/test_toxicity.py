"""EmbeddedToxicity reproduces alt-profanity-check's sklearn pipeline, number for number."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from firewall.detectors import EmbeddedToxicity, build_detector

_REPO = Path(__file__).resolve().parents[2]
_HATECHECK = "data/hatecheck/test_suite_cases.csv"
# Only float summation order differs from sklearn's sparse code: a few ulps.
_TOLERANCE = 1e-12

_EDGE_CASES = [
    "",
    "   ",
    "the and of but would could",  # only stop words
    "a b c 1 2",  # only one-character tokens, which the token pattern skips
    "!!! ??? ...",
    "FUCK YOU",  # upper case: sklearn lowercases with str.lower
    # str.lower specials: dotted İ, titlecase ǅ, ligature ﬁ
    "ÉCOLE Straße İstanbul ǅungla ﬁne",
    "日本語のテキスト 😀 fuck",
    "shit shit shit shit",  # repeated term: counts, not presence
    "you_are_an_idiot idiot-face",
    "\u200bidiot\u200b \t\nmoron\r\n",
    "you stupid idiot " * 4000,  # long text
]


def _hatecheck_texts(every: int = 12) -> list[str]:
    for root in (_REPO.parent / "shared", Path("/work/shared")):
        path = root / _HATECHECK
        if path.exists():
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            return [row["test_case"] for row in rows[::every]]
    pytest.skip(f"{_HATECHECK} not found beside the repository")


@pytest.fixture(scope="module")
def detector() -> EmbeddedToxicity:
    return EmbeddedToxicity()


def _reference(texts: list[str]) -> list[float]:
    import profanity_check  # loads the model at import, which is why firewall does not use it

    return [float(p) for p in profanity_check.predict_prob(texts)]


def _probabilities(detector: EmbeddedToxicity, texts: list[str]) -> list[float]:
    return [result.scores["toxicity"] for result in detector.score(texts)]


def test_matches_profanity_check_on_hatecheck(detector: EmbeddedToxicity) -> None:
    texts = _hatecheck_texts()
    assert len(texts) > 300
    mine = _probabilities(detector, texts)
    reference = _reference(texts)
    worst = max(range(len(texts)), key=lambda i: abs(mine[i] - reference[i]))
    assert mine[worst] == pytest.approx(reference[worst], abs=_TOLERANCE), texts[worst]
    # The sample must exercise the model, not sit at one value.
    assert max(reference) > 0.9 and min(reference) < 0.1


@pytest.mark.parametrize("text", _EDGE_CASES, ids=lambda t: repr(t[:30]))
def test_matches_profanity_check_on_edge_cases(detector: EmbeddedToxicity, text: str) -> None:
    (mine,) = _probabilities(detector, [text])
    (reference,) = _reference([text])
    assert mine == pytest.approx(reference, abs=_TOLERANCE)


def test_empty_text_scores_the_intercept_only(detector: EmbeddedToxicity) -> None:
    # No vocabulary token: every stop-word-only or empty text gets the same score.
    empty, stop_words = _probabilities(detector, ["", "the and of but"])
    assert empty == stop_words
    assert 0.0 < empty < 1.0


def test_insult_scores_higher_than_neutral_sentence(detector: EmbeddedToxicity) -> None:
    insult, neutral = _probabilities(
        detector, ["you are a worthless fucking idiot", "the meeting is moved to thursday at noon"]
    )
    assert insult > 0.9
    assert neutral < 0.2


def test_one_result_per_text_in_order(detector: EmbeddedToxicity) -> None:
    texts = ["fuck off", "have a nice day", "fuck off"]
    results = detector.score(texts)
    assert [set(r.scores) for r in results] == [{"toxicity"}] * 3
    assert results[0].scores == results[2].scores
    assert results[0].scores["toxicity"] > results[1].scores["toxicity"]
    assert all(r.matches == () for r in results)
    assert detector.score([]) == []


def test_registry_builds_embedded_backend() -> None:
    detector = build_detector("toxicity", {"backend": "embedded"})
    assert detector.name == "toxicity"
    assert isinstance(detector, EmbeddedToxicity)
    assert isinstance(build_detector("toxicity", {}), EmbeddedToxicity)


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("toxicity", {"backend": "onnx"}, "available backends: detoxify, embedded"),
        ("toxicity", {"backend": "detoxify"}, "checkpoint"),  # the detoxify backend names what it needs
        ("sentiment", {}, "available detectors: injection, judge, pii, secrets, semantic, toxicity"),
        ("toxicity", {"backend": "embedded", "checkpoint": "x"}, "no options, got: checkpoint"),
    ],
)
def test_registry_rejects_unknown_names_clearly(
    name: str, config: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_detector(name, config)
