"""Streaming (issue 3): what incremental inspection adds to time to first token.

Run: .venv/bin/python benchmarks/bench_stream.py [--write benchmarks/RESULTS.md] [--quick]

Two configurations, each at concurrency 1 and 200, each with fresh servers:
  direct   load generator -> fake upstream
  default  load generator -> firewall (policies/default.yaml, audit log on) -> fake upstream
The fake upstream is scripted over its control API (POST /_fake/script) to stream a
benign answer of ~80 words as exactly EVENTS content events, CHUNK_DELAY apart, so a
stream lasts about as long as a real model's and the firewall's hold-back shows in time.

Per stream the load generator (its own process, aiohttp + uvloop) parses the SSE body as
it arrives and records TTFT (request sent -> first byte of the first event whose
`delta.content` is not empty), the arrival of every content event, and the total time
to the end of the body. Process layout and CPU pinning are bench_proxy.py's.

How long the firewall has to hold the first text is derived, not assumed: the driver
replays one upstream stream, event by event, through the firewall's own StreamGuard and
counts the content events that must arrive after the first before it is released (k).
The direct runs measure how long those k events take on the wire; what the firewall adds
beyond that wait is its processing time, the figure the issue's first aim bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import policy_variants
import results
from bench_proxy import (
    run_load,
    run_loadgen,
    servers,
    DEFAULT_POLICY,
    Layout,
    _Bodies,
    _Children,
    _cpu_seconds,
    _interrupt,
    _layout,
    _machine,
    _percentile,
)

SECTION: Final = "## Streaming (issue 3)"
EVENTS: Final = 20
CHUNK_DELAY: Final = 0.020
AIM_OVERHEAD_MS: Final = 2.0  # at concurrency 1: added TTFT <= hold-back + this
AIM_RATIO_200: Final = 1.5  # at 200 concurrent streams: p50 TTFT <= this x direct
# A realistic, benign answer (no listed word, no secret): 78 words, 445 characters.
REPLY_TEXT: Final = (
    "The nightly reporting job now runs as a scheduled container task in the private network. "
    "It reads the finance database through the managed connector, builds the three spreadsheets in a "
    "temporary directory and mails them to the finance team at six in the morning, local time. "
    "Credentials come from the secret store at start-up. Each run writes one summary line with the row "
    "counts, and an alert fires when a run fails or has not started by seven."
)
_LOAD_OVERRUN: Final = 60.0  # seconds past its own bound before a load generator is presumed hung
_HEADERS: Final = {"Content-Type": "application/json", "Authorization": "Bearer bench-not-a-real-key",
                   "X-Agent-Id": "researcher"}


def _stream_body(bodies: _Bodies) -> bytes:
    """bench_proxy's agent turn (history + one new message), asking for a stream."""
    return bodies.next()[:-1] + b',"stream":true}'


# -- the load generator (its own process) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """One stream as the client saw it; times in seconds from sending the request."""

    status: int
    ttft: float | None  # None: no content event arrived
    total: float
    content: list[float]  # arrival of the first byte of each content event
    chars: int  # characters of content reassembled


@dataclass(frozen=True, slots=True)
class LoadResult:
    total: int  # every stream started, warm-up included: the audit log must account for each
    seconds: float
    streams: list[StreamTiming]  # the measured ones
    cpu: dict[str, float]  # CPU use of watched processes during the measured phase, in % of one core


def _content_of(event: bytes) -> str:
    """The `delta.content` text of an OpenAI chunk event ("" for any other event)."""
    import orjson

    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return ""
            choices = orjson.loads(payload).get("choices") or [{}]
            return (choices[0].get("delta") or {}).get("content") or ""
    return ""


