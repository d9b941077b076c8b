"""Throughput of the v1 detectors on HateCheck texts: messages/s and µs per message.

Run: .venv/bin/python benchmarks/bench_detectors.py [--repeat N] [--csv PATH]
Prints a markdown table. Single = one `score([text])` call per message; batched =
`score(32 texts)` calls. CachedDetector rows show a cold pass (all misses) and a warm
pass (all hits) over the same texts.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))  # run as a plain script from a checkout, installed or not

from firewall.detectors import CachedDetector, Detector, EmbeddedToxicity, PatternSet  # noqa: E402

_HATECHECK = "data/hatecheck/test_suite_cases.csv"
BATCH = 32

LISTS: dict[str, list[str]] = {
    "violent_acts": ["murder", "kill*", "stab", "poison*", "strangle", "shoot", "behead",
                     "slaughter", "massacre", "execute", "beat up", "torture", "lynch",
                     "burn alive", "drown"],
    "weapons": ["gun", "knife", "rifle", "bomb*", "grenade", "machete", "explosive*",
                "ammunition", "pistol", "detonator"],
    "slurs_placeholder": ["scum", "vermin", "parasite*", "cockroach*", "subhuman", "filth",
                          "animals", "trash", "plague", "disease"],
    "self_harm": ["suicide", "self harm", "cut myself", "overdose", "end it all",
                  "hang myself", "jump off", "no reason to live"],
    "exfiltration": ["api key", "password", "secret key", "private key", "ssh key",
                     "credentials", "access token"],
}
REGEXES: dict[str, str] = {
    "aws_key": r"AKIA[0-9A-Z]{16}",
    "github_token": r"gh[pousr]_[A-Za-z0-9]{36}",
    "openai_key": r"sk-[A-Za-z0-9_-]{20,}",
    "email": r"(?i)[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "credit_card": r"\b(?:\d[ -]?){13,16}\b",
    "us_ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "jwt": r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
    "private_key": r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----",
    "url": r"(?i)https?://[^\s]+",
}


def _texts(path: str | None) -> list[str]:
    shared = [_REPO.parent / "shared", Path("/work/shared")]
    candidates = [Path(path)] if path else [root / _HATECHECK for root in shared]
    for candidate in candidates:
        if candidate.exists():
            with candidate.open(newline="", encoding="utf-8") as f:
                return [row["test_case"] for row in csv.DictReader(f)]
    looked = ", ".join(str(c) for c in candidates)
    raise SystemExit(f"HateCheck CSV not found; pass --csv (looked in {looked})")


def _time(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _single(detector: Detector, texts: Sequence[str]) -> Callable[[], object]:
    return lambda: [detector.score([t]) for t in texts]


def _batched(detector: Detector, texts: Sequence[str]) -> Callable[[], object]:
    return lambda: [detector.score(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]


def _row(name: str, mode: str, seconds: float, n: int) -> str:
    return f"| {name} | {mode} | {n / seconds:,.0f} | {seconds / n * 1e6:.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    parser.add_argument("--csv", help="path to HateCheck test_suite_cases.csv")
    args = parser.parse_args()

    texts = _texts(args.csv)
    n = len(texts)
    load_start = time.perf_counter()
    toxicity = EmbeddedToxicity()
    load_seconds = time.perf_counter() - load_start
    patterns = PatternSet(LISTS, REGEXES)
    terms = sum(len(v) for v in LISTS.values())

    rows = [
        _row("EmbeddedToxicity", "single", _time(_single(toxicity, texts), args.repeat), n),
        _row("EmbeddedToxicity", f"batch {BATCH}",
             _time(_batched(toxicity, texts), args.repeat), n),
        _row(f"PatternSet ({terms} terms, {len(REGEXES)} regexes)", "single",
             _time(_single(patterns, texts), args.repeat), n),
        _row(f"PatternSet ({terms} terms, {len(REGEXES)} regexes)", f"batch {BATCH}",
             _time(_batched(patterns, texts), args.repeat), n),
    ]
    cold = min(_time(_batched(CachedDetector(toxicity), texts), 1) for _ in range(args.repeat))
    warm_cache = CachedDetector(toxicity)
    _batched(warm_cache, texts)()
    rows.append(_row("CachedDetector(EmbeddedToxicity)", f"batch {BATCH}, cold", cold, n))
    rows.append(_row("CachedDetector(EmbeddedToxicity)", f"batch {BATCH}, warm",
                     _time(_batched(warm_cache, texts), args.repeat), n))

    avg_chars = sum(map(len, texts)) / n
    print(f"{n} HateCheck texts (mean {avg_chars:.0f} chars), best of {args.repeat}; "
          f"model load {load_seconds:.2f} s\n")
    print("| detector | mode | messages/s | µs/message |")
    print("| --- | --- | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
