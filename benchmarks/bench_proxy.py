"""Proxy overhead (issue 2): what the firewall adds to a request, in latency and throughput.

Run: .venv/bin/python benchmarks/bench_proxy.py [--write benchmarks/RESULTS.md] [--quick]

Four configurations, each at concurrency 1 and 32, each with fresh servers:
  direct       load generator -> fake upstream
  passthrough  load generator -> firewall (benchmarks/passthrough.yaml, no rules) -> fake upstream
  cheap        load generator -> firewall (policies/default.yaml without its semantic stage) -> fake upstream
  default      load generator -> firewall (policies/default.yaml) -> fake upstream
The firewall writes its audit log (a temp file) as it would in production; after each
run the log must verify and hold exactly two records per request.

CPU layout, so that "one core" means one core: the process under test (the firewall, or
the fake upstream in the direct run) is pinned to the first CPU; the load generator and,
in the firewall runs, the fake upstream share the second. The load generator is its own
process (aiohttp + uvloop), not this driver's event loop. With one CPU everything runs
unpinned and the report says so.

Every request is POST /v1/chat/completions with a ~4 KB body that looks like an agent's
turn: the same history each time (system prompt and several turns) plus one new user
message with unique text, so a per-message verdict cache saves the history and nothing
else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

_REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))  # run as a plain script from a checkout, installed or not

import policy_variants  # noqa: E402  (benchmarks/policy_variants.py, beside this script)
import results  # noqa: E402  (benchmarks/results.py, beside this script)

SECTION: Final = "## Proxy overhead (issue 2)"
CONCURRENCIES: Final = (1, 32)
PASSTHROUGH: Final = _REPO / "benchmarks" / "passthrough.yaml"
DEFAULT_POLICY: Final = _REPO / "policies" / "default.yaml"
AIM_ADDED_P50_MS: Final = 1.0
AIM_RPS: Final = 1500.0
_READY_TIMEOUT: Final = 60.0
_LOAD_OVERRUN: Final = 60.0  # seconds past its own bound before a load generator is presumed hung


# -- the request body ----------------------------------------------------------------------

_SYSTEM: Final = (
    "You are the research agent in a team of three cooperating agents: a planner, a researcher "
    "and a writer. The planner breaks the user's goal into tasks and sends you the ones that need "
    "facts. You answer with short, sourced summaries that the writer can quote directly. Prefer "
    "primary sources such as official documentation, changelogs and published papers over blog "
    "posts. When two sources disagree, say so and give both. Keep every answer under two hundred "
    "words unless the planner asks for more detail, and end each answer with a list of the sources "
    "you used, one per line. If a task is ambiguous, ask the planner one precise question instead "
    "of guessing. Never invent version numbers, dates or benchmark figures."
)
_HISTORY: Final = [
    ("user", "Planner here. The user wants to move their nightly reporting job from a cron script on "
             "a single virtual machine to a managed workflow service. First task: list the scheduling "
             "options the three large cloud providers offer for jobs that run once a day and take "
             "about forty minutes."),
    ("assistant", "There are three broad families. Managed workflow engines based on Apache Airflow "
                  "suit jobs with several dependent steps and give retries, backfills and a web view "
                  "of past runs. Serverless schedulers trigger a container or a function on a cron "
                  "expression and are the cheapest choice for a single step, but functions usually "
                  "stop after fifteen minutes, so a forty minute job needs a container task instead. "
                  "Batch services queue long jobs on managed compute and fit heavy data processing. "
                  "For one nightly job of forty minutes, a scheduled container task is the simplest "
                  "fit. Sources: the providers' scheduler documentation and their batch service guides."),
    ("user", "Good. The job reads from a PostgreSQL database, builds three spreadsheets and emails "
             "them to the finance team. What should we watch out for when it moves to a container?"),
    ("assistant", "Four things. Network access: the container must reach the database, so it needs to "
                  "run inside the same private network or through a managed connector. Credentials: "
                  "move the database password and the mail relay login into the provider's secret "
                  "store and read them at start-up rather than baking them into the image. Time "
                  "zones: cron expressions in managed schedulers default to UTC, while the old script "
                  "probably ran on local time, so the reports may arrive an hour early or late around "
                  "daylight saving changes. Idempotence: a managed scheduler may retry a failed run, "
                  "so the job should not email the same report twice. Sources: scheduler and secret "
                  "store documentation."),
    ("user", "The writer asks whether we can keep the existing Python script almost unchanged."),
    ("assistant", "Mostly yes. Package the script with its dependencies in a small image based on an "
                  "official Python base, replace the hard-coded paths with environment variables, "
                  "write the spreadsheets to a temporary directory or object storage instead of the "
                  "local disk, and send logs to standard output so the platform collects them. The "
                  "email code can stay as it is if the mail relay is reachable from the private "
                  "network. Expect a day of work plus testing. Sources: the container service guides."),
    ("user", "Last question before the writer drafts the plan: how do we know the new job ran?"),
    ("assistant", "Use the scheduler's run history for the basic signal, and add an alert when a run "
                  "fails or does not start by a set hour. Have the job write one summary line with the "
                  "row counts per spreadsheet, so a quiet failure with empty reports stands out. "
                  "Sources: the providers' monitoring guides."),
]
_WORDS: Final = (
    "quarterly revenue forecast dashboard latency retention schema migration invoice ledger pipeline "
    "warehouse partition index replica backup snapshot budget audit report summary region cluster "
    "container image registry deployment rollout canary metric alert threshold holiday calendar team "
    "review approval customer churn cohort segment funnel campaign vendor contract renewal license "
    "storage archive compliance export spreadsheet chart column filter weekly monthly nightly morning "
    "evening carefully briefly clearly gently quickly thoroughly compare explain estimate outline"
).split()
_ASKS: Final = (
    "Please check", "Could you summarise", "Next task: compare", "Find sources on",
    "The writer wants a note on", "Estimate the effort for", "Give two options for",
)


class _Bodies:
    """Request bodies: the fixed history serialised once, one new user message spliced in."""

    def __init__(self, seed: int) -> None:
        history = [{"role": "system", "content": _SYSTEM}]
        history += [{"role": role, "content": text} for role, text in _HISTORY]
        head = json.dumps({"model": "gpt-4o-mini", "temperature": 0.2, "messages": history},
                          separators=(",", ":"))
        self._prefix = head[:-2].encode() + b","  # cut "]}" to append one more message
        self._random = random.Random(seed)
        self._count = 0

    def next(self) -> bytes:
        self._count += 1
        words = " ".join(self._random.choice(_WORDS) for _ in range(self._random.randint(18, 30)))
        text = f"{self._random.choice(_ASKS)} item {self._count}: {words}."
        return self._prefix + json.dumps({"role": "user", "content": text}).encode() + b"]}"


# -- the load generator (its own process) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load generator run measured (warm-up excluded, except in `total`)."""

    total: int  # every request sent, warm-up included: the audit log must hold 2 per request
    measured: int
    errors: int  # answers other than 200 and a policy's block (BLOCKED): a quarantine is an error
    statuses: dict[str, int]  # a 403 by its error code ("403 firewall_blocked", "403 agent_quarantined")
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    body_bytes: int
    cpu: dict[str, float]  # CPU use of watched processes during the measured phase, in % of one core


