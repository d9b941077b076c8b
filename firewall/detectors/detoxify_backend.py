"""The `detoxify` toxicity backend: detoxify's own `Detoxify` class over a local checkpoint.

Nothing is fetched at run time. The policy names a checkpoint file (detoxify's format: a
dict with `config` and `state_dict`) and a local Hugging Face directory holding the
model's config.json and tokenizer files. Before handing the checkpoint to detoxify we
read it ourselves, for three reasons detoxify does not cover:

- detoxify unpickles with `weights_only=False`, so a checkpoint could run code; we load
  with `weights_only=True` (tensors and plain containers only) and give detoxify an
  in-memory copy of what that produced;
- detoxify always loads a config by the checkpoint's `model_type` (a hub name such as
  "bert-base-uncased" in its released checkpoints), which fails offline; we point it at
  the local directory instead;
- transformers silently initialises at random any weight the checkpoint lacks; we check
  that every weight of the loaded model came from the checkpoint.

torch, transformers and detoxify are imported only when a detector is built, so the base
install does not need them (`pip install 'agent-firewall[detoxify]'`).
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from firewall.detectors.base import DetectorError, DetectorResult
from firewall.detectors.deadline import Deadline, timeout_option

__all__ = ["DetoxifyToxicity", "build"]

_REQUIRED = ("checkpoint", "huggingface_config_path")
_OPTIONS = frozenset((*_REQUIRED, "device", "timeout"))
# Texts per forward pass: bounds peak memory (activations grow with batch x length).
_MAX_BATCH = 32
# detoxify's own renaming of class names, so we can tell whether "toxicity" will exist.
_DETOXIFY_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}


def build(options: Mapping[str, Any]) -> DetoxifyToxicity:
    """Factory for `build_detector`: options {checkpoint, huggingface_config_path, device?,
    timeout? (seconds one batch may take; unbounded by default)}."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"toxicity backend 'detoxify': unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(_OPTIONS))}"
        )
    missing = [key for key in _REQUIRED if key not in options]
    if missing:
        raise ValueError(f"toxicity backend 'detoxify': missing required option(s) {', '.join(missing)}")
    timeout = timeout_option("toxicity backend 'detoxify'", options)
    for key in _OPTIONS & set(options) - {"timeout"}:
        if not isinstance(options[key], (str, os.PathLike)):
            raise ValueError(f"toxicity backend 'detoxify': option {key!r} must be a string, got {options[key]!r}")
    detector = DetoxifyToxicity(
        checkpoint=options["checkpoint"],
        huggingface_config_path=options["huggingface_config_path"],
        device=str(options.get("device", "cpu")),
    )
    if timeout is not None:
        detector.deadline = Deadline("toxicity", timeout)
    return detector


