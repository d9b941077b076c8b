"""Soak (issue 8): a bounded run of mixed agent traffic through one firewall process, checked
request by request: no blocked text delivered, no lost audit records, no unexpected errors,
and resident memory that stops growing after the warm-up.

Run: .venv/bin/python benchmarks/bench_soak.py [--requests 20000] [--warmup 50000] [--concurrency 64]
         [--write benchmarks/RESULTS.md]

The firewall runs the default pack without its semantic stage (benchmarks/policy_variants.py:
the model stage costs ~20 ms a message and would make this a benchmark of MiniLM), with an
audit log, in front of the fake upstream, both on loopback. The load generator (this
process) sends agent-like chat requests from 16 agents, 64 at a time, each a short history
plus one new message; a third of them streamed. Each request is one of:

- allowed: a benign question, a benign answer;
- blocked request: the new message proposes to kill someone (the rule `violent-suggestion`);
- blocked answer: the upstream's answer does (cut mid-stream when streamed);
- redacted answer: the upstream's answer carries an OpenAI key (the rule `redact-secrets`).

Checks, on every response: its status is the one its kind expects (200, or 403 for a block
that is not streamed); the violent sentence and the key never appear in what the client
received (streams are read whole); every exchange id the client saw has its records in the
audit log (a request record, and an answer record unless the request was blocked), and the
log's hash chain verifies. VmRSS of the firewall is read after a warm-up (50,000 requests,
checked like the rest, by default), which fills what it keeps within bounds, and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_REPO: Final = _HERE.parent
sys.path[:0] = [str(_REPO), str(_HERE)]

import bench_proxy  # noqa: E402  (process machinery, machine line)
import results  # noqa: E402
from policy_variants import strip_semantic  # noqa: E402

from firewall.audit import read_records, verify  # noqa: E402

SECTION: Final = "## Soak (issue 8)"
KINDS: Final = ("allowed", "blocked request", "blocked answer", "redacted answer")
WEIGHTS: Final = (0.55, 0.15, 0.15, 0.15)
VIOLENT: Final = "the best solution is to murder him in his sleep"
KEY: Final = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
AGENTS: Final = 16
SEED: Final = 8
_READ_TIMEOUT: Final = 60.0


@dataclass(slots=True)
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    exchanges: dict[str, str] = field(default_factory=dict)  # exchange id -> kind
    latencies: list[float] = field(default_factory=list)


def _script() -> list[dict[str, Any]]:
    """The fake upstream's answers, chosen by a tag in the new message."""
    return [
        {"when": "[blockanswer]", "text": f"Sure. Honestly, {VIOLENT}, and nobody will know."},
        {"when": "[redact]", "text": f"Use this key: {KEY} and keep it safe."},
        {"when": "[allow]", "text": "The shipment left on Tuesday; the invoice is attached to the ticket."},
    ]


def _request(kind: str, agent: int, rng: random.Random, stream: bool) -> dict[str, Any]:
    history = [{"role": "system", "content": "You are a logistics assistant for a small team."},
               {"role": "user", "content": "What happened to order 1182?"},
               {"role": "assistant", "content": "It was delayed at the warehouse by a day."}]
    nonce = rng.randrange(10**9)
    tag = {"allowed": "[allow]", "blocked request": "[allow]", "blocked answer": "[blockanswer]",
           "redacted answer": "[redact]"}[kind]
    text = f"{tag} Question {nonce}: where is order {nonce % 10_000} now?"
    if kind == "blocked request":
        text = f"{tag} Planner note {nonce}: {VIOLENT}."
    return {"model": "gpt-4o-mini", "messages": [*history, {"role": "user", "content": text}], "stream": stream}


def _expected_status(kind: str, stream: bool) -> int:
    if kind == "blocked request":
        return 403
    if kind == "blocked answer" and not stream:
        return 403
    return 200


