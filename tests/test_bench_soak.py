"""benchmarks/bench_soak.py runs small and its checks hold: every response checked, every
exchange's audit records present, no blocked or redacted text delivered. How fast is the
benchmark's business, in RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_soak  # noqa: E402


def test_a_small_soak_delivers_nothing_blocked_and_loses_no_record(tmp_path: Path) -> None:
    results_md = tmp_path / "RESULTS.md"
    assert bench_soak.main(["--requests", "200", "--warmup", "40", "--concurrency", "8", "--write", str(results_md)]) == 0
    section = results_md.read_text()
    assert bench_soak.SECTION in section
    for check in ("| unexpected statuses or errors | 0 |", "| blocked or redacted text delivered | 0 |",
                  "| exchanges missing an audit record | 0 of 240 |"):
        assert check in section
    assert "verified" in section and all(kind in section for kind in bench_soak.KINDS)
