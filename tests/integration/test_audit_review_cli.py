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


def written_log(path: Path, records: list[dict]) -> Path:
    """`records` through the real writer: hash-chained, stamped, as the proxy writes them."""
    writer = AuditWriter(path)
    for record in records:
        writer.write(dict(record))
    writer.close()
    return path


def test_stats_trace_and_edges_read_a_written_log(tmp_path: Path):
    path = written_log(tmp_path / "audit.jsonl", LOG)

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


def test_graph_draws_agents_and_edges_as_dot_and_svg(tmp_path: Path):
    path = written_log(tmp_path / "audit.jsonl", LOG)

    dot = cli("graph", str(path)).stdout
    assert dot.startswith("digraph agents {") and dot.rstrip().endswith("}")
    assert '"planner" -> "researcher" [label="2 req, 1 blocked, 1 flagged", color="#cc0000"' in dot
    assert '"researcher" -> "executor" [label="1 req"];' in dot
    assert '"planner" [label="planner\\n(quarantined)", style="rounded,filled"' in dot

    svg = tmp_path / "agents.svg"
    done = cli("graph", str(path), "--format", "svg", "-o", str(svg))  # .ci/run installs Graphviz
    assert done.returncode == 0, done.stderr
    assert b"<svg" in svg.read_bytes() and b"researcher" in svg.read_bytes()


def test_graph_says_what_is_missing_without_graphviz(tmp_path: Path):
    path = tmp_path / "audit.jsonl"
    AuditWriter(path).close()
    done = subprocess.run([sys.executable, "-m", "firewall.cli", "audit", "graph", str(path), "--format", "png"],
                          capture_output=True, text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert done.returncode == 2 and "needs Graphviz's `dot` on PATH" in done.stderr


def test_query_prints_a_record_whose_fields_are_null(tmp_path: Path):
    # An event record can carry direction, action or exchange as null: a blank, not a traceback.
    path = written_log(tmp_path / "audit.jsonl", [
        {"event": "policy_reload", "direction": None, "action": None, "exchange": None, "agent": None},
    ])
    done = cli("query", str(path), "--no-index")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert line.split()[-1] == "policy_reload" and "None" not in line