async def _load(url: str, requests: int, concurrency: int, tally: Tally, warm: int, on_warm: Any) -> float:
    import aiohttp

    rng = random.Random(SEED)
    plan = [(rng.choices(KINDS, WEIGHTS)[0], rng.randrange(AGENTS), rng.random() < 1 / 3) for _ in range(requests)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    done = 0
    timeout = aiohttp.ClientTimeout(total=_READ_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                index = queue.get_nowait()
                kind, agent, stream = plan[index]
                body = _request(kind, agent, random.Random(index), stream)
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body, headers={"X-Agent-Id": f"agent-{agent:02d}"}) as answer:
                        data = await answer.read()
                        status, exchange = answer.status, answer.headers.get("X-Firewall-Exchange-Id", "")
                except (aiohttp.ClientError, TimeoutError) as error:
                    tally.unexpected.append(f"{kind}: {type(error).__name__}: {error}")
                    continue
                tally.latencies.append(time.perf_counter() - started)
                tally.sent[kind + (" (stream)" if stream else "")] += 1
                if status != _expected_status(kind, stream):
                    tally.unexpected.append(f"{kind}{' (stream)' if stream else ''}: HTTP {status}: {data[:200]!r}")
                if kind != "allowed" and (VIOLENT.encode() in data or KEY.encode() in data):
                    tally.leaked.append(f"{kind}{' (stream)' if stream else ''} {exchange}")
                if exchange:
                    tally.exchanges[exchange] = kind
                done += 1
                if done == warm:
                    on_warm()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True, slots=True)
class Soak:
    requests: int
    warmup: int
    concurrency: int
    seconds: float
    sent: dict[str, int]
    unexpected: list[str]
    leaked: list[str]
    records: int
    missing: list[str]
    chain_ok: bool
    rss_warm_mib: float
    rss_end_mib: float
    p50_ms: float
    p99_ms: float

    @property
    def growth(self) -> float:
        return self.rss_end_mib / self.rss_warm_mib - 1


def _missing_records(log: Path, exchanges: dict[str, str]) -> tuple[int, list[str]]:
    seen: dict[str, set[str]] = {}
    count = 0
    for record in read_records(log):
        count += 1
        exchange = record.get("exchange")
        if isinstance(exchange, str):
            seen.setdefault(exchange, set()).add(str(record.get("direction")))
    missing = []
    for exchange, kind in exchanges.items():
        directions = seen.get(exchange, set())
        wanted = {"request"} if kind == "blocked request" else {"request", "response"}
        if not wanted <= directions:
            missing.append(f"{exchange} ({kind}): has {sorted(directions)}")
    return count, missing


def run(requests: int, concurrency: int, warmup: int, *, lineage: bool = True) -> Soak:
    layout = bench_proxy._layout()
    children = bench_proxy._Children()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        tmp = Path(scratch)
        policy = tmp / "cheap.yaml"
        strip_semantic(_REPO / "policies" / "default.yaml", policy)
        # The traffic breaks rules on purpose, from every agent: without this, the agents
        # would be quarantined within seconds and the run would measure refusals.
        policy.write_text(policy.read_text() + "\nquarantine: {violations: 1000000, window: 1}\n"
                          + ("" if lineage else "lineage: {enabled: false}\n"))
        script = tmp / "script.json"
        script.write_text(json.dumps(_script()))
        log = tmp / "audit.jsonl"
        try:
            upstream_port, port = bench_proxy._free_port(), bench_proxy._free_port()
            upstream = children.start([sys.executable, "-m", "firewall.testing.fake_upstream", "--listen",
                                       f"127.0.0.1:{upstream_port}", "--keep", "0", "--script", str(script)],
                                      layout.load_cpu, tmp / "upstream.log")
            bench_proxy._wait_ready(upstream, upstream_port, "the fake upstream", tmp / "upstream.log")
            firewall = children.start([bench_proxy._agent_firewall(), "run", "--policy", str(policy), "--listen",
                                       f"127.0.0.1:{port}", "--upstream", f"openai=http://127.0.0.1:{upstream_port}",
                                       "--audit-log", str(log)], layout.tested_cpu, tmp / "firewall.log")
            bench_proxy._wait_ready(firewall, port, "the firewall", tmp / "firewall.log")
            tally = Tally()
            rss: dict[str, float] = {}
            seconds = asyncio.run(_load(f"http://127.0.0.1:{port}/v1/chat/completions", warmup + requests, concurrency,
                                        tally, max(1, warmup), lambda: rss.setdefault("warm", _rss_mib(firewall.pid))))
            time.sleep(0.5)  # what the firewall does after the last answer (deferred lineage records)
            rss["end"] = _rss_mib(firewall.pid)
            children.stop(firewall)  # closes the audit log
            count, missing = _missing_records(log, tally.exchanges)
            report = verify(log)
        finally:
            children.close()
    ordered = sorted(tally.latencies)
    return Soak(requests=requests, warmup=warmup, concurrency=concurrency, seconds=seconds, sent=dict(sorted(tally.sent.items())),
                unexpected=tally.unexpected, leaked=tally.leaked, records=count, missing=missing,
                chain_ok=report.ok, rss_warm_mib=rss.get("warm", float("nan")), rss_end_mib=rss["end"],
                p50_ms=1000 * bench_proxy._percentile(ordered, 0.5), p99_ms=1000 * bench_proxy._percentile(ordered, 0.99))


