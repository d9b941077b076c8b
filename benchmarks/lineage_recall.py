"""How often lineage finds a recorded response that another agent's request carries:
verbatim or with words changed, at a random place in other text. The figures quoted in
firewall/agents/lineage.py's module doc come from here.

Run: .venv/bin/python benchmarks/lineage_recall.py [--placements 300] [--sample 3] [--write benchmarks/RESULTS.md]

Each case records one response of `words` words under agent "a" among five 100-word
distractors, then asks `match` for agent "b" with a request made of up to 600 words of
other text, the response with `edits` words changed or inserted, and up to 100 more
words; a case's figure is the share of placements in which the match names the response.
Texts are English-like (bench_agents.Texts, a fixed seed), so the shingles of the quote
and of the text around it share common words, as real text does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

_HERE: Final = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent), str(_HERE)]  # run as a plain script from a checkout

import results  # noqa: E402  (benchmarks/results.py)
from bench_agents import SEED, Texts  # noqa: E402

from firewall.agents.lineage import LineageIndex, LineageSpec  # noqa: E402
from firewall.agents.state import MemoryState  # noqa: E402

SECTION: Final = "## Lineage recall (issue 5)"
# (words in the recorded response, words changed or inserted in the quote)
CASES: Final = ((60, 0), (60, 3), (60, 5), (30, 2), (20, 0), (20, 1), (12, 0))


async def recall(words: int, edits: int, placements: int, spec: LineageSpec, texts: Texts, rng: random.Random) -> float:
    found = 0
    for n in range(placements):
        lineage = LineageIndex(MemoryState(), spec)
        response = texts.words(words).split()
        await lineage.record("a", f"ex_{n}", " ".join(response))
        for d in range(5):
            await lineage.record("c", f"dx_{n}_{d}", texts.words(100))
        quote = list(response)
        for _ in range(edits):
            at = rng.randrange(len(quote))
            if rng.random() < 0.5:
                quote[at] = f"zq{rng.randrange(10**6)}"  # changed
            else:
                quote.insert(at, f"zx{rng.randrange(10**6)}")  # inserted
        before, after = rng.randrange(0, 600), rng.randrange(0, 100)
        request = " ".join(part for part in (texts.words(before) if before else "", " ".join(quote),
                                             texts.words(after) if after else "") if part)
        found += any(match.record.agent == "a" for match in await lineage.match("b", request))
    return found / placements


async def run(placements: int, spec: LineageSpec) -> list[tuple[int, int, float]]:
    texts, rng = Texts(SEED + 20), random.Random(SEED + 21)
    return [(words, edits, await recall(words, edits, placements, spec, texts, rng)) for words, edits in CASES]


def render(found: Sequence[tuple[int, int, float]], placements: int, spec: LineageSpec, command: str) -> str:
    lines = [
        SECTION, "",
        f"Measured {datetime.date.today().isoformat()} with `{command}`: how often `LineageIndex.match` names a "
        f"recorded response that another agent's request carries, out of {placements} random placements a case "
        "(the response recorded among five 100-word distractors, then hidden, verbatim or with words changed or "
        "inserted, at a random place in up to 600 words of other English-like text). Lineage settings: "
        f"`shingle: {spec.shingle}`, `sample: {spec.sample}`, `min_similarity: {spec.min_similarity:g}`, "
        f"`min_shared_shingles: {spec.min_shared_shingles}`.", "",
        "| recorded response | in the request | found |",
        "| ---: | --- | ---: |",
    ]
    for words, edits, share in found:
        change = f"{edits} word{'s' if edits > 1 else ''} changed or inserted" if edits else "verbatim"
        lines.append(f"| {words} words | {change} | {share:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--placements", type=int, default=300, help="random placements per case")
    parser.add_argument("--sample", type=int, default=LineageSpec().sample, help="lineage.sample to try")
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the lineage recall section of this file")
    args = parser.parse_args(argv)
    spec = LineageSpec(sample=args.sample)
    command = " ".join([".venv/bin/python benchmarks/lineage_recall.py",
                        *([f"--placements {args.placements}"] if args.placements != 300 else []),
                        *([f"--sample {args.sample}"] if args.sample != LineageSpec().sample else [])])
    section = render(asyncio.run(run(args.placements, spec)), args.placements, spec, command)
    print(section)
    if args.write:
        results.write_section(args.write, SECTION, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
