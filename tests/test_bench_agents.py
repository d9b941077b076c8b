"""benchmarks/bench_agents.py runs at a tiny size and its figures are well-formed. No
timing is asserted: how fast is the benchmark's business, in RESULTS.md."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_agents  # noqa: E402

from tests.redis_server import redis_server_binary, running_redis_server  # noqa: E402

TINY = bench_agents.Sizes.tiny()


def well_formed(stat: bench_agents.Stat, calls: int) -> None:
    assert stat.n == calls
    assert all(math.isfinite(value) and value >= 0 for value in (stat.p50, stat.p99, stat.mean))
    assert stat.p50 <= stat.p99


def check_run(run: bench_agents.GuardRun, backend: str) -> None:
    requests = TINY.agents * TINY.rounds
    assert run.backend == backend and run.recorded == TINY.records
    for stat in (run.total, run.admit, run.after):
        well_formed(stat, requests)
    # Agent-like traffic that the guard admits, and lineage finding every quoted response.
    assert run.refused == 0
    assert 0 < run.quoting.n < requests
    assert run.quotes_found == run.quoting.n
    assert run.quoting.n <= run.with_edges <= requests
    assert set(run.matches) == {"50 words, new text", "200 words, new text", "2,000 words, new text",
                                "about 200 words quoting a recorded response"}
    for stat in run.matches.values():
        well_formed(stat, TINY.match_calls)


def test_the_in_process_part_with_the_memory_backend_reports_well_formed_figures() -> None:
    report = bench_agents.measure(TINY, redis_url=None, redis_note="no redis in this test", command="bench_agents.py tiny")
    [run] = report.runs
    check_run(run, "memory")
    assert run.state_mib is None
    assert len(report.identity) == 2
    for stat in report.identity.values():
        well_formed(stat, TINY.identity_calls)
    for stat in report.fingerprints.values():
        well_formed(stat, TINY.match_calls)
    assert bench_agents.RESPONSE_WORDS[0] <= report.mean_response_words <= bench_agents.RESPONSE_WORDS[1]

    section = bench_agents.render(report)
    assert section.startswith(bench_agents.SECTION + "\n")
    assert f"| memory | {TINY.records} | {TINY.agents * TINY.rounds} |" in section
    assert re.search(r"Under 0\.5 ms added per request with the memory backend \(in process, judged on p50\): p50 [\d.]+ ms, "
                     r"p99 [\d.]+ ms, \*\*(met|NOT met)\*\*", section)
    assert "Under 2 ms added per request with the redis backend, server on loopback: not measured (no redis in this test)" \
        in section
    assert "End to end: not measured" in section


def test_the_in_process_part_with_a_real_redis_server_reports_well_formed_figures(tmp_path: Path) -> None:
    redis_server_binary()  # skips with AFW_SKIP_REDIS=1, fails saying how to install it when missing
    with running_redis_server(tmp_path / "redis") as server:
        report = bench_agents.measure(TINY, redis_url=server.url)
    memory, redis = report.runs
    check_run(memory, "memory")
    check_run(redis, "redis")
    assert redis.state_mib is not None and redis.state_mib > 0
    section = bench_agents.render(report)
    assert f"| redis | {TINY.records} | {TINY.agents * TINY.rounds} |" in section
    assert re.search(r"Under 2 ms added per request with the redis backend, server on loopback \(in process, judged on p50\): "
                     r"p50 [\d.]+ ms, p99 [\d.]+ ms, \*\*(met|NOT met)\*\*", section)
    assert "Redis holds the" in section


def test_the_memory_footprint_is_measured_in_fresh_processes_and_explained() -> None:
    mixed, fixed = bench_agents.measure_memory(TINY, cpu=None)
    assert bench_agents.RESPONSE_WORDS[0] <= mixed.words <= bench_agents.RESPONSE_WORDS[1]
    assert fixed.words == bench_agents.FIXED_WORDS
    for memory in (mixed, fixed):
        assert memory.records == TINY.records
        assert memory.rss_before_mib > 0 and memory.rss_after_mib > 0
        assert 0 < memory.buckets <= memory.bucket_members
        assert memory.record_bytes > 0 and memory.bucket_bytes > 0 and memory.table_bytes > 0
    report = bench_agents.measure(TINY, redis_url=None, redis_note="no redis in this test")
    section = bench_agents.render(replace(report, memory=[mixed, fixed]))
    assert f"| {TINY.records} | {bench_agents.FIXED_WORDS} |" in section
    assert re.search(r"10,000 responses of 150 words take \d+ MB \(\d+ MiB\) of resident memory", section)


def test_the_end_to_end_part_measures_latency_and_cpu_through_the_proxy(tmp_path: Path) -> None:
    runs = bench_agents.measure_proxy(TINY, tmp_path, None)
    base, agents = runs
    assert (base.config, agents.config) == ("pass-through, anonymous", "agents, memory state")
    for run in runs:
        assert run.errors == 0
        assert run.requests == TINY.agents * TINY.rounds
        assert run.busy_requests == TINY.agents * TINY.busy_rounds
        assert 0 < run.p50_ms <= run.p99_ms
        # A handful of requests may take less than one clock tick of CPU (/proc counts in ticks): read, not NaN.
        assert math.isfinite(run.cpu_ms) and math.isfinite(run.busy_cpu_ms) and run.busy_rps > 0
    # Requests name no agent without keys: no edges; with them, the quoted teammates are found.
    assert base.edges == 0 and agents.edges > 0
    report = replace(bench_agents.measure(TINY, redis_url=None, redis_note="no redis in this test"), proxy=runs)
    section = bench_agents.render(report)
    assert "| busy: CPU ms per request | added | req/s |" in section
    assert re.search(r"Through the proxy it adds -?[\d.]+ ms at p50 \((within|over) the aim\), and -?[\d.]+ ms of the "
                     r"firewall's CPU per request at concurrency 1, -?[\d.]+ ms with 32 in flight", section)


def test_the_lineage_recall_benchmark_writes_its_section(tmp_path: Path) -> None:
    import lineage_recall

    results_md = tmp_path / "RESULTS.md"
    assert lineage_recall.main(["--placements", "4", "--write", str(results_md)]) == 0
    section = results_md.read_text()
    assert lineage_recall.SECTION in section
    rows = re.findall(r"^\| (\d+) words \| (.+?) \| ([\d.]+)% \|$", section, re.M)
    assert [(int(words), change) for words, change, _ in rows][:2] == [(60, "verbatim"), (60, "3 words changed or inserted")]
    assert len(rows) == len(lineage_recall.CASES)
    assert all(0 <= float(share) <= 100 for _, _, share in rows)
