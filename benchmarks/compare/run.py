"""Compared with the alternatives (issue 10): agent-firewall against mitmproxy and the LiteLLM
proxy, history scaling, detector cost, and scale-out over Redis, in one run on one machine.

Run: .venv/bin/python benchmarks/compare/run.py [--quick] [--write benchmarks/RESULTS.md]
     [--skip litellm,scaleout,...]

Parts (each writes a subsection of "## Compared with the alternatives (issue 10)"):
 1. side by side: direct, agent-firewall (passthrough and default policies), mitmproxy 11.0
    reverse mode with a no-op addon, LiteLLM proxy pass-through (installed here, into
    benchmarks/compare/.venv-litellm): requests/s at concurrency 1 and 32, added p50/p99,
    TTFT at 1 and 200 streams, VmRSS, as ratios to direct;
 2. history scaling: a conversation from 1 to 200 turns through the default policy;
 3. detector cost: messages/s per detector of the default policy and for the whole policy;
 4. scale-out: 1, 2 and 4 firewalls on one redis-server behind nginx, and quarantine held
    across replicas;
 5. a written comparison, from the peers' documentation.

The process machinery (fake upstream, firewall start, CPU pinning, load generators, the
machine line) is bench_proxy.py's and bench_stream.py's, imported, not copied. Every process
started here is stopped at the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # this folder, then benchmarks/ (bench_proxy, results)

import bench_proxy  # noqa: E402
import bench_stream  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
import results  # noqa: E402
import scaleout  # noqa: E402
from bench_proxy import DEFAULT_POLICY, PASSTHROUGH, Layout, LoadResult, _Children, _free_port  # noqa: E402
from history import HistorySummary, summarise  # noqa: E402

BENCH_PROXY: Final = Path(bench_proxy.__file__).resolve()
BENCH_STREAM: Final = Path(bench_stream.__file__).resolve()
SELF: Final = Path(__file__).resolve()
PARTS: Final = ("peers", "litellm", "mitmproxy", "history", "detectors", "scaleout")


@dataclass(frozen=True, slots=True)
class Bounds:
    seconds: float
    max_requests: int
    warmup_seconds: float
    warmup_requests: int
    streams: dict[int, int]
    warmup_streams: dict[int, int]
    stream_seconds: float
    turns: int
    conversations: int
    detector_budget: float
    detector_texts: int
    scale_seconds: float

    @classmethod
    def make(cls, quick: bool) -> Bounds:
        if quick:
            return cls(seconds=1.5, max_requests=500, warmup_seconds=0.5, warmup_requests=50,
                       streams={1: 10, 200: 200}, warmup_streams={1: 2, 200: 50}, stream_seconds=30.0,
                       turns=200, conversations=1, detector_budget=0.5, detector_texts=2_000, scale_seconds=2.0)
        return cls(seconds=8.0, max_requests=50_000, warmup_seconds=1.5, warmup_requests=500,
                   streams={1: 50, 200: 600}, warmup_streams={1: 5, 200: 200}, stream_seconds=60.0,
                   turns=200, conversations=5, detector_budget=3.0, detector_texts=20_000, scale_seconds=8.0)

    def describe(self) -> str:
        return (f"each non-streamed load: warm-up up to {self.warmup_requests} requests or {self.warmup_seconds:g} s, "
                f"then up to {self.max_requests:,} requests or {self.seconds:g} s; streams: {self.streams[1]} one "
                f"after another and {self.streams[200]} with 200 in flight, after {self.warmup_streams[1]} and "
                f"{self.warmup_streams[200]} warm-up streams; history: {self.conversations} conversation(s) of "
                f"{self.turns} turns; detectors: up to {self.detector_budget:g} s per row; scale-out: "
                f"{self.scale_seconds:g} s per process count")


# -- part 1: side by side ----------------------------------------------------------------------


def _tested_pid(watch: Sequence[str]) -> int:
    return int(next(w.split("=", 1)[1] for w in watch if w.startswith("tested=")))


def _non_stream(children: _Children, layout: Layout, tmp: Path, tag: str, port: int, watch: Sequence[str],
                concurrency: int, b: Bounds) -> LoadResult:
    raw = bench_proxy.run_loadgen(
        children, layout, tmp, tag, BENCH_PROXY,
        ["--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--concurrency", str(concurrency),
         "--max-requests", str(b.max_requests), "--seconds", str(b.seconds),
         "--warmup-requests", str(b.warmup_requests), "--warmup-seconds", str(b.warmup_seconds), *watch],
        timeout=b.seconds + b.warmup_seconds + 120)
    result = LoadResult(**raw)
    if result.errors:
        raise SystemExit(f"{tag}: {result.errors} requests failed: {result.statuses}")
    return result


def _streams(children: _Children, layout: Layout, tmp: Path, tag: str, port: int, watch: Sequence[str],
             concurrency: int, b: Bounds) -> bench_stream.LoadResult:
    raw = bench_proxy.run_loadgen(
        children, layout, tmp, tag, BENCH_STREAM,
        ["--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--concurrency", str(concurrency),
         "--max-streams", str(b.streams[concurrency]), "--warmup-streams", str(b.warmup_streams[concurrency]),
         "--seconds", str(b.stream_seconds), *watch],
        timeout=2 * b.stream_seconds + 120)
    result = bench_stream.LoadResult(**{**raw, "streams": [bench_stream.StreamTiming(**s) for s in raw["streams"]]})
    # Whole text and 200 for every stream. The number of events may differ from the
    # upstream's (a proxy may re-chunk), so it is reported, not checked.
    bad = [s for s in result.streams if s.status != 200 or s.chars != len(bench_stream.REPLY_TEXT)]
    if bad or not result.streams:
        first = bad[0] if bad else None
        raise SystemExit(f"{tag}: {len(bad)} of {len(result.streams)} streams not whole (first: {first})")
    return result


def _one_config(children: _Children, layout: Layout, tmp: Path, b: Bounds, config: str,
                kind: str) -> report.PeerResult:
    tag = config.replace(" ", "-")
    policy = {"passthrough": PASSTHROUGH, "default": DEFAULT_POLICY}.get(kind)
    print(f"[1] {config} ...", flush=True)
    # The upstream shares the load generator's core in every run, direct included (as in
    # bench_stream), so the runs differ only by the proxy on its own core.
    with bench_proxy.servers(children, layout, tmp, tag, policy, upstream_cpu=layout.load_cpu) as running:
        port, watch = running.port, list(running.watch)
        if kind in ("mitmproxy", "litellm"):
            upstream_pid = _tested_pid(watch)
            port = _free_port()
            start = peers.start_mitmproxy if kind == "mitmproxy" else peers.start_litellm
            proc = start(children, layout, tmp, tag, running.upstream_port, port)
            watch = ["--watch", f"tested={proc.pid}", "--watch", f"upstream={upstream_pid}"]
        peers.check_answers(port, config)
        pid = _tested_pid(watch)
        rss: list[int] = []
        c1 = _non_stream(children, layout, tmp, f"{tag}-c1", port, watch, 1, b)
        rss.append(peers.rss_kib(pid))
        c32 = _non_stream(children, layout, tmp, f"{tag}-c32", port, watch, 32, b)
        rss.append(peers.rss_kib(pid))
        bench_stream._script_upstream(running.upstream_port)
        s1 = _streams(children, layout, tmp, f"{tag}-s1", port, watch, 1, b)
        rss.append(peers.rss_kib(pid))
        s200 = _streams(children, layout, tmp, f"{tag}-s200", port, watch, 200, b)
        rss.append(peers.rss_kib(pid))
    records = None
    if policy is not None:
        from firewall.audit import verify

        verified = verify(running.audit_log)
        # The readiness check's one request, then every request and stream: one request
        # record and one response (or end-of-stream) record each; a request the policy
        # blocked has its request record only.
        expected = 2 * (1 + c1.total + c32.total + s1.total + s200.total) - blocked(c1) - blocked(c32)
        if not verified.ok or verified.records != expected:
            raise SystemExit(f"{config}: audit log {running.audit_log}: {verified.records} records, expected {expected}, "
                             f"chain {'intact' if verified.ok else 'BROKEN'}")
        records = verified.records
    ttft = [sorted(1000 * s.ttft for s in r.streams if s.ttft is not None) for r in (s1, s200)]
    events = statistics.median(len(s.content) for s in (*s1.streams, *s200.streams))
    result = report.PeerResult(config=config, c1=c1, c32=c32, ttft1_ms=ttft[0], ttft200_ms=ttft[1],
                               events_per_stream=events, rss_mib=max(rss) / 1024, audit_records=records)
    print(f"    c1 {c1.rps:,.0f} req/s p50 {c1.p50_ms:.2f} ms | c32 {c32.rps:,.0f} req/s p50 {c32.p50_ms:.2f} ms | "
          f"TTFT p50 {report._p50(ttft[0]):.1f} / {report._p50(ttft[1]):.1f} ms | RSS {max(rss) / 1024:.0f} MiB",
          flush=True)
    return result


def blocked(load: LoadResult) -> int:
    """Requests of `load` that a rule blocked (warm-up included, as in `total`)."""
    return load.statuses.get(bench_proxy.BLOCKED, 0)


# -- parts 2 and 3: children of this script ----------------------------------------------------


def history_part(children: _Children, layout: Layout, tmp: Path, b: Bounds) -> HistorySummary:
    print(f"[2] history: {b.conversations} conversation(s) of {b.turns} turns ...", flush=True)
    with bench_proxy.servers(children, layout, tmp, "history", DEFAULT_POLICY, upstream_cpu=layout.load_cpu) as running:
        out = bench_proxy.run_loadgen(
            children, layout, tmp, "history", SELF,
            ["history", "--direct", f"http://127.0.0.1:{running.upstream_port}/v1/chat/completions",
             "--firewall", f"http://127.0.0.1:{running.port}/v1/chat/completions",
             "--turns", str(b.turns), "--conversations", str(b.conversations)],
            timeout=60 + 3 * b.turns * b.conversations)["result"]
    bad = {k: v for k, v in out["statuses"].items() if k != "200"}
    if bad:
        raise SystemExit(f"history: requests failed: {out['statuses']}")
    summary = summarise(out["direct"], out["firewall"], out["body_bytes"])
    print(f"    added {summary.first_ms:.2f} ms (first turns) → {summary.last_ms:.2f} ms (last turns), "
          f"ratio {summary.ratio:.2f}; body {summary.body_bytes[-1]:,} bytes at turn {summary.turns}", flush=True)
    return summary


def detectors_part(children: _Children, layout: Layout, tmp: Path, b: Bounds) -> dict[str, Any]:
    print("[3] detector cost ...", flush=True)
    # run_loadgen pins its child to the load CPU; here the child is the thing measured,
    # so it gets the tested CPU (the one every proxy had).
    own = dataclasses.replace(layout, load_cpu=layout.tested_cpu)
    n_rows = 14  # about: 6 detectors and the whole policy, single and batched
    cost = bench_proxy.run_loadgen(children, own, tmp, "detectors", SELF,
                                   ["detectors", "--budget", str(b.detector_budget), "--texts", str(b.detector_texts)],
                                   timeout=300 + n_rows * b.detector_budget * 2)
    for r in cost["rates"]:
        print(f"    {r['name']} {r['mode']}: {r['messages'] / r['seconds']:,.0f} messages/s", flush=True)
    return cost


# -- part 4: scale-out ---------------------------------------------------------------------------


def scaleout_part(children: _Children, tmp: Path, b: Bounds, counts: Sequence[int]) -> tuple[list[Any], Any, str]:
    from firewall.policy.loader import read_policy
    from tests.redis_server import running_redis_server

    violations = read_policy(DEFAULT_POLICY).spec.quarantine.violations
    cpus = sorted(__import__("os").sched_getaffinity(0))
    bounds = bench_proxy._Bounds(seconds=b.scale_seconds, max_requests=b.max_requests,
                                 warmup_seconds=b.warmup_seconds, warmup_requests=b.warmup_requests)
    rows: list[Any] = []
    check = None
    unpinned = Layout(pinned=False, tested_cpu=None, load_cpu=None)
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    version = next((w.split("=", 1)[1] for w in redis_version if w.startswith("v=")), "unknown")
    with running_redis_server(tmp / "redis") as redis, \
            bench_proxy.servers(children, unpinned, tmp, "scale", None, upstream_cpu=None) as upstream:
        for n in counts:
            print(f"[4] scale-out: {n} firewall process(es) behind nginx ...", flush=True)
            with scaleout.replicas(children, tmp, n, upstream.upstream_port, redis.url, cpus) as (port, ports, procs):
                row = scaleout.measure(children, tmp, BENCH_PROXY, n, port, procs, bounds)
                rows.append(row)
                print(f"    {row.load['rps']:,.0f} req/s, p50 {row.load['p50_ms']:.2f} ms, firewall CPU "
                      f"{[round(c) for c in row.firewall_cpu]}", flush=True)
                if n == max(counts) and n >= 2:
                    check = scaleout.check_quarantine(ports, violations)
                    print(f"    quarantine across replicas: {'held' if check.held else 'NOT held'} ({check})", flush=True)
    return rows, check, version


# -- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:
        kind, rest = argv[1], argv[2:]
        if kind == "history":
            from history import client_main
            client_main(rest)
        elif kind == "detectors":
            from detector_cost import child_main
            child_main(rest)
        else:
            raise SystemExit(f"unknown child kind {kind!r}")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the issue 10 section of this file")
    parser.add_argument("--quick", action="store_true", help="small counts, a few seconds per configuration")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PARTS):
        parser.error(f"unknown part(s) in --skip: {', '.join(sorted(skip - set(PARTS)))}")
    b = Bounds.make(args.quick)
    layout = bench_proxy._layout()
    machine = bench_proxy._machine()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, bench_proxy._interrupt)
    versions = {"agent-firewall": _af_version()}
    notes: list[str] = []
    if "peers" not in skip and "mitmproxy" not in skip:
        versions["mitmproxy"] = peers.mitmproxy_version()
    if "peers" not in skip and "litellm" not in skip:
        installed = peers.ensure_litellm()
        versions["LiteLLM"] = installed.version
        notes.append(f"LiteLLM {installed.version} (`{peers.LITELLM_SPEC}`: 1.82.7 and 1.82.8 were a compromised "
                     f"release) in benchmarks/compare/.venv-litellm, {installed.mib:,.0f} MB on disk"
                     + (f", installed in {installed.seconds:.0f} s by this run" if installed.seconds else
                        ", installed by an earlier run") + ".")
    print(f"layout: {layout.describe()}", flush=True)
    children = _Children()
    peer_results: list[report.PeerResult] = []
    summary = None
    cost = None
    rows: list[Any] = []
    check = None
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if "peers" not in skip:
                configs = [("direct", "direct"), ("agent-firewall passthrough", "passthrough"),
                           ("agent-firewall default", "default"), ("mitmproxy", "mitmproxy"), ("litellm", "litellm")]
                for config, kind in configs:
                    if kind in skip:
                        continue
                    peer_results.append(_one_config(children, layout, tmp, b, config, kind))
                notes += [f"{m.config}: the policy blocked {blocked(m.c1) + blocked(m.c32):,} of "
                          f"{m.c1.total + m.c32.total:,} generated agent turns (403 `firewall_blocked`; counted apart from "
                          "errors, and in the figures: a blocked request is answered without the upstream)"
                          for m in peer_results if blocked(m.c1) + blocked(m.c32)]
            if "history" not in skip:
                summary = history_part(children, layout, tmp, b)
            if "detectors" not in skip:
                cost = detectors_part(children, layout, tmp, b)
            if "scaleout" not in skip:
                rows, check, versions["redis-server"] = scaleout_part(children, tmp, b, (1, 2, 4))
                versions["nginx"] = _nginx_version()
        except KeyboardInterrupt:
            print("compare: interrupted; stopping every process it started", file=sys.stderr)
            return 130
        finally:
            children.close()
    section = report.render(peers=peer_results, summary=summary, cost=cost, scale_rows=rows, check=check,
                            machine=machine, layout=_describe(layout), versions=versions, bounds=b.describe(),
                            quick=args.quick, notes=notes)
    print()
    print(section)
    if args.write:
        results.write_section(args.write, report.SECTION, section)
        print(f"wrote the issue 10 section of {args.write}")
    return 0


def _describe(layout: Layout) -> str:
    if not layout.pinned:
        return layout.describe()
    return (f"the proxy under test (agent-firewall, mitmdump or LiteLLM; the detector-cost process) on CPU "
            f"{layout.tested_cpu}; the fake upstream and the load generator on CPU {layout.load_cpu}, in every "
            "run, direct included")


def _af_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agent-firewall")
    except PackageNotFoundError:
        return "unknown"


def _nginx_version() -> str:
    done = subprocess.run([str(scaleout.NGINX), "-v"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip().rsplit("/", 1)[-1] or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
