"""The detection benchmark's report (benchmarks/detection/run.py): the by-group table of a
corpus with many groups lists the groups where something was flagged and counts the rest."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "detection"))

import corpora  # noqa: E402
import run  # noqa: E402


def _measured(corpus: corpora.Corpus, flagged: set[str]) -> run.Measured:
    results = {s.id: {"id": s.id, "action": "block" if s.id in flagged else "allow",
                      "rules": ["r"] if s.id in flagged else [], "scores": {}} for s in corpus.samples}
    return run.Measured(corpus, run.Scan(results, 1.0), run.tally(corpus.samples, results), (1.0,), (1.0,), True)


def _run(groups: int, flagged_cheap: set[str], flagged_full: set[str]) -> run.Run:
    samples = tuple(corpora.Sample(f"g{g}/{i}", f"question {i} of group {g}", False, f"g{g:02}")
                    for g in range(groups) for i in range(2))
    corpus = corpora.Corpus("many", "test", "all benign", "eval", samples, len(samples))
    stages = [run.Stage(run.CHEAP, [_measured(corpus, flagged_cheap)]),
              run.Stage(run.WITH_SEMANTIC, [_measured(corpus, flagged_full)])]
    return run.Run(Path("p.yaml"), "cmd", 10, "validation", "machine", 1, stages, ["rule x"], frozenset(), [], [])


def _rows(table: list[str]) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table if line.startswith("| many")]


def test_a_corpus_with_many_groups_lists_only_the_flagged_ones_and_counts_the_rest() -> None:
    table = run._groups_table(_run(30, flagged_cheap={"g3/0"}, flagged_full={"g7/1"}))
    rows = _rows(table)
    assert [row[1] for row in rows] == ["eval g03", "eval g07", "28 other evals: nothing flagged in any stage"]
    assert rows[0][4:6] == ["50.0% (1/2)", "0.0% (0/2)"] and rows[1][4:6] == ["0.0% (0/2)", "50.0% (1/2)"]
    header = next(line for line in table if line.startswith("| corpus"))
    assert all(len(row) == header.count("|") - 1 for row in rows)


def test_a_corpus_with_few_groups_lists_every_group() -> None:
    rows = _rows(run._groups_table(_run(run._MANY_GROUPS, flagged_cheap=set(), flagged_full=set())))
    assert len(rows) == run._MANY_GROUPS and not any("other" in row[1] for row in rows)