# A rule blocked the request: the policy deciding, not the proxy failing. The default pack
# blocks a few of the generated agent turns (see RESULTS.md), so its runs count these apart.
BLOCKED: Final = "403 firewall_blocked"


def _error_code(answer: bytes) -> str:
    try:
        return str(json.loads(answer)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unknown"


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _phase(url: str, bodies: _Bodies, session: Any, concurrency: int, max_requests: int,
                 seconds: float, latencies: list[float] | None, statuses: dict[str, int]) -> int:
    deadline = time.perf_counter() + seconds
    issued = 0
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench-not-a-real-key",
               "X-Agent-Id": "researcher"}

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            body = bodies.next()
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
            elapsed = time.perf_counter() - started
            key = str(status) if status != 403 else f"403 {_error_code(answer)}"
            statuses[key] = statuses.get(key, 0) + 1
            if latencies is not None:
                latencies.append(elapsed)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return issued


async def _load(args: argparse.Namespace) -> LoadResult:
    import aiohttp

    bodies = _Bodies(seed=args.seed)
    watch = {name: int(pid) for name, pid in (item.split("=") for item in args.watch)}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        warm_statuses: dict[str, int] = {}
        warm = await _phase(args.url, bodies, session, args.concurrency, args.warmup_requests,
                            args.warmup_seconds, None, warm_statuses)
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        before = {name: _cpu_seconds(pid) for name, pid in watch.items()}
        started = time.perf_counter()
        measured = await _phase(args.url, bodies, session, args.concurrency, args.max_requests,
                                args.seconds, latencies, statuses)
        wall = time.perf_counter() - started
        cpu = {name: 100 * (_cpu_seconds(pid) - before[name]) / wall for name, pid in watch.items()}
    ordered = sorted(latencies)
    for status, n in warm_statuses.items():
        statuses[status] = statuses.get(status, 0) + n
    errors = sum(n for status, n in statuses.items() if status not in ("200", BLOCKED))
    return LoadResult(
        total=warm + measured, measured=measured, errors=errors, statuses=statuses, seconds=wall,
        rps=measured / wall, p50_ms=1000 * _percentile(ordered, 0.50), p99_ms=1000 * _percentile(ordered, 0.99),
        mean_ms=1000 * sum(ordered) / len(ordered), body_bytes=len(bodies.next()), cpu=cpu,
    )


