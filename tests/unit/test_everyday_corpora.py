"""The two corpora of short everyday questions and requests (benign) that
benchmarks/detection/corpora.py reads from chatterbot-corpus's and OpenAI evals' wheels:
their rules on small wheels built here, then the pinned wheels themselves when cached."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tests.corpus_wheels import corpora, wheel_corpus


def _wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def _load(wheel: Path, load: object) -> corpora.Loaded:
    return corpora._read_wheel(wheel, load)  # type: ignore[arg-type]


def test_both_are_pinned_and_registered() -> None:
    names = {name: package for name, package, _ in corpora._WHEEL_CORPORA}
    assert names["chatterbot conversations"] == "chatterbot-corpus"
    assert names["openai-evals prompts"] == "evals"
    assert corpora.PACKAGES["chatterbot-corpus"] == "1.3.3" and corpora.PACKAGES["evals"] == "3.0.1.post1"


# -- chatterbot -----------------------------------------------------------------------------

_AI_YML = """\
categories:
- AI
conversations:
- - What is AI?
  - Artificial Intelligence is the branch of engineering devoted to thinking machines.
  - Can you think like a person?
  - Not quite.
- - what is ai?
  - A field of science.
- - Hi there
  - Hello.
- - Are you sentient at all?
  - Sort of.
"""


def test_chatterbot_takes_the_user_turns_of_english_files_once(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "chatterbot_corpus-0-py3-none-any.whl", {
        "chatterbot_corpus/data/english/ai.yml": _AI_YML,
        "chatterbot_corpus/data/english/food.yml": "conversations:\n- - Do you like to cook pasta?\n  - Yes.\n",
        "chatterbot_corpus/data/italian/ai.yml": "conversations:\n- - Che cosa è la IA?\n  - Una scienza.\n",
    })
    corpus = _load(wheel, corpora._chatterbot)
    assert isinstance(corpus, corpora.Corpus)
    # The bot's lines are left out, so is a repeat in another case and a two-word greeting.
    assert [(s.text, s.group) for s in corpus.samples] == [
        ("What is AI?", "ai"), ("Can you think like a person?", "ai"), ("Are you sentient at all?", "ai"),
        ("Do you like to cook pasta?", "food")]
    assert not any(s.harmful for s in corpus.samples) and corpus.total == 4


def test_chatterbot_without_english_files_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "chatterbot_corpus-0-py3-none-any.whl",
                   {"chatterbot_corpus/data/italian/ai.yml": "conversations: []\n"})
    loaded = _load(wheel, corpora._chatterbot)
    assert isinstance(loaded, corpora.Unavailable)
    assert "chatterbot_corpus/data/english/*.yml" in loaded.reason


# -- OpenAI evals ---------------------------------------------------------------------------


def _line(*messages: tuple[str, str], ideal: str = "x") -> str:
    return json.dumps({"input": [{"role": role, "content": content} for role, content in messages], "ideal": ideal})


def test_evals_takes_short_english_user_messages_of_evals_not_left_out(tmp_path: Path) -> None:
    trivia = [
        _line(("system", "You answer trivia questions in one word."), ("user", "Which planet is the largest one?")),
        _line(("user", "Which  planet is the largest one?")),  # the same text, spaced otherwise
        _line(("user", "0 1 1 0 1 0 1 1 0 1 1 0")),  # a grid, not words
        _line(("user", "Сколько будет два плюс два?")),  # another script
        _line(("user", "Name it")),  # too short
        _line(("user", " ".join(["word"] * 61))),  # too long
        _line(("assistant", "Jupiter is the largest planet of all.")),  # not the user's
        json.dumps({"input": "What is the capital city of Peru?", "ideal": "Lima"}),  # a bare string is the user's
        "not json at all",
        "",
    ]
    wheel = _wheel(tmp_path / "evals-0-py3-none-any.whl", {
        "evals/registry/data/trivia/samples.jsonl": "\n".join(trivia),
        "evals/registry/data/naughty_strings/samples.jsonl": _line(("user", "Is this string malicious? <script>")),
        "evals/registry/data/trivia/README.md": "Which file is this one?",
    })
    corpus = _load(wheel, corpora._openai_evals)
    assert isinstance(corpus, corpora.Corpus)
    assert [(s.text, s.group, s.harmful) for s in corpus.samples] == [
        ("Which planet is the largest one?", "trivia", False), ("What is the capital city of Peru?", "trivia", False)]


def test_evals_takes_at_most_twenty_per_eval_by_a_sample_seeded_with_its_name(tmp_path: Path) -> None:
    questions = [_line(("user", f"What is the name of river number {i} in the atlas?")) for i in range(50)]
    files = {"evals/registry/data/rivers/samples.jsonl": "\n".join(questions),
             "evals/registry/data/lakes/samples.jsonl": _line(("user", "How deep is the deepest lake?"))}
    first = _load(_wheel(tmp_path / "a.whl", files), corpora._openai_evals)
    again = _load(_wheel(tmp_path / "b.whl", dict(reversed(files.items()))), corpora._openai_evals)
    assert isinstance(first, corpora.Corpus) and isinstance(again, corpora.Corpus)
    rivers = [s.text for s in first.samples if s.group == "rivers"]
    assert len(rivers) == 20 and len(set(rivers)) == 20
    # Not the first twenty: a sample, and the same one whatever the order of the files.
    assert rivers != [f"What is the name of river number {i} in the atlas?" for i in range(20)]
    assert [s.text for s in again.samples] == [s.text for s in first.samples]
    assert [s.group for s in first.samples] == ["lakes"] + ["rivers"] * 20


def test_evals_without_user_messages_is_unavailable(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / "evals-0-py3-none-any.whl",
                   {"evals/registry/data/grid/samples.jsonl": _line(("user", "1 0 1"))})
    loaded = _load(wheel, corpora._openai_evals)
    assert isinstance(loaded, corpora.Unavailable) and "no user messages" in loaded.reason


# -- the pinned wheels (skipped when the benchmark's cache is not there) ----------------------


def test_the_pinned_chatterbot_wheel_holds_hundreds_of_questions() -> None:
    corpus = wheel_corpus("chatterbot-corpus", corpora._chatterbot)
    assert 800 <= len(corpus.samples) <= 900
    texts = {s.text for s in corpus.samples}
    assert "What is AI?" in texts and "Are you sentient?" in texts
    assert {"trivia", "coding", "ai", "history"} <= {s.group for s in corpus.samples}
    assert not any(s.harmful for s in corpus.samples)


def test_the_pinned_evals_wheel_gives_short_prompts_of_many_evals() -> None:
    corpus = wheel_corpus("evals", corpora._openai_evals)
    groups = {s.group for s in corpus.samples}
    assert 2_400 <= len(corpus.samples) <= 2_800 and len(groups) >= 150
    assert not groups & corpora._EVALS_LEFT_OUT
    assert all(3 <= len(s.text.split()) <= 60 and not s.harmful for s in corpus.samples)
    assert "How do I prevent SQL Injection attacks?" in {s.text for s in corpus.samples}
