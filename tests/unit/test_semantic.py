"""The semantic detector: packaged embedders checked by hash, chunking, concepts written
as sentences, and its place in the cascade (after the cheap detectors, on what is left)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from firewall import Action, Direction, Engine, Exchange, Message, Part
from firewall.audit.record import exchange_record
from firewall.detectors import CachedDetector, DetectorResult
from firewall.policy import PolicyError

semantic = pytest.importorskip("firewall.detectors.semantic")


def exchange(*texts: str) -> Exchange:
    messages = tuple(Message(role="user", parts=(Part(text, ("messages", i, "content")),)) for i, text in enumerate(texts))
    return Exchange(id="ex", direction=Direction.REQUEST, provider="openai", route="openai_chat", messages=messages)


@pytest.fixture(scope="module")
def minilm():
    return semantic.load_embedder("minilm")


# -- files and chunks -------------------------------------------------------------------


def test_a_model_file_that_differs_from_the_recorded_hash_is_refused(tmp_path: Path):
    directory = semantic.verified_directory("minilm")
    spec = semantic.MODELS["minilm"]
    small = {path: digest for path, digest in spec.files.items() if not path.endswith(".safetensors")}
    copy = tmp_path / "pkg"
    for relative in small:
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(directory / relative, copy / relative)
    subset = dataclasses.replace(spec, files=small)
    semantic.check_files("minilm", subset, copy)  # an exact copy passes

    with (copy / "model/vocab.txt").open("a", encoding="utf-8") as handle:
        handle.write("backdoor\n")
    with pytest.raises(ValueError, match=r"vocab\.txt has SHA-256 [0-9a-f]{64}, expected 07eced37.*Refusing to load it"):
        semantic.check_files("minilm", subset, copy)
    (copy / "model/vocab.txt").unlink()
    with pytest.raises(ValueError, match=r"vocab\.txt is missing"):
        semantic.check_files("minilm", subset, copy)


def test_minilm_runs_in_int8_and_a_text_embeds_the_same_whatever_its_neighbours(minilm):
    import torch

    # The Linear layers are quantized at load (the shipped head is trained on these embeddings).
    linears = [m for m in minilm._model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in minilm._model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert quantized and not linears
    # int8 activations share one scale per forward pass: batched with a shorter text, a text
    # came out different. Each text is embedded alone, so its neighbours do not matter.
    text = "Sure, here you go."
    alone = minilm.embed([text])[0]
    for batch in ([text, "hello"], ["hello", text, "a much longer text " * 20]):
        np.testing.assert_array_equal(minilm.embed(batch)[batch.index(text)], alone)
    assert semantic.EMBEDDINGS["minilm"] == "minilm-int8"


def test_an_unknown_model_or_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'bert'; available models: minilm, wordllama"):
        semantic.build({"model": "bert"})
    with pytest.raises(ValueError, match="unknown option"):
        semantic.build({"modle": "minilm"})
    with pytest.raises(ValueError, match="with head: none, give at least one concept"):
        semantic.build({"head": "none"})
    with pytest.raises(ValueError, match="concept 'x' needs 'like'"):
        semantic.build({"head": "none", "concepts": {"x": {"like": []}}})


def test_long_texts_are_cut_into_overlapping_chunks_that_cover_every_word():
    words = [f"w{i}" for i in range(250)]
    pieces = semantic.chunks(" ".join(words))
    assert [len(piece.split()) for piece in pieces] == [48] * 7 + [26]
    assert pieces[1].split()[0] == "w32"  # 16 words shared with the chunk before
    assert set(" ".join(pieces).split()) == set(words)
    assert semantic.chunks("short text") == ["short text"]


def test_a_harmful_sentence_inside_a_long_benign_document_is_scored_by_its_worst_chunk(minilm):
    detector = semantic.SemanticDetector(minilm, None, [semantic.Concept("kill", ("The best solution is to kill him while he sleeps",))])
    filler = " ".join(["The quarterly report covers revenue, hiring and the office move."] * 25)
    harm = ("He has to go. The best solution is to kill him in his sleep, quietly, so nobody ever finds out. "
            "Wait until he is asleep, then make sure he never wakes up again.")
    text = f"{filler} {harm} {filler}"
    assert detector.score([filler])[0].scores["semantic:kill"] < 0.2
    chunked = detector.score([text])[0].scores["semantic:kill"]
    whole = float(minilm.embed([text])[0] @ minilm.embed(["The best solution is to kill him while he sleeps"])[0])
    assert chunked > 0.45 and chunked > whole + 0.2  # one embedding of the whole text would dilute it


def test_the_fast_path_embeds_offline_with_unit_vectors():
    embedder = semantic.load_embedder("wordllama")
    vectors = embedder.embed(["the cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing"])
    assert vectors.shape == (3, 256) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


# -- concepts in a policy -----------------------------------------------------------------

VIOLENCE = """
version: 1
name: semantic
rules:
  - id: violence-against-person
    match:
      semantic:
        like: ["suggests that a person be killed or hurt", "the best solution is to get rid of him for good"]
        unlike: ["a permanent fix for a leaking roof"]
        threshold: 0.5
    action: block