def _loadgen_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_proxy.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup-requests", type=int, required=True)
    parser.add_argument("--warmup-seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    run_load(_load, parser.parse_args(argv))


def run_load(load: Any, args: argparse.Namespace) -> None:
    """Run a load generator's coroutine on uvloop (when installed) and print its result
    as one JSON line for the driver; its own CPU is watched as `load`."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    args.watch.append(f"load={os.getpid()}")
    result = json.dumps(asdict(runner(load(args))))
    # An event loop may leave stdout non-blocking: a result over the pipe's 64 KiB would
    # then be cut where the pipe was full (seen with 600 streams' timings).
    os.set_blocking(sys.stdout.fileno(), True)
    print(result, flush=True)


# -- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    pinned: bool
    tested_cpu: int | None  # the firewall, or the upstream in the direct run
    load_cpu: int | None  # the load generator, and the upstream in firewall runs

    def describe(self) -> str:
        if not self.pinned:
            return "unpinned: only one CPU is available, so every process shares it"
        return (f"firewall on CPU {self.tested_cpu}; fake upstream and load generator on CPU {self.load_cpu}. "
                f"Direct run: fake upstream on CPU {self.tested_cpu}, load generator on CPU {self.load_cpu}")


@dataclass(frozen=True, slots=True)
class Measurement:
    config: str
    concurrency: int
    load: LoadResult
    audit_records: int | None  # None in the direct run (no firewall, no audit log)


class _Children:
    """Every subprocess the driver starts; `close()` ends each of them, by its own pid."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], cpu: int | None, log: Path, *, stdout: Any = None) -> subprocess.Popen[bytes]:
        def pin() -> None:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        # A session of its own: Ctrl-C reaches only the driver, which then stops each child
        # in order (a firewall killed by the same Ctrl-C mid-run would fail the load first).
        with log.open("ab") as sink:  # the child holds its own copy of the descriptor
            proc = subprocess.Popen(list(argv), stdout=stdout if stdout is not None else sink, stderr=sink,
                                    stdin=subprocess.DEVNULL, preexec_fn=pin, cwd=_REPO, start_new_session=True)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in list(self._procs):
            self.stop(proc)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before listening; its log:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within {_READY_TIMEOUT:.0f} s; see {log}")


def _layout() -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Layout(pinned=False, tested_cpu=None, load_cpu=None)
    return Layout(pinned=True, tested_cpu=cpus[0], load_cpu=cpus[1])


def _agent_firewall() -> str:
    beside = Path(sys.executable).parent / "agent-firewall"
    found = str(beside) if beside.exists() else shutil.which("agent-firewall")
    if found is None:
        raise SystemExit("agent-firewall not found beside this Python or on PATH; install the project (pip install -e .)")
    return found


@dataclass(frozen=True, slots=True)
class _Bounds:
    seconds: float
    max_requests: int
    warmup_seconds: float
    warmup_requests: int


@dataclass(frozen=True, slots=True)
class Servers:
    """The fake upstream, and the firewall in front of it when a policy is given."""

    port: int  # where the load goes: the firewall, or the upstream in a direct run
    upstream_port: int
    audit_log: Path
    watch: list[str]  # --watch NAME=PID arguments for the load generator


@contextmanager
def servers(children: _Children, layout: Layout, tmp: Path, tag: str, policy: Path | None, *,
            upstream_cpu: int | None, script: Callable[[int], None] | None = None) -> Iterator[Servers]:
    """Start the fake upstream (scripted by `script`, if given) and, with a policy, the
    firewall in front of it; both are stopped on the way out."""
    upstream_port = _free_port()
    upstream_log = tmp / f"{tag}-upstream.log"
    # --keep 0: the fake remembers no request bodies, so a long run does not grow its memory.
    upstream = children.start([sys.executable, "-m", "firewall.testing.fake_upstream",
                               "--listen", f"127.0.0.1:{upstream_port}", "--keep", "0"], upstream_cpu, upstream_log)
    firewall = None
    audit_log = tmp / f"{tag}-audit.jsonl"
    try:
        _wait_ready(upstream, upstream_port, "the fake upstream", upstream_log)
        if script is not None:
            script(upstream_port)
        port, tested = upstream_port, upstream
        if policy is not None:
            port = _free_port()
            firewall_log = tmp / f"{tag}-firewall.log"
            firewall = children.start([_agent_firewall(), "run", "--policy", str(policy),
                                       "--listen", f"127.0.0.1:{port}",
                                       "--upstream", f"openai=http://127.0.0.1:{upstream_port}",
                                       "--audit-log", str(audit_log)], layout.tested_cpu, firewall_log)
            _wait_ready(firewall, port, "the firewall", firewall_log)
            tested = firewall
        watch = ["--watch", f"tested={tested.pid}"]
        if firewall is not None:
            watch += ["--watch", f"upstream={upstream.pid}"]
        yield Servers(port, upstream_port, audit_log, watch)
    finally:
        if firewall is not None:
            children.stop(firewall)
        children.stop(upstream)


def run_loadgen(children: _Children, layout: Layout, tmp: Path, tag: str, script: Path, arguments: list[str],
                timeout: float) -> Any:
    """Run `script _loadgen ARGUMENTS` on the load CPU; its JSON result, or exit with its log."""
    load_log = tmp / f"{tag}-load.log"
    load = children.start([sys.executable, str(script), "_loadgen", *arguments],
                          layout.load_cpu, load_log, stdout=subprocess.PIPE)
    try:
        out, _ = load.communicate(timeout=timeout)
    finally:
        children.stop(load)
    if load.returncode != 0:
        raise SystemExit(f"the load generator failed ({load.returncode}); its log:\n"
                         f"{load_log.read_text(errors='replace')[-3000:]}")
    return json.loads(out)


def _measure(children: _Children, layout: Layout, tmp: Path, bounds: _Bounds, config: str,
             policy: Path | None, concurrency: int) -> Measurement:
    tag = f"{config}-c{concurrency}"
    upstream_cpu = layout.load_cpu if policy is not None else layout.tested_cpu
    with servers(children, layout, tmp, tag, policy, upstream_cpu=upstream_cpu) as running:
        result = LoadResult(**run_loadgen(
            children, layout, tmp, tag, Path(__file__).resolve(),
            ["--url", f"http://127.0.0.1:{running.port}/v1/chat/completions",
             "--concurrency", str(concurrency), "--max-requests", str(bounds.max_requests),
             "--seconds", str(bounds.seconds), "--warmup-requests", str(bounds.warmup_requests),
             "--warmup-seconds", str(bounds.warmup_seconds), *running.watch],
            timeout=bounds.seconds + bounds.warmup_seconds + _LOAD_OVERRUN,
        ))
    records = (_check_audit(running.audit_log, result.total, tag, blocked=result.statuses.get(BLOCKED, 0))
               if policy is not None else None)
    return Measurement(config=config, concurrency=concurrency, load=result, audit_records=records)


def _check_audit(path: Path, requests: int, tag: str, *, blocked: int = 0) -> int:
    """The log must verify and hold one request and one response record per request (a
    request record only for one the policy blocked): a benchmark that silently lost
    records would flatter the firewall."""
    from firewall.audit import verify

    report = verify(path)
    expected = 2 * requests - blocked
    print(f"  audit {tag}: {report.records} records, expected {expected} (2 x {requests} requests - {blocked} blocked), "
          f"chain {'intact' if report.ok else 'BROKEN: ' + str(report.problem)}", flush=True)
    if not report.ok or report.records != expected:
        raise SystemExit(f"audit log check failed for {tag}: see {path}")
    return report.records


# -- the report --------------------------------------------------------------------------------


def _machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1, load5, _ = os.getloadavg()
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "load": f"{load1:.2f} (1 min), {load5:.2f} (5 min)"}


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def render(measurements: Sequence[Measurement], layout: Layout, machine: dict[str, str], bounds: _Bounds,
           quick: bool) -> str:
    direct = {m.concurrency: m.load for m in measurements if m.config == "direct"}
    body_bytes = measurements[0].load.body_bytes if measurements else 0
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `.venv/bin/python benchmarks/bench_proxy.py"
        f"{' --quick' if quick else ''}`"
        f"{' (QUICK RUN: smoke test, not a measurement)' if quick else ''}.",
        "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, "
        f"Python {machine['python']}; load average before the run {machine['load']} "
        "(other work shares this machine, so expect a few percent of noise).",
        f"- Layout: {layout.describe()}.",
        f"- Requests: POST /v1/chat/completions, {body_bytes:,} bytes each: a fixed agent history "
        "(system prompt + 4 user/assistant turns) and one new, unique user message per request; "
        "non-streamed JSON replies from the project's fake upstream (`--keep 0`).",
        f"- Each row: fresh processes, warm-up (up to {bounds.warmup_requests} requests or "
        f"{bounds.warmup_seconds:g} s) then up to {bounds.max_requests:,} requests or {bounds.seconds:g} s, "
        "whichever comes first; latency is perf_counter around each request in the load generator "
        "(aiohttp + uvloop, its own process). p50/p99 are nearest-rank.",
        "- Firewall runs write the audit log to a temp file; after each run it verified "
        "(hash chain intact) with exactly 2 records per request, warm-up included (column *audit*).",
        "- *CPU* is the process under test (firewall, or the upstream in the direct rows) in % of one core "
        "during the measured phase; *load CPU* is the load generator plus, in firewall rows, the upstream, "
        "which share the other core.",
        "",
        "| configuration | conc. | requests | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| req/s vs direct | CPU % | load CPU % | audit records |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measurements:
        base = direct.get(m.concurrency)
        load = m.load
        is_direct = m.config == "direct" or base is None
        added50 = "" if is_direct else _signed(load.p50_ms - base.p50_ms)
        added99 = "" if is_direct else _signed(load.p99_ms - base.p99_ms)
        ratio = "1.00" if m.config == "direct" else (f"{load.rps / base.rps:.2f}" if base else "")
        side = load.cpu.get("load", 0.0) + load.cpu.get("upstream", 0.0)
        audit = "" if m.audit_records is None else f"{m.audit_records:,}"
        lines.append(f"| {m.config} | {m.concurrency} | {load.measured:,} | {load.rps:,.0f} | {_ms(load.p50_ms)} "
                     f"| {_ms(load.p99_ms)} | {added50} | {added99} | {ratio} | {load.cpu.get('tested', 0.0):.0f} "
                     f"| {side:.0f} | {audit} |")
    lines += ["", *_aims(measurements, direct), ""]
    lines += [
        "mitmproxy and the LiteLLM proxy, measured on this machine side by side with the firewall: "
        "benchmarks/compare/run.py, section \"Compared with the alternatives (issue 10)\".",
        "",
    ]
    return "\n".join(lines)


