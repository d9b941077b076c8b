"""`agent-firewall audit stats | trace | edges` on a real hash-chained log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from firewall.audit import AuditWriter
from tests.unit.test_audit_report import LOG


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firewall.cli", "audit", *args], capture_output=True, text=True,
                          timeout=60)


def test_stats_trace_and_edges_read_a_written_log(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(path)
    for record in LOG:
        writer.write(dict(record))
    writer.close()

    done = cli("stats", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:5] == ["researcher", "2", "1", "1", "50.0%"]
    assert lines[-1] == "rules: harm 2, carries-flagged 1"
    figures = json.loads(cli("stats", str(path), "--json").stdout)
    assert figures["rules"] == {"harm": 2, "carries-flagged": 1}

    done = cli("trace", str(path), "e4")
    assert done.returncode == 0
    assert [line.lstrip().startswith("<- ") for line in done.stdout.splitlines()] == [False, False, False, True, True]
    steps = [json.loads(line)["step"] for line in cli("trace", str(path), "e4", "--json").stdout.splitlines()]
    assert steps == [0, 0, 0, 1, 1]
    missing = cli("trace", str(path), "nope")
    assert missing.returncode == 2 and "no record of exchange nope" in missing.stderr

    edges = cli("edges", str(path)).stdout.splitlines()
    assert edges[1].split()[:6] == ["planner", "->", "researcher", "2", "1", "1"]