class DetoxifyToxicity:
    """Per-class probabilities from a detoxify model: {"toxicity": p, "threat": p, ...}.

    The labels are the checkpoint's classes under detoxify's standard names; "toxicity"
    is always among them (checked at load). One model serves all callers, one batch at a
    time: neither transformers tokenizers nor models promise thread safety, and two
    forward passes at once would only fight over the same CPU cores.
    """

    name = "toxicity"
    costly = True  # the engine runs it after the cheap detectors, only where still needed
    deadline: Deadline | None = None  # the policy's `timeout`, when it sets one

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        huggingface_config_path: str | os.PathLike[str],
        device: str = "cpu",
    ) -> None:
        checkpoint_path = Path(checkpoint)
        hf_dir = Path(huggingface_config_path)
        if not checkpoint_path.is_file():
            raise ValueError(f"toxicity backend 'detoxify': checkpoint file not found: {checkpoint_path}")
        if not (hf_dir / "config.json").is_file():
            raise ValueError(
                f"toxicity backend 'detoxify': huggingface_config_path must be a local Hugging Face "
                f"directory with config.json and tokenizer files; not found: {hf_dir / 'config.json'}"
            )
        torch, detoxify = _import_extra()
        try:
            torch_device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"toxicity backend 'detoxify': invalid device {device!r}: {exc}") from exc

        state = _read_checkpoint(torch, checkpoint_path, hf_dir)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        try:
            model = detoxify.Detoxify(checkpoint=buffer, device=torch_device, huggingface_config_path=str(hf_dir))
        except (OSError, RuntimeError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(
                f"toxicity backend 'detoxify': cannot load {checkpoint_path} with {hf_dir}: {exc}"
            ) from exc
        _check_weights_loaded(model.model, state["state_dict"], checkpoint_path)
        _cap_input_length(model)

        self._model = model
        self._lock = threading.Lock()
        self.labels: tuple[str, ...] = tuple(model.class_names)

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        if self.deadline is not None and texts:
            return self.deadline.run(self._score, texts)
        return self._score(texts)

    def _score(self, texts: Sequence[str]) -> list[DetectorResult]:
        if not texts:
            return []
        # Batch texts of similar length together: every text in a pass is padded to the
        # longest, so sorting by length cuts the wasted work on mixed batches.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list[DetectorResult | None] = [None] * len(texts)
        with self._lock:
            for start in range(0, len(order), _MAX_BATCH):
                chunk = order[start : start + _MAX_BATCH]
                try:
                    raw = self._model.predict([texts[i] for i in chunk])
                except Exception as exc:  # torch/tokenizer errors have no common base
                    raise DetectorError(f"toxicity backend 'detoxify' failed: {exc}") from exc
                for position, index in enumerate(chunk):
                    results[index] = DetectorResult(
                        scores={label: _at(values, position) for label, values in raw.items()}
                    )
        return results  # type: ignore[return-value]  # every slot was filled above


def _at(values: Any, position: int) -> float:
    # detoxify squeezes a one-text batch, so each class then holds a float, not a list.
    return float(values[position] if isinstance(values, list) else values)


def _import_extra() -> tuple[Any, Any]:
    try:
        import detoxify
        import torch
    except ImportError as exc:
        raise ImportError(
            f"toxicity backend 'detoxify' needs torch, transformers and detoxify "
            f"(missing: {exc.name}); install agent-firewall[detoxify]"
        ) from exc
    return torch, detoxify


def _read_checkpoint(torch: Any, path: Path, hf_dir: Path) -> dict[str, Any]:
    """Load and check a detoxify checkpoint; return it with model_type pointing at hf_dir."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign objects, others for corrupt files
        raise ValueError(
            f"toxicity backend 'detoxify': cannot read checkpoint {path} as tensors and plain "
            f"data (objects that need code to unpickle are refused): {exc}"
        ) from exc

    def fail(why: str) -> ValueError:
        return ValueError(f"toxicity backend 'detoxify': checkpoint {path} {why}")

    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise fail("is not a detoxify checkpoint (a dict with 'config' and 'state_dict')")
    try:
        args = dict(loaded["config"]["arch"]["args"])
        classes = list(loaded["config"]["dataset"]["args"]["classes"])
        model_name, tokenizer_name, num_classes = args["model_name"], args["tokenizer_name"], args["num_classes"]
    except (KeyError, TypeError) as exc:
        raise fail(f"lacks config.arch.args.{{model_name, tokenizer_name, num_classes}} or config.dataset.args.classes ({exc!r})") from exc
    # detoxify looks both names up on the transformers module: keep that to model classes.
    if not (isinstance(model_name, str) and model_name.endswith("ForSequenceClassification")):
        raise fail(f"names model {model_name!r}; expected a transformers *ForSequenceClassification class")
    if not (isinstance(tokenizer_name, str) and tokenizer_name.endswith(("Tokenizer", "TokenizerFast"))):
        raise fail(f"names tokenizer {tokenizer_name!r}; expected a transformers *Tokenizer class")
    if len(classes) != num_classes:
        raise fail(f"has {len(classes)} class names for num_classes={num_classes}")
    if "toxicity" not in {_DETOXIFY_RENAMES.get(c, c) for c in classes}:
        raise fail(f"has no 'toxic' or 'toxicity' class among {classes}")

    # detoxify builds the model from hf_dir's config.json, not from num_classes: a
    # mismatch would only surface as a shape error deep in transformers.
    hf_config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    num_labels = len(hf_config["id2label"]) if "id2label" in hf_config else hf_config.get("num_labels", 2)
    if num_labels != num_classes:
        raise ValueError(
            f"toxicity backend 'detoxify': {hf_dir / 'config.json'} has {num_labels} labels but "
            f"checkpoint {path} has {num_classes} classes; set num_labels={num_classes} there"
        )
    config = dict(loaded["config"])
    config["arch"] = {**config["arch"], "args": {**args, "model_type": str(hf_dir)}}
    return {"config": config, "state_dict": loaded["state_dict"]}


def _check_weights_loaded(model: Any, state_dict: Mapping[str, Any], path: Path) -> None:
    """Fail if transformers filled any weight at random instead of from the checkpoint."""
    absent = sorted(key for key in model.state_dict() if key not in state_dict)
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ValueError(
            f"toxicity backend 'detoxify': checkpoint {path} lacks weights the model needs ({shown}); "
            f"they would be random"
        )


def _cap_input_length(model: Any) -> None:
    """Make truncation stop at what the model's position embeddings can take.

    A tokenizer saved without model_max_length reports ~1e30, so detoxify's
    `truncation=True` would let a long message through and crash the forward pass.
    """
    config = model.model.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return
    if "roberta" in str(getattr(config, "model_type", "")):
        limit -= 2  # RoBERTa's positions start after the padding index
    if model.tokenizer.model_max_length > limit:
        model.tokenizer.model_max_length = limit
