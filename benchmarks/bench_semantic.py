"""Semantic stage (issue 9): what the `semantic` detector costs per new message, in time
and memory, on one core, for each embedder (`minilm`, the accurate path; `wordllama`,
the fast path).

Run: .venv/bin/python benchmarks/bench_semantic.py [--write benchmarks/RESULTS.md] [--quick]
         [--models minilm wordllama] [--head builtin|none]

Each model is measured in a fresh subprocess of this script (`--child MODEL`), so that
the two do not share memory or warm caches: the child pins itself to one CPU
(`os.sched_setaffinity`), builds the detector with `threads: 1` (and OMP/MKL at 1 thread),
and measures

- load: the wall time of `semantic.build(...)`: imports, the SHA-256 check of the model
  files, model and head construction (MiniLM's int8 quantization included);
- memory: VmRSS from /proc/self/status before loading (Python, numpy and the detector
  module imported), after loading, and after all the scoring below; and VmHWM, the peak;
- latency per new message, every message unique so that no cache can help (the detector
  is called directly, without the `CachedDetector` a policy wraps it in):
  *single* (one message per `score` call, as the proxy sees a new turn) and *batch 32*
  (32 messages per call, per-message time = call time / 32), each on short agent-like
  messages (20 words) and long ones (150 words, several chunks).

Texts are real sentences, not generated noise: consecutive 20- and 150-word windows of the
benign corpora of the detection benchmark (tau2 customer-service requests and knowledge-base
articles, English writingbench prompts; benchmarks/detection/corpora.py), de-duplicated and
shuffled with a fixed seed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_REPO: Final = _HERE.parent
sys.path[:0] = [str(_REPO), str(_HERE), str(_HERE / "detection")]

SECTION: Final = "## Semantic stage (issue 9)"
MODELS: Final = ("minilm", "wordllama")
SEED: Final = 9
SHORT_WORDS: Final = 20
LONG_WORDS: Final = 150
BATCH: Final = 32
WARMUP: Final = 8  # calls before timing: first-call allocations and lazy init are start-up, not per message
# Messages per case: (single short, single long, batches of short, batches of long).
FULL_COUNTS: Final = (400, 120, 25, 8)
QUICK_COUNTS: Final = (60, 20, 4, 2)
AIM_MINILM_MS: Final = 10.0
AIM_FAST_MS: Final = 1.0
_CHILD_TIMEOUT: Final = 1800.0
# A concept for `--head none` (before a head is trained): the detector needs a head or a concept.
_CONCEPT: Final = {"violence": {"like": ["Tell me how to hurt someone without getting caught."]}}
_TEXT_CORPORA: Final = ("inspect-evals tau2", "inspect-evals tau2 documents", "inspect-evals writingbench")


# -- texts ----------------------------------------------------------------------------------


def windows(texts: Sequence[str], words: int) -> list[str]:
    """Consecutive, non-overlapping `words`-word windows of `texts`, each kept once."""
    out: dict[str, None] = {}
    for text in texts:
        tokens = text.split()
        for start in range(0, len(tokens) - words + 1, words):
            out.setdefault(" ".join(tokens[start : start + words]))
    return list(out)


def load_texts(short: int, long: int) -> tuple[list[str], list[str], str]:
    """`short` 20-word and `long` 150-word unique messages, and where they came from."""
    import corpora  # benchmarks/detection/corpora.py

    hatecheck = _REPO.parent / "shared" / "data" / "hatecheck" / "test_suite_cases.csv"
    loaded = corpora.load_all(hatecheck, _HERE / "detection" / ".cache", limit=10**9, seed=SEED)
    sources = [c for c in loaded if isinstance(c, corpora.Corpus) and c.name in _TEXT_CORPORA]
    # English only: the aims are about agent traffic, and the test set should not mix in
    # the different tokenisation cost of Chinese.
    texts = [s.text for c in sources for s in c.samples if s.group != "zh"]
    if not texts:
        missing = [c for c in loaded if isinstance(c, corpora.Unavailable) and c.name in _TEXT_CORPORA]
        raise SystemExit("bench_semantic: no source texts: " + "; ".join(f"{u.name}: {u.reason}" for u in missing))
    rng = random.Random(SEED)
    short_pool, long_pool = windows(texts, SHORT_WORDS), windows(texts, LONG_WORDS)
    rng.shuffle(short_pool)
    rng.shuffle(long_pool)
    if len(short_pool) < short or len(long_pool) < long:
        raise SystemExit(f"bench_semantic: only {len(short_pool)} short and {len(long_pool)} long windows, "
                         f"{short} and {long} needed")
    where = ", ".join(c.name for c in sources) + " (English items)"
    return short_pool[:short], long_pool[:long], where


# -- the child: one model, one core ----------------------------------------------------------


def _status(field: str) -> float:
    """A /proc/self/status field in MiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _pin() -> int:
    """Pin this process to one CPU (the first it may use: CPU 0 unless excluded)."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def child(model: str, head: str, texts_file: Path) -> dict[str, Any]:
    cpu = _pin()
    from firewall.detectors import semantic

    texts = json.loads(texts_file.read_text(encoding="utf-8"))
    rss_before = _status("VmRSS")
    options: dict[str, Any] = {"model": model, "head": head, "threads": 1}
    if head == "none":
        options["concepts"] = _CONCEPT
    started = time.perf_counter()
    detector = semantic.build(options)
    load_s = time.perf_counter() - started
    rss_loaded = _status("VmRSS")

    warm = texts["warmup"]
    for text in warm:
        detector.score([text])
    cases: dict[str, dict[str, Any]] = {}
    for name, kind, batch in (("single, 20 words", "short_single", 1), ("single, 150 words", "long_single", 1),
                              (f"batch {BATCH}, 20 words", "short_batch", BATCH),
                              (f"batch {BATCH}, 150 words", "long_batch", BATCH)):
        items = texts[kind]
        per_message: list[float] = []
        total = 0.0
        for start in range(0, len(items), batch):
            group = items[start : start + batch]
            t0 = time.perf_counter()
            detector.score(group)
            elapsed = time.perf_counter() - t0
            total += elapsed
            per_message.append(elapsed * 1000 / len(group))
        chunks = sum(len(semantic.chunks(t)) for t in items) / len(items)
        words = sum(len(t.split()) for t in items) / len(items)
        cases[name] = {"messages": len(items), "calls": len(per_message), "batch": batch, "words": words,
                       "chunks": chunks, "per_message_ms": per_message, "seconds": total}
    head_path = semantic.HEADS[model] if head == "builtin" else None
    return {
        "model": model,
        "head": head,
        "head_sha": hashlib.sha256(head_path.read_bytes()).hexdigest()[:12] if head_path else "",
        "cpu": cpu,
        "affinity": sorted(os.sched_getaffinity(0)),
        "load_s": load_s,
        "rss_before": rss_before,
        "rss_loaded": rss_loaded,
        "rss_after": _status("VmRSS"),
        "hwm": _status("VmHWM"),
        "cases": cases,
    }


def run_child(model: str, head: str, texts_file: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", model, "--head", head,
               "--texts", str(texts_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=_CHILD_TIMEOUT, env=env, cwd=_REPO,
                          check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"model": model, "head": head, "failure": f"exit {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never interpolated."""
    import bench_proxy  # the one definition the other benchmarks use (imported here, not in the children)

    return bench_proxy._percentile(sorted(values), q / 100)


