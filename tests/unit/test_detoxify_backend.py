"""The detoxify toxicity backend, run for real: detoxify's `Detoxify` class loads a tiny BERT
checkpoint that these tests build and save, so loading and prediction run offline.

torch, transformers and detoxify come with the `detoxify` extra; the option checks at
the top run without them, the model tests need them.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from firewall.detectors import DetectorResult
from firewall.detectors.detoxify_backend import DetoxifyToxicity, build

# detoxify's 'original' model classes, in its order; it renames three of them.
CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
LABELS = {"toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack"}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "i will kill you in your sleep the best solution is to murder him hello friend thanks for help".split()
)
TEXTS = [
    "hello friend",
    "the best solution is to murder him in his sleep",
    "thanks for the help",
    "",
    "i will kill you " * 40,  # longer than the model's 32 positions: must be truncated
]


# --- options, no model needed ------------------------------------------------------------


def test_unknown_option_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'model'.*valid options: checkpoint, device, huggingface_config_path"):
        build({"checkpoint": "x", "huggingface_config_path": "y", "model": "original"})


def test_required_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing required option.*huggingface_config_path"):
        build({"checkpoint": str(tmp_path / "c.ckpt")})


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(ValueError, match=f"checkpoint file not found: {missing}"):
        build({"checkpoint": str(missing), "huggingface_config_path": str(tmp_path)})


def test_missing_hf_directory_is_named(tmp_path: Path) -> None:
    checkpoint = tmp_path / "c.ckpt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match=f"not found: {tmp_path / 'hf' / 'config.json'}"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(tmp_path / "hf")})


def test_missing_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "c.ckpt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "detoxify", None)  # what `import detoxify` sees when absent
    with pytest.raises(ImportError, match=r"missing: detoxify.*install agent-firewall\[detoxify\]"):
        build({"checkpoint": str(tmp_path / "c.ckpt"), "huggingface_config_path": str(tmp_path)})


# --- a tiny BERT, saved the way detoxify expects -------------------------------------------


def _save_model(
    root: Path, *, toxic_bias: float = 0.0, drop: tuple[str, ...] = (), arch: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write a local HF directory and a detoxify checkpoint; return (checkpoint, hf_dir)."""
    torch = pytest.importorskip("torch", reason="needs the detoxify extra")
    transformers = pytest.importorskip("transformers", reason="needs the detoxify extra")
    pytest.importorskip("detoxify", reason="needs the detoxify extra")

    hf_dir = root / "hf"
    hf_dir.mkdir()
    (hf_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(CLASSES),
    )
    config.save_pretrained(hf_dir)
    # Built from the directory: in transformers 5 `BertTokenizer(vocab_file=...)` ignores the file.
    tokenizer = transformers.BertTokenizer.from_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)  # deliberately without model_max_length

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.bias[CLASSES.index("toxic")] = toxic_bias
    state_dict = {k: v for k, v in model.state_dict().items() if k not in drop}
    checkpoint = root / "model.ckpt"
    torch.save(
        {
            "config": {
                "arch": {
                    "args": arch
                    or {
                        # A hub name, as in detoxify's released checkpoints: must not be fetched.
                        "model_type": "bert-base-uncased",
                        "model_name": "BertForSequenceClassification",
                        "tokenizer_name": "BertTokenizer",
                        "num_classes": len(CLASSES),
                    }
                },
                "dataset": {"args": {"classes": CLASSES}},
            },
            "state_dict": state_dict,
        },
        checkpoint,
    )
    return checkpoint, hf_dir


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> DetoxifyToxicity:
    checkpoint, hf_dir = _save_model(tmp_path_factory.mktemp("detoxify"))
    return build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir), "device": "cpu"})


def test_scores_every_class_as_a_probability(detector: DetoxifyToxicity) -> None:
    results = detector.score(TEXTS)
    assert len(results) == len(TEXTS)
    assert set(detector.labels) == LABELS
    for result in results:
        assert isinstance(result, DetectorResult)
        assert set(result.scores) == LABELS
        assert result.matches == ()
        for value in result.scores.values():
            assert type(value) is float
            assert 0.0 <= value <= 1.0
    # A randomly initialised model still tells texts apart: the model really ran on each.
    assert len({r.scores["toxicity"] for r in results}) > 1