async def _one_stream(session: Any, url: str, body: bytes) -> StreamTiming:
    content: list[float] = []
    chars = 0
    started = time.perf_counter()
    async with session.post(url, data=body, headers=_HEADERS) as response:
        buffer = b""
        event_start = 0.0  # when the first byte of the event now in `buffer` arrived
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            if not buffer:
                event_start = now
            buffer += chunk
            while (end := buffer.find(b"\n\n")) >= 0:
                event, buffer = buffer[:end], buffer[end + 2:]
                text = _content_of(event)
                if text:
                    content.append(event_start - started)
                    chars += len(text)
                event_start = now  # what is left in `buffer` arrived in this chunk
        status = response.status
    total = time.perf_counter() - started
    return StreamTiming(status, content[0] if content else None, total, content, chars)


async def _phase(url: str, bodies: _Bodies, session: Any, concurrency: int, max_streams: int,
                 seconds: float, timings: list[StreamTiming] | None) -> int:
    deadline = time.perf_counter() + seconds
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < max_streams and time.perf_counter() < deadline:
            issued += 1
            timing = await _one_stream(session, url, _stream_body(bodies))
            if timings is not None:
                timings.append(timing)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return issued


async def _load(args: argparse.Namespace) -> LoadResult:
    import aiohttp

    bodies = _Bodies(seed=args.seed)
    watch = {name: int(pid) for name, pid in (item.split("=") for item in args.watch)}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        warm = await _phase(args.url, bodies, session, args.concurrency, args.warmup_streams,
                            args.seconds, None)
        timings: list[StreamTiming] = []
        before = {name: _cpu_seconds(pid) for name, pid in watch.items()}
        started = time.perf_counter()
        measured = await _phase(args.url, bodies, session, args.concurrency, args.max_streams,
                                args.seconds, timings)
        wall = time.perf_counter() - started
        cpu = {name: 100 * (_cpu_seconds(pid) - before[name]) / wall for name, pid in watch.items()}
    return LoadResult(total=warm + measured, seconds=wall, streams=timings, cpu=cpu)