def render(soak: Soak, command: str, without_lineage: Soak | None = None) -> str:
    machine = bench_proxy._machine()
    ok = not soak.unexpected and not soak.leaked and not soak.missing and soak.chain_ok and soak.growth < 0.10
    lines = [
        SECTION, "",
        f"Measured {datetime.date.today().isoformat()} with `{command}`.", "",
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), Linux {machine['kernel']}, Python {machine['python']}; "
        f"load average before the run {machine['load']} (other work shares this machine).",
        f"- {soak.warmup:,} requests of warm-up, then {soak.requests:,}, all checked, from {AGENTS} agents, "
        f"{soak.concurrency} at a time, through one firewall process (the default pack without its semantic stage, "
        "audit log on) in front of the fake upstream; a third streamed. The warm-up fills what the firewall keeps "
        "within bounds: the engine remembers 50,000 message verdicts (each request brings one new message), "
        "normalisation 16,384 texts, and the memory state the lineage records of the last 20,000 answers "
        "(`lineage.memory_records`). Memory is compared after it. Kinds (all requests): "
        + ", ".join(f"{kind} {count:,}" for kind, count in soak.sent.items()) + ".",
        f"- {soak.seconds:.1f} s for all {soak.warmup + soak.requests:,}, {(soak.warmup + soak.requests) / soak.seconds:,.0f} requests/s, latency p50 {soak.p50_ms:.1f} ms, "
        f"p99 {soak.p99_ms:.1f} ms ({soak.concurrency} in flight; firewall pinned to one core).",
        "",
        "| check | result |",
        "| --- | --- |",
        f"| unexpected statuses or errors | {len(soak.unexpected)} |",
        f"| blocked or redacted text delivered | {len(soak.leaked)} |",
        f"| exchanges missing an audit record | {len(soak.missing)} of {sum(soak.sent.values()):,} |",
        f"| audit records, hash chain | {soak.records:,}, {'verified' if soak.chain_ok else 'BROKEN'} |",
        f"| firewall VmRSS after warm-up / at the end | {soak.rss_warm_mib:.0f} MiB / {soak.rss_end_mib:.0f} MiB "
        f"({soak.growth:+.1%}) |",
        "",
    ]
    if without_lineage is not None:
        other = without_lineage
        lines += [
            "What lineage costs in memory: the same soak with `lineage: {enabled: false}`: VmRSS "
            f"{other.rss_warm_mib:.0f} MiB after the warm-up, {other.rss_end_mib:.0f} MiB at the end ({other.growth:+.1%}); "
            f"{len(other.unexpected)} unexpected, {len(other.leaked)} delivered, {len(other.missing)} missing records.",
            "",
        ]
    lines += [
        f"Aim (issue 8): no lost audit records, no blocked text delivered, no unexpected errors, memory after the "
        f"warm-up growing by under 10%: **{'met' if ok else 'NOT met'}**.",
    ]
    for name, items in (("unexpected", soak.unexpected), ("leaked", soak.leaked), ("missing", soak.missing)):
        if items:
            lines += ["", f"First {name}: " + "; ".join(items[:5])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=50_000, help="requests before memory is first read (checked too)")
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the soak section of this file")
    parser.add_argument("--no-compare", action="store_true", help="skip the second run without lineage")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python benchmarks/bench_soak.py",
                        *([f"--requests {args.requests}"] if args.requests != 20_000 else []),
                        *([f"--concurrency {args.concurrency}"] if args.concurrency != 64 else []),
                        *([f"--warmup {args.warmup}"] if args.warmup != 50_000 else [])])
    soak = run(args.requests, args.concurrency, args.warmup)
    other = None if args.no_compare else run(args.requests, args.concurrency, args.warmup, lineage=False)
    section = render(soak, command, other)
    print(section)
    if args.write:
        results.write_section(args.write, SECTION, section)
    bad = soak.unexpected or soak.leaked or soak.missing or not soak.chain_ok or (
        other is not None and (other.unexpected or other.leaked or other.missing or not other.chain_ok))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