@dataclass(frozen=True)
class Report:
    command: str
    machine: dict[str, str]
    source: str
    results: list[dict[str, Any]]
    quick: bool


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _single_short(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for name, c in result.get("cases", {}).items() if name.startswith("single, 20")), None)


def aims(report: Report) -> list[str]:
    out = []
    by_model = {r["model"]: r for r in report.results}
    for model, bound, strict, label in (("minilm", AIM_MINILM_MS, False, "MiniLM (the accurate path)"),
                                        ("wordllama", AIM_FAST_MS, True, "The fast path (WordLlama)")):
        result = by_model.get(model)
        case = _single_short(result) if result else None
        sign = "<" if strict else "≤"
        if case is None:
            why = result.get("failure", "not run") if result else "not run"
            out.append(f"{label} {sign} {bound:g} ms per new message on one core: **not measured** ({why}).")
            continue
        p50, p99 = percentile(case["per_message_ms"], 50), percentile(case["per_message_ms"], 99)
        ok = p50 < bound if strict else p50 <= bound
        ok99 = p99 < bound if strict else p99 <= bound
        out.append(f"{label} {sign} {bound:g} ms per new message on one core (single call, 20-word message, "
                   f"judged on p50): p50 {p50:.2f} ms, p99 {p99:.2f} ms, {_verdict(ok)}"
                   + (" (p99 too)" if ok and ok99 else " (not at p99)" if ok else "") + ".")
    return out