def _loadgen_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_stream.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-streams", type=int, required=True)
    parser.add_argument("--warmup-streams", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    run_load(_load, parser.parse_args(argv))


# -- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bounds:
    streams: dict[int, int]  # measured streams per concurrency
    warmup: dict[int, int]  # warm-up streams per concurrency
    seconds: float  # bound of each phase


@dataclass(frozen=True, slots=True)
class AuditSummary:
    records: int
    holdback_chars: list[int]  # holdback_max_chars of each end-of-stream record
    events_in: int  # per stream (the same for every stream)
    events_out: int


@dataclass(frozen=True, slots=True)
class Measurement:
    config: str
    concurrency: int
    load: LoadResult
    audit: AuditSummary | None  # None in the direct run

    def ttfts(self) -> list[float]:
        return sorted(1000 * s.ttft for s in self.load.streams if s.ttft is not None)

    def totals(self) -> list[float]:
        return sorted(1000 * s.total for s in self.load.streams)

    def gaps(self, k: int) -> list[float]:
        """ms from the first content event to the (1+k)th, per stream: the wait for the hold-back."""
        return sorted(1000 * (s.content[k] - s.content[0]) for s in self.load.streams if len(s.content) > k)


def _post_json(url: str, data: Any) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _script_upstream(port: int) -> None:
    _post_json(f"http://127.0.0.1:{port}/_fake/script",
               [{"text": REPLY_TEXT, "events": EVENTS, "chunk_delay": CHUNK_DELAY}])


def _sample_stream(port: int) -> bytes:
    """One stream straight from the fake upstream, as the firewall would read it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                     data=_stream_body(_Bodies(seed=1)), method="POST", headers=_HEADERS)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _measure(children: _Children, layout: Layout, tmp: Path, bounds: _Bounds, config: str,
             policy: Path | None, concurrency: int) -> tuple[Measurement, bytes | None]:
    """One run with fresh processes; in the direct run also one sample stream's bytes."""
    tag = f"{config}-c{concurrency}"
    sample = None
    # The upstream shares the load generator's core in every run, direct included, so the
    # only difference between a direct and a firewall run is the firewall on its own core.
    with servers(children, layout, tmp, tag, policy, upstream_cpu=layout.load_cpu,
                 script=_script_upstream) as running:
        raw = run_loadgen(
            children, layout, tmp, tag, Path(__file__).resolve(),
            ["--url", f"http://127.0.0.1:{running.port}/v1/chat/completions",
             "--concurrency", str(concurrency), "--max-streams", str(bounds.streams[concurrency]),
             "--warmup-streams", str(bounds.warmup[concurrency]), "--seconds", str(bounds.seconds),
             *running.watch],
            timeout=2 * bounds.seconds + _LOAD_OVERRUN,
        )
        result = LoadResult(**{**raw, "streams": [StreamTiming(**s) for s in raw["streams"]]})
        if policy is None:
            sample = _sample_stream(running.upstream_port)
    _check_streams(result, tag)
    audit = _check_audit(running.audit_log, result.total, tag) if policy is not None else None
    return Measurement(config=config, concurrency=concurrency, load=result, audit=audit), sample


def _check_streams(result: LoadResult, tag: str) -> None:
    """Every stream must have answered 200 with the whole text in EVENTS content events:
    a stream cut short would flatter its total time."""
    bad = [s for s in result.streams if s.status != 200 or len(s.content) != EVENTS or s.chars != len(REPLY_TEXT)]
    if bad:
        first = bad[0]
        raise SystemExit(f"{tag}: {len(bad)} of {len(result.streams)} streams were not whole (first: status "
                         f"{first.status}, {len(first.content)} content events, {first.chars} characters; "
                         f"expected {EVENTS} events, {len(REPLY_TEXT)} characters)")


def _check_audit(path: Path, streams: int, tag: str) -> AuditSummary:
    """The log must verify and hold, per stream, one request record and one end-of-stream
    record, every one of them an allow (the reply is benign)."""
    from firewall.audit import read_records, verify

    report = verify(path)
    records = list(read_records(path)) if report.ok else []
    requests = [r for r in records if r.get("direction") == "request"]
    ends = [r for r in records if r.get("direction") == "response" and r.get("stream") is True]
    not_allowed = [r for r in records if r.get("action") != "allow"]
    print(f"  audit {tag}: {report.records} records ({len(requests)} request, {len(ends)} end-of-stream) for "
          f"{streams} streams, chain {'intact' if report.ok else 'BROKEN: ' + str(report.problem)}", flush=True)
    if (not report.ok or len(requests) != streams or len(ends) != streams or len(records) != 2 * streams
            or not_allowed):
        raise SystemExit(f"audit log check failed for {tag} ({len(not_allowed)} records not 'allow'): see {path}")
    events = {(r["events"]["in"], r["events"]["out"]) for r in ends}
    if len(events) != 1:
        raise SystemExit(f"audit log check failed for {tag}: streams differ in events in/out: {sorted(events)}")
    ((events_in, events_out),) = events
    return AuditSummary(len(records), [r["holdback_max_chars"] for r in ends], events_in, events_out)


@dataclass(frozen=True, slots=True)
class Replay:
    """The sample stream replayed through the firewall's own StreamGuard, event by event."""

    wait_events: int  # content events that must arrive after the first before it is released (k)
    holdback_max: int  # the guard's own holdback_max for that stream
    holdback: str  # the policy's hold-back, as the guard computes it


def _replay(sample: bytes, policy_path: Path) -> Replay:
    from firewall import Direction, Engine, Exchange
    from firewall.policy import load_policy_file
    from firewall.protocols import OpenAIChat
    from firewall.stream import HoldBack, StreamGuard

    policy = load_policy_file(policy_path)
    request = Exchange(id="ex_replay", direction=Direction.REQUEST, provider="openai", route="openai_chat",
                       messages=(), model="gpt-4o-mini", agent="researcher", stream=True)
    holdback = HoldBack.for_policy(policy, "openai_chat")  # as the firewall holds back on this route
    guard = StreamGuard(Engine(policy), OpenAIChat().stream_reader(), request, holdback)
    seen = 0  # content events fed so far
    wait = None
    for event in (e + b"\n\n" for e in sample.split(b"\n\n") if e.strip()):
        seen += bool(_content_of(event))
        released = guard.feed(event).split(b"\n\n")
        if wait is None and any(_content_of(e) for e in released):
            wait = seen - 1
    guard.close()
    if wait is None:
        raise SystemExit("replay: the StreamGuard released no text before the end of the stream")
    described = ("the unfinished tail that could still become a listed term or a secret, and listed terms "
                 "awaiting a near anchor" + (", up to the last sentence end" if holdback.sentences else ""))
    return Replay(wait, guard.outcome().holdback_max, described)


# -- the report --------------------------------------------------------------------------------


def render(measurements: Sequence[Measurement], replay: Replay, layout: Layout, machine: dict[str, str],
           bounds: _Bounds, quick: bool) -> str:
    by = {(m.config, m.concurrency): m for m in measurements}
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `.venv/bin/python benchmarks/bench_stream.py"
        f"{' --quick' if quick else ''}`"
        f"{' (QUICK RUN: smoke test, not a measurement)' if quick else ''}.",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average before the run {machine['load']}.",
        f"- Layout: fake upstream and load generator on CPU {layout.load_cpu} in every run (direct included, so "
        f"the runs differ only by the firewall); the firewall on CPU {layout.tested_cpu}." if layout.pinned
        else f"- Layout: {layout.describe()}.",
        f"- Streams: POST /v1/chat/completions with `\"stream\": true`, bench_proxy's agent turn (fixed history "
        f"+ one new user message). The fake upstream streams a benign answer of {len(REPLY_TEXT.split())} words "
        f"({len(REPLY_TEXT)} characters) as {EVENTS} content events, {CHUNK_DELAY * 1000:g} ms apart "
        "(after a role event, before the finish event and `[DONE]`).",
        f"- Concurrency 1: {bounds.streams[1]} streams one after another; concurrency 200: "
        f"{bounds.streams[200]} streams with 200 in flight. Each after a warm-up "
        f"({bounds.warmup[1]} and {bounds.warmup[200]} streams), each with fresh processes.",
        "- *TTFT*: request sent → first byte of the first event whose `delta.content` is not empty; *total*: → end "
        "of the body; measured in the load generator (aiohttp + uvloop, its own process), which parses each "
        "stream as it arrives and checks it was whole. p50/p99 nearest-rank.",
        "- Firewall runs: policy `policies/default.yaml`, audit log to a temp file. After each run it verified "
        "(hash chain intact) with exactly one request record and one end-of-stream record per stream, warm-up "
        "included, all `allow`. *hold-back chars* is the `holdback_max_chars` of those end-of-stream records "
        "(median / max), the firewall's own count.",
        "- *CPU*: the process under test (the firewall, or the upstream in the direct rows) in % of one core "
        "during the measured phase.",
        "",
        "| configuration | conc. | streams | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | added TTFT p99 ms "
        "| TTFT p50 vs direct | total p50 ms | total p99 ms | total p50 vs direct | CPU % | hold-back chars |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measurements:
        base = by.get(("direct", m.concurrency))
        ttft, total = m.ttfts(), m.totals()
        t50, t99, s50, s99 = (_percentile(ttft, 0.5), _percentile(ttft, 0.99),
                              _percentile(total, 0.5), _percentile(total, 0.99))
        added50 = added99 = ratio = ratio_total = ""
        if base is not None and m is not base:
            added50 = f"{t50 - _percentile(base.ttfts(), 0.5):+.2f}"
            added99 = f"{t99 - _percentile(base.ttfts(), 0.99):+.2f}"
            ratio = f"{t50 / _percentile(base.ttfts(), 0.5):.2f}"
            ratio_total = f"{s50 / _percentile(base.totals(), 0.5):.2f}"
        elif m is base:
            ratio = ratio_total = "1.00"
        held = "" if m.audit is None else \
            f"{statistics.median(m.audit.holdback_chars):g} / {max(m.audit.holdback_chars)}"
        lines.append(f"| {m.config} | {m.concurrency} | {len(m.load.streams):,} | {t50:.2f} | {t99:.2f} | {added50} "
                     f"| {added99} | {ratio} | {s50:.2f} | {s99:.2f} | {ratio_total} "
                     f"| {m.load.cpu.get('tested', 0.0):.0f} | {held} |")
    lines += ["", *_holdback_lines(by, replay), "", *_aims(by, replay), ""]
    lines += [
        "For scale (quoted in issue 3, not measured by us): mitmproxy with a streaming addon took 776 ms to the "
        "first event at 200 concurrent streams, against 48 ms direct.",
        "",
    ]
    return "\n".join(lines)


def _wait_ms(by: dict[tuple[str, int], Measurement], concurrency: int, k: int) -> float | None:
    """Median wait, on the wire, from the first content event to the (1+k)th, in the direct run."""
    base = by.get(("direct", concurrency))
    gaps = base.gaps(k) if base else []
    return statistics.median(gaps) if gaps else None


def _holdback_lines(by: dict[tuple[str, int], Measurement], replay: Replay) -> list[str]:
    k = replay.wait_events
    wait1 = _wait_ms(by, 1, k)
    audit = by.get(("default", 1))
    out = [
        "The hold-back, in text and in time:",
        "",
        f"- The default policy holds back {replay.holdback}. Replayed event by event through the firewall's own "
        "StreamGuard, "
        f"one upstream stream first releases text when content event {1 + k} arrives: the first event waits for "
        f"**k = {k}** more (that replay's hold-back peaks at {replay.holdback_max} characters).",
    ]
    if wait1 is not None:
        out.append(f"- In time that is k × {CHUNK_DELAY * 1000:g} ms = {k * CHUNK_DELAY * 1000:.0f} ms nominal; "
                   f"measured on the wire in the direct run at concurrency 1, content event {1 + k} arrives "
                   f"{wait1:.2f} ms (median) after the first.")
    if audit is not None and audit.audit is not None:
        out.append(f"- Each stream arrived at the firewall as {audit.audit.events_in} events and left it as "
                   f"{audit.audit.events_out} (nothing merged, dropped or added).")
    return out


def _aims(by: dict[tuple[str, int], Measurement], replay: Replay) -> list[str]:
    k = replay.wait_events
    out = ["Aims of issue 3, for the default pack with its semantic stage (*default*) and without it (*cheap*; "
           "the semantic stage reads requests only, so it costs once per stream, before the first event):", ""]
    for config in ("default", "cheap"):
        fw1, base1, wait1 = by.get((config, 1)), by.get(("direct", 1)), _wait_ms(by, 1, k)
        if fw1 and base1 and wait1 is not None:
            added = _percentile(fw1.ttfts(), 0.5) - _percentile(base1.ttfts(), 0.5)
            overhead = added - wait1
            verdict = "met" if overhead <= AIM_OVERHEAD_MS else "NOT met"
            out.append(f"- {config}: concurrency 1, added TTFT ≤ hold-back + {AIM_OVERHEAD_MS:g} ms: added p50 "
                       f"{added:.2f} ms = {wait1:.2f} ms waiting for {k} events + {overhead:.2f} ms of the firewall's "
                       f"own, **{verdict}**.")
    fw200, base200 = None, by.get(("direct", 200))
    for config in ("default", "cheap"):
        fw200 = by.get((config, 200))
        if not (fw200 and base200):
            continue
        p50, direct50 = _percentile(fw200.ttfts(), 0.5), _percentile(base200.ttfts(), 0.5)
        ratio = p50 / direct50
        verdict = "met" if ratio <= AIM_RATIO_200 else "NOT met"
        wait200 = _wait_ms(by, 200, k)
        rest = "" if wait200 is None else (
            f"; of the {p50 - direct50:.2f} ms added, {wait200:.2f} ms is the wait for {k} events "
            f"(direct run at 200, median) and {p50 - direct50 - wait200:.2f} ms the firewall's own")
        out.append(f"- {config}: 200 concurrent streams, p50 TTFT ≤ {AIM_RATIO_200:g} × direct: {p50:.2f} ms against "
                   f"{direct50:.2f} ms direct, {ratio:.2f} ×, **{verdict}**{rest}.")
    if fw200 and base200:
        direct50 = _percentile(base200.ttfts(), 0.5)
        if k:
            floor = (1 + k * CHUNK_DELAY / (direct50 / 1000))
            out.append(f"- Note: the first text cannot be released before {k} more events have arrived, so with "
                       f"the first event {direct50:.0f} ms after the request and events {CHUNK_DELAY * 1000:g} ms "
                       f"apart, a zero-cost firewall would already be at about {floor:.1f} × direct.")
        else:
            out.append("- Note: no event waits for another here, so what is added at 200 streams is the firewall's "
                       "own work: 200 requests arrive at once and each is parsed, inspected (4 KB of history), "
                       "recorded and forwarded on one core before its stream can start; the queue that builds "
                       "in that burst, not the stream inspection, is most of the added time to first token.")
    return out


def write_section(path: Path, section: str) -> None:
    results.write_section(path, SECTION, section)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:
        _loadgen_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the streaming section of this file")
    parser.add_argument("--quick", action="store_true", help="a short run, to smoke-test the script")
    args = parser.parse_args(argv)
    bounds = (_Bounds(streams={1: 10, 200: 200}, warmup={1: 2, 200: 200}, seconds=30.0) if args.quick else
              _Bounds(streams={1: 50, 200: 600}, warmup={1: 5, 200: 200}, seconds=60.0))
    if not DEFAULT_POLICY.exists():
        parser.error(f"policy file not found: {DEFAULT_POLICY}")
    layout = _layout()
    machine = _machine()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    print(f"layout: {layout.describe()}", flush=True)
    children = _Children()
    measurements: list[Measurement] = []
    sample = None
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        try:
            cheap = Path(tmp) / "default-cheap.yaml"
            if not policy_variants.strip_semantic(DEFAULT_POLICY, cheap):
                cheap = DEFAULT_POLICY
            for concurrency in (1, 200):
                for config, policy in (("direct", None), ("cheap", cheap), ("default", DEFAULT_POLICY)):
                    print(f"{config}, concurrency {concurrency} ...", flush=True)
                    m, got = _measure(children, layout, Path(tmp), bounds, config, policy, concurrency)
                    sample = sample or got
                    ttft, total = m.ttfts(), m.totals()
                    print(f"  {len(m.load.streams)} streams, TTFT p50 {_percentile(ttft, 0.5):.2f} ms "
                          f"p99 {_percentile(ttft, 0.99):.2f} ms, total p50 {_percentile(total, 0.5):.2f} ms, "
                          f"cpu {m.load.cpu}", flush=True)
                    measurements.append(m)
        except KeyboardInterrupt:
            print("bench_stream: interrupted; stopping every process it started", file=sys.stderr)
            return 130
        finally:
            children.close()
    assert sample is not None
    replay = _replay(sample, DEFAULT_POLICY)
    section = render(measurements, replay, layout, machine, bounds, args.quick)
    print()
    print(section)
    if args.write:
        write_section(args.write, section)
        print(f"wrote the streaming section of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
