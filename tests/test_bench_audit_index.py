"""benchmarks/bench_audit_index.py runs at a tiny size, writes a sane section into a
RESULTS file and leaves nothing behind. No timing is asserted: how fast is the
benchmark's business, in RESULTS.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_audit_index  # noqa: E402


def test_a_tiny_run_writes_its_section_and_cleans_up(tmp_path: Path, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Proxy overhead (issue 2)\n\nkept as it was\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = ["--records", "2000", "--more", "300", "--rotate-bytes", "300000", "--tmp", str(scratch),
            "--write", str(results)]
    assert bench_audit_index.main(argv) == 0
    assert list(scratch.iterdir()) == []  # the log and its index were deleted

    text = results.read_text()
    assert "## Proxy overhead (issue 2)\n\nkept as it was\n" in text
    section = text[text.index(bench_audit_index.SECTION):]
    assert section == capsys.readouterr().out.strip() + "\n"
    assert "`.venv/bin/python benchmarks/bench_audit_index.py --records 2000 --rotate-bytes 300000`" in section
    assert re.search(r"- Machine: \d+ CPUs", section)
    log = re.search(r"- Log: ([\d,]+) agent-like records .* rotation at 300,000 bytes\), [\d,]+ MB in (\d+) files", section)
    assert log and 2_000 <= int(log[1].replace(",", "")) <= 2_002 and int(log[2]) >= 5
    assert re.search(r"first build [\d.]+ s .*A refresh with nothing new: [\d.]+ ms\. After 30[0-2] more records "
                     r"\([\d.]+ MB\): [\d.]+ s, reading 30\d records", section)

    rows = {match[1]: match for match in re.finditer(
        r"^\| ([^|]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]*) \| ([\d,]*x?) \|$", section, re.M)}
    assert len(rows) == len(bench_audit_index.kinds(("2027-01-01T00:00:00Z", "2027-01-01T01:00:00Z"))) + 1
    for name, row in rows.items():
        assert (row[4] != "") == (name.startswith(("agent (", "text, rare", "stats"))), name  # the scan timed for three
    assert int(rows["text, rare (quokkazine)"][2]) > 0  # the planted token is found
    assert int(rows["stats (per agent and rule)"][2]) == bench_audit_index.AGENTS
    assert "they returned the same records in the same order (checked)" in section
    assert re.search(r"within 3 s once the index is built: slowest .*, [\d.]+ s, \*\*(met|NOT met)\*\*", section)
    assert re.search(r"`agent-firewall audit query LOG --rule violent-suggestion` \([\d,]+ lines printed\) took "
                     r"[\d.]+ s", section)