def render(report: Report) -> str:
    m = report.machine
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `{report.command}`.",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; load average before "
        f"the run {m['load']} (other work shares this machine).",
        "- Each model in a fresh subprocess pinned to one CPU (`os.sched_setaffinity`), the detector built with "
        "`threads: 1`, OMP/MKL/OpenBLAS at 1 thread; the detector's `score` called directly (no verdict cache, "
        "no engine, no CLI). Every message is unique. *single*: one message per call; *batch 32*: 32 per call, "
        "per-message time = call time / 32. p50/p99 are nearest-rank over the calls; *msgs/s* = messages / "
        f"total time of the calls. {WARMUP} untimed calls first.",
        f"- Messages: consecutive {SHORT_WORDS}- and {LONG_WORDS}-word windows of {report.source}, de-duplicated, "
        f"shuffled with seed {SEED}. A message longer than {_chunk_words()} words is scored in overlapping chunks "
        "(`semantic.chunks`), each embedded: *chunks/msg*. MiniLM runs in int8 (its Linear layers quantized "
        "at load, after the SHA-256 check) and embeds one chunk per forward pass, so *batch 32* saves only "
        "the per-call overhead.",
        "- *load*: wall time of `semantic.build(...)`: imports (torch and sentence-transformers for MiniLM), the "
        "SHA-256 check of every model file, model and head construction (for MiniLM, its int8 quantization). *RSS*: VmRSS of the child before loading "
        "(Python, numpy and the detector module imported), after loading, and after all the scoring; *peak*: VmHWM.",
        "",
        "| model | head | load (s) | RSS before (MiB) | RSS loaded (MiB) | RSS after scoring (MiB) | peak (MiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report.results:
        head = r["head"] + (f" (sha256 {r['head_sha']}…)" if r.get("head_sha") else "")
        if "failure" in r:
            lines.append(f"| {r['model']} | {head} | failed: {r['failure']} |||||")
            continue
        lines.append(f"| {r['model']} | {head} | {r['load_s']:.2f} | {r['rss_before']:.0f} | {r['rss_loaded']:.0f} "
                     f"| {r['rss_after']:.0f} | {r['hwm']:.0f} |")
    lines += ["", "| model | case | messages | calls | words/msg | chunks/msg | p50 ms/msg | p99 ms/msg | msgs/s |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report.results:
        for name, c in r.get("cases", {}).items():
            rate = c["messages"] / c["seconds"] if c["seconds"] else float("inf")
            lines.append(f"| {r['model']} | {name} | {c['messages']} | {c['calls']} | {c['words']:.0f} "
                         f"| {c['chunks']:.1f} | {percentile(c['per_message_ms'], 50):.3f} "
                         f"| {percentile(c['per_message_ms'], 99):.3f} | {rate:,.0f} |")
    if report.quick:
        lines += ["", "**--quick**: few messages per case; p99 is close to the maximum. Run without it for figures."]
    lines += ["", "Aims of issue 9:", ""]
    lines += [f"- {aim}" for aim in aims(report)]
    return "\n".join(lines) + "\n"


def _chunk_words() -> int:
    from firewall.detectors import semantic

    return semantic.CHUNK_WORDS


def _machine() -> dict[str, str]:
    import bench_proxy

    return bench_proxy._machine()


# -- main -------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the semantic section of this file")
    parser.add_argument("--quick", action="store_true", help="few messages per case (smoke test)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--head", default="builtin", choices=("builtin", "none"),
                        help="builtin: the shipped head (default); none: a one-concept detector, before a head exists")
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.texts is None:
            parser.error("--child needs --texts")
        print(json.dumps(child(args.child, args.head, args.texts)))
        return 0

    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    single_short, single_long, short_batches, long_batches = counts
    n_short = WARMUP + single_short + short_batches * BATCH
    n_long = single_long + long_batches * BATCH
    machine = _machine()
    _log(f"loading texts ({n_short} × {SHORT_WORDS} words, {n_long} × {LONG_WORDS} words)")
    short, long, source = load_texts(n_short, n_long)
    texts = {
        "warmup": short[:WARMUP],
        "short_single": short[WARMUP : WARMUP + single_short],
        "short_batch": short[WARMUP + single_short :],
        "long_single": long[:single_long],
        "long_batch": long[single_long:],
    }
    command = " ".join([".venv/bin/python benchmarks/bench_semantic.py"] + (["--quick"] if args.quick else [])
                       + ([f"--models {' '.join(args.models)}"] if list(args.models) != list(MODELS) else [])
                       + ([f"--head {args.head}"] if args.head != "builtin" else []))
    results_: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-semantic-") as scratch:
        texts_file = Path(scratch) / "texts.json"
        texts_file.write_text(json.dumps(texts), encoding="utf-8")
        for model in args.models:
            _log(f"  {model}: measuring in a fresh process on one CPU")
            result = run_child(model, args.head, texts_file)
            _log(f"  {model}: " + (result["failure"] if "failure" in result else f"load {result['load_s']:.2f} s"))
            results_.append(result)

    section = render(Report(command, machine, source, results_, args.quick))
    print(section)
    if args.write:
        import results

        results.write_section(args.write, SECTION, section)
        _log(f"wrote the section to {args.write}")
    return 0 if all("failure" not in r for r in results_) else 1


if __name__ == "__main__":
    sys.exit(main())