def _aims(measurements: Sequence[Measurement], direct: dict[int, LoadResult]) -> list[str]:
    by = {(m.config, m.concurrency): m.load for m in measurements}
    out = ["Aims of issue 2, for the default pack with its semantic stage (*default*) and without it (*cheap*: "
           "the pack as issue 2 knew it, lists, patterns and the small detectors):", ""]
    for config in ("default", "cheap"):
        one, base1 = by.get((config, 1)), direct.get(1)
        if one and base1:
            added = one.p50_ms - base1.p50_ms
            verdict = "met" if added <= AIM_ADDED_P50_MS else "NOT met"
            out.append(f"- {config}: added p50 latency at concurrency 1 ≤ {AIM_ADDED_P50_MS:g} ms: {added:.2f} ms, "
                       f"**{verdict}**.")
        many = by.get((config, 32))
        if many:
            verdict = "met" if many.rps >= AIM_RPS else "NOT met"
            out.append(f"- {config}: ≥ {AIM_RPS:,.0f} requests/s on one core at concurrency 32: {many.rps:,.0f} "
                       f"requests/s, **{verdict}** (firewall CPU {many.cpu.get('tested', 0.0):.0f} % of its core).")
    pass32 = by.get(("passthrough", 32))
    if pass32:
        out.append(f"- For comparison, the passthrough policy (no rules) reaches {pass32.rps:,.0f} requests/s "
                   "at concurrency 32: that is the ceiling of the proxy path itself.")
    default1, cheap1 = by.get(("default", 1)), by.get(("cheap", 1))
    if default1 and cheap1:
        out.append(f"- The semantic stage (all-MiniLM-L6-v2 on the new message of each request, one thread) adds "
                   f"{default1.p50_ms - cheap1.p50_ms:.2f} ms at p50 to the cheap stages: the price of reading "
                   "meaning. History is not read again (each message's verdict is remembered), and a message the "
                   "cheap rules block never reaches it.")
    return out