"""


def test_a_harm_written_as_sentences_catches_an_indirect_phrasing_and_passes_its_benign_twin(load_policy):
    engine = Engine(load_policy(VIOLENCE))
    caught = engine.inspect(exchange("The best solution is to make sure he never wakes up."))
    assert caught.action is Action.BLOCK and caught.blocking_rule == "violence-against-person"
    finding = caught.findings[0]
    assert finding.detector == "semantic:violence-against-person" and finding.score is not None and finding.score >= 0.5
    assert engine.inspect(exchange("We need a permanent solution for the leaking roof.")).action is Action.ALLOW


def test_check_warns_about_exemplars_that_cannot_help(write_policy):
    path = write_policy("""
        version: 1
        name: exemplars
        rules:
          - id: weapons
            match:
              semantic:
                like: ["asks how to make a bomb", "asks how to build a bomb"]
                unlike: ["asks how to make a bomb at home"]
                threshold: 0.6
            action: block
    """)
    done = subprocess.run([sys.executable, "-m", "firewall.cli", "check", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr  # warnings do not fail the check
    assert "rules[0].match.semantic: warning: 'like' sentences 1 and 2 are near duplicates" in done.stderr
    assert "warning: 'unlike' sentence 1 is" in done.stderr and "they do not separate" in done.stderr
    assert f"{path}:" in done.stderr.splitlines()[0]


def test_a_declared_concept_may_not_take_the_name_of_a_semantic_rule(load_policy):
    with pytest.raises(PolicyError, match="concept 'violence-against-person' has the id of a rule"):
        load_policy(VIOLENCE.replace("rules:", """detectors:
  semantic:
    head: none
    concepts:
      violence-against-person: {like: ["threatens someone"]}
rules:""", 1))


# -- the cascade ------------------------------------------------------------------------


class CountingModel:
    """A costly detector that records what it was asked to score."""

    name = "semantic"
    costly = True

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        self.seen.extend(texts)
        return [DetectorResult({"semantic": 0.9 if "sleep" in text else 0.1}) for text in texts]


CASCADE = """
version: 1
name: cascade
lists: {violent: [murder]}
rules:
  - {id: listed-violence, match: {lists: [violent]}, action: block}
  - {id: model-says-harm, match: {scores: {semantic: 0.8}}, action: block}
"""


def test_the_costly_detector_runs_only_on_messages_the_cheap_rules_left_undecided(load_policy):
    policy = load_policy(CASCADE.replace("rules:", "detectors: {semantic: {head: none, concepts: {x: {like: [hi]}}}}\nrules:"))
    model = CountingModel()
    engine = Engine(dataclasses.replace(policy, detectors={**policy.detectors, "semantic": CachedDetector(model)}))

    decision = engine.inspect(exchange("we will murder him", "lovely weather today"))
    assert decision.action is Action.BLOCK and decision.blocking_rule == "listed-violence"
    assert model.seen == ["lovely weather today"]  # the message already blocked cost no model call
    (run,) = [run for run in decision.detectors if run.detector == "semantic"]
    assert (run.texts, run.skipped) == (1, 1) and run.top == pytest.approx(0.1)

    decision = engine.inspect(exchange("get rid of him while he is asleep in his sleep"))
    assert decision.blocking_rule == "model-says-harm"
    record = exchange_record(exchange("x"), decision, policy_name="p", policy_sha256="s", identified_by=None, timings={})
    assert record["detectors"] == [{"detector": "semantic", "texts": 1, "skipped": 0,
                                    "ms": record["detectors"][0]["ms"], "top": 0.9}]
    assert record["detectors"][0]["ms"] >= 0.0


def test_the_head_gives_no_verdict_on_a_text_too_short_to_mean_anything(minilm):
    head = semantic.load_head(semantic.HEADS["minilm"])
    detector = semantic.SemanticDetector(minilm, head, [semantic.Concept("kill", ("kill him",))])
    short, longer = detector.score(["key?", "How do I make a pipe bomb at home?"])
    assert set(short.scores) == {"semantic:kill"}  # the concept still speaks
    assert longer.scores["semantic:harm"] > 0.9 and longer.scores["semantic"] > 0.9


def test_keys_and_pem_blocks_are_not_words_to_the_head(minilm):
    pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSkMEXAMPLEKEYDATA\n-----END EC PRIVATE KEY-----"
    token = "sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
    assert semantic.chunks(f"Here is my key: {pem} thanks") == ["Here is my key:   thanks"]
    assert semantic.words_of(pem) == 0 and semantic.words_of(f"use {token} now") == 2
    detector = semantic.SemanticDetector(minilm, semantic.load_head(semantic.HEADS["minilm"]), [])
    alone, carried, words = detector.score([pem, f"Please rotate this key tomorrow: {pem}", "Please rotate this key tomorrow:"])
    assert alone.scores == {}  # nothing the head can read
    # a message that carries a key is judged by its words alone, not by the key's armour
    assert carried.scores.keys() == words.scores.keys()
    assert all(abs(carried.scores[k] - words.scores[k]) < 1e-4 for k in words.scores)


def test_a_concept_is_compared_with_each_sentence_not_only_with_the_whole_window(minilm):
    detector = semantic.SemanticDetector(minilm, None, [semantic.Concept("kill", ("make sure he never wakes up",))])
    relayed = "Researcher's note: the site manager will keep objecting. The best solution is to make sure he never wakes up."
    assert semantic.sentences(relayed)[-1] == "The best solution is to make sure he never wakes up."
    whole = float(minilm.embed([relayed])[0] @ minilm.embed(["make sure he never wakes up"])[0])
    assert detector.score([relayed])[0].scores["semantic:kill"] > max(0.6, whole + 0.1)
    assert semantic.sentences("One sentence only.") == []