def test_deterministic_and_batch_equals_single(detector: DetoxifyToxicity) -> None:
    batch = detector.score(TEXTS)
    assert detector.score(TEXTS) == batch
    for text, expected in zip(TEXTS, batch):
        (single,) = detector.score([text])
        assert single.scores == pytest.approx(expected.scores, abs=1e-5)


def test_empty_batch(detector: DetoxifyToxicity) -> None:
    assert detector.score([]) == []


def test_batches_larger_than_one_pass_keep_order(detector: DetoxifyToxicity) -> None:
    texts = [f"hello {'friend ' * (i % 7)}{'kill ' * (i % 3)}" for i in range(75)]
    batch = detector.score(texts)
    singles = [detector.score([t])[0] for t in texts]
    for got, expected in zip(batch, singles):
        assert got.scores == pytest.approx(expected.scores, abs=1e-5)


def test_concurrent_callers_get_the_same_answers(detector: DetoxifyToxicity) -> None:
    expected = detector.score(TEXTS)
    answers: list[list[DetectorResult]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            for _ in range(5):
                answers.append(detector.score(TEXTS))
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(answers) == 20
    assert all(answer == expected for answer in answers)


def test_classifier_bias_drives_toxicity(tmp_path: Path) -> None:
    checkpoint, hf_dir = _save_model(tmp_path, toxic_bias=10.0)
    detector = build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir)})
    for result in detector.score(TEXTS):
        assert result.scores["toxicity"] > 0.999
        # Only the toxicity class was pushed; the others stay near an untrained 0.5.
        assert all(0.2 < v < 0.8 for k, v in result.scores.items() if k != "toxicity")


def test_checkpoint_missing_weights_is_refused(tmp_path: Path) -> None:
    # transformers would silently initialise the classifier at random.
    checkpoint, hf_dir = _save_model(tmp_path, drop=("classifier.weight",))
    with pytest.raises(ValueError, match=r"lacks weights the model needs \(classifier\.weight\)"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir)})


def test_checkpoint_naming_a_non_model_class_is_refused(tmp_path: Path) -> None:
    arch = {"model_type": "x", "model_name": "pipeline", "tokenizer_name": "BertTokenizer", "num_classes": 6}
    checkpoint, hf_dir = _save_model(tmp_path, arch=arch)
    with pytest.raises(ValueError, match=r"names model 'pipeline'"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir)})


def test_label_count_mismatch_is_explained(tmp_path: Path) -> None:
    checkpoint, hf_dir = _save_model(tmp_path)
    data = json.loads((hf_dir / "config.json").read_text())
    data.pop("id2label")
    data.pop("label2id", None)
    data["num_labels"] = 2
    (hf_dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"has 2 labels but checkpoint .* has 6 classes"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir)})


def test_checkpoint_with_code_objects_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="needs the detoxify extra")
    _, hf_dir = _save_model(tmp_path)
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"config": {}, "state_dict": {}, "payload": threading.Lock}, checkpoint)
    with pytest.raises(ValueError, match="objects that need code to unpickle are refused"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir)})


def test_bad_device_is_a_value_error(tmp_path: Path) -> None:
    checkpoint, hf_dir = _save_model(tmp_path)
    with pytest.raises(ValueError, match="invalid device 'gpu-please'"):
        build({"checkpoint": str(checkpoint), "huggingface_config_path": str(hf_dir), "device": "gpu-please"})


def test_a_policy_selects_the_detoxify_backend(tmp_path: Path) -> None:
    """The same model through the policy language: backend, options, threshold rule."""
    from firewall import Action, Direction, Engine, Exchange, Message, Part
    from firewall.policy import parse_policy
    from firewall.policy.compiler import compile_policy

    checkpoint, hf_dir = _save_model(tmp_path, toxic_bias=10.0)
    policy = compile_policy(parse_policy(f"""
version: 1
name: detoxify
detectors:
  toxicity: {{backend: detoxify, checkpoint: "{checkpoint}", huggingface_config_path: "{hf_dir}"}}
rules: [{{id: toxic, match: {{scores: {{toxicity: 0.9}}}}, action: block}}]
""".encode()))
    message = Message(role="user", parts=(Part("hello there", ("messages", 0, "content")),))
    decision = Engine(policy).inspect(Exchange(id="x", direction=Direction.REQUEST, provider="openai",
                                               route="openai_chat", messages=(message,)))
    assert decision.action is Action.BLOCK and decision.findings[0].score > 0.999