def write_section(path: Path, section: str) -> None:
    results.write_section(path, SECTION, section)


# -- main -------------------------------------------------------------------------------------


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so that every `finally` runs and ends the children


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:
        _loadgen_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the proxy section of this file")
    parser.add_argument("--quick", action="store_true", help="a short run, to smoke-test the script")
    parser.add_argument("--seconds", type=float, help="bound of each measured phase (default 8, quick 1.5)")
    parser.add_argument("--max-requests", type=int, help="bound of each measured phase (default 50000, quick 500)")
    args = parser.parse_args(argv)
    bounds = _Bounds(seconds=args.seconds or (1.5 if args.quick else 8.0),
                     max_requests=args.max_requests or (500 if args.quick else 50_000),
                     warmup_seconds=0.5 if args.quick else 1.5,
                     warmup_requests=50 if args.quick else 500)
    missing = [str(policy) for policy in (PASSTHROUGH, DEFAULT_POLICY) if not policy.exists()]
    if missing:
        parser.error(f"policy file not found: {', '.join(missing)}")
    layout = _layout()
    machine = _machine()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    print(f"layout: {layout.describe()}", flush=True)
    children = _Children()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        try:
            cheap = Path(tmp) / "default-cheap.yaml"
            if not policy_variants.strip_semantic(DEFAULT_POLICY, cheap):
                cheap = DEFAULT_POLICY  # no semantic stage to leave out: the two rows are one policy
            for concurrency in CONCURRENCIES:
                for config, policy in (("direct", None), ("passthrough", PASSTHROUGH), ("cheap", cheap),
                                       ("default", DEFAULT_POLICY)):
                    print(f"{config}, concurrency {concurrency} ...", flush=True)
                    m = _measure(children, layout, Path(tmp), bounds, config, policy, concurrency)
                    print(f"  {m.load.measured} requests, {m.load.rps:,.0f} req/s, p50 {m.load.p50_ms:.2f} ms, "
                          f"p99 {m.load.p99_ms:.2f} ms, errors {m.load.errors}, cpu {m.load.cpu}", flush=True)
                    if m.load.errors:
                        raise SystemExit(f"{config}: {m.load.errors} requests failed: {m.load.statuses}")
                    measurements.append(m)
        except KeyboardInterrupt:
            print("bench_proxy: interrupted; stopping every process it started", file=sys.stderr)
            return 130
        finally:
            children.close()
    order = {"direct": 0, "passthrough": 1, "cheap": 2, "default": 3}
    measurements.sort(key=lambda m: (m.concurrency, order[m.config]))
    section = render(measurements, layout, machine, bounds, args.quick)
    print()
    print(section)
    if args.write:
        write_section(args.write, section)
        print(f"wrote the proxy section of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
