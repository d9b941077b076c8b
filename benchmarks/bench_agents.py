"""Agents (issue 5): what identity, lineage and agent state add to each request, with 100
agents and 10,000 recorded responses, for the memory and the redis state backends.

Run: .venv/bin/python benchmarks/bench_agents.py [--write benchmarks/RESULTS.md] [--quick]
         [--no-redis] [--no-proxy]

In process, no HTTP (the calls the proxy makes around its engine, timed on their own):

- Per request: `IdentityResolver.resolve` + `AgentGuard.admit` + `after_request` +
  `after_response`, for a policy of 100 agents in teams of 10 (a key each, `may_send_to`
  their team, a tool list, a rate limit), lineage on, drift on one metric. 10,000 responses (60-200 words, 100 per agent) are
  recorded first. Then every agent holds a conversation: the whole history resent on each
  request, one new user message per request, a new 60-200-word answer recorded after it,
  a new conversation after 10 turns. One new message in five quotes a teammate's recorded
  response (lineage must find the edge); the others are new text.
- Identity alone: `KeyRing.agent_for` over 100 key hashes (all compared, in constant time),
  and `IdentityResolver.resolve` from request headers carrying the key.
- Lineage alone: `fingerprint` and `LineageIndex.match` of one new 50-, 200- and 2,000-word
  message against the 10,000 records, and a 200-word one that quotes a recorded response.
- Memory: VmRSS of a fresh process before and after recording 10,000 responses in the
  memory backend (60-200 words, and all of 150 words), with what the backend holds
  (records, index buckets); and Redis's own `used_memory` for the 60-200-word responses.

End to end (`--no-proxy` leaves it out): the proxy (its own process, pinned as in
bench_proxy.py) in front of the fake upstream, concurrency 1, agent-like traffic, with the
pass-through policy and anonymous requests (the guard has nothing to do) and with the same
policy plus the 100 agents, lineage and drift (each request carries its agent's key;
memory state, and Redis when available); 10,000 responses are recorded through the proxy
first. The difference of the p50s is what the agents' side adds on the wire.

Texts are generated from a fixed seed: words drawn with their frequencies in the agent
conversation of bench_proxy.py (plus its topic words), a few rare tokens (numbers, made-up
names) mixed in, cut into sentences.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_REPO: Final = _HERE.parent
sys.path[:0] = [str(_REPO), str(_HERE)]  # run as a plain script from a checkout, installed or not

import bench_proxy  # noqa: E402  (benchmarks/bench_proxy.py: machine line, percentile, process machinery)
import results  # noqa: E402  (benchmarks/results.py)

from firewall.agents.guard import Admission, AgentGuard  # noqa: E402
from firewall.agents.identity import IdentityResolver  # noqa: E402
from firewall.agents.keys import KEY_PREFIX, KeyRing, hash_key  # noqa: E402
from firewall.agents.lineage import LineageIndex, fingerprint  # noqa: E402
from firewall.agents.state import MemoryState, StateBackend, open_state  # noqa: E402
from firewall.model import Action, Decision, DetectorRun, Direction, Exchange, Message, Mode, Part  # noqa: E402
from firewall.policy import Policy, compile_policy, parse_policy  # noqa: E402

SECTION: Final = "## Agents: identity, lineage, state (issue 5)"
AIM_MEMORY_MS: Final = 0.5
AIM_REDIS_MS: Final = 2.0
EARLIER_MB: Final = 328.0  # measured for 10,000 responses of 150 words with the windowed MinHash index (80 buckets each)
SEED: Final = 5
DRIFT_METRIC: Final = "toxicity"
TOOLS: Final = ("search", "read_file", "write_note")
RESPONSE_WORDS: Final = (60, 200)
MESSAGE_WORDS: Final = (12, 40)
FIXED_WORDS: Final = 150  # the second memory measurement: every response this long
_PRELOAD_CONCURRENCY: Final = 32  # records written at once: Redis round trips overlap, as with many clients
_PROXY_PRELOAD_CONCURRENCY: Final = 8
_BUSY_CONCURRENCY: Final = 32  # requests in flight in the busy rounds
_CHILD_TIMEOUT: Final = 600.0
_SETTLE: Final = 0.2  # seconds: the firewall finishes what it does after the last answer (lineage records)
_CLOSE: Final = 0.05  # an in-process p50 this close to its aim (a share of it): the verdict says how thin the margin is


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much of everything one run does."""

    agents: int = 100
    team: int = 10  # agents per team: each may send to its teammates
    records: int = 10_000  # responses recorded before measuring
    warmup_rounds: int = 1  # untimed: every agent sends one request per round
    rounds: int = 20
    busy_rounds: int = 10  # end to end, after the measured rounds: every agent at once, 32 requests in flight
    turns: int = 10  # requests in one conversation before the agent starts a new one
    quote_every: int = 5  # one new message in this many quotes a teammate's recorded response
    identity_calls: int = 20_000
    match_calls: int = 100  # per message case
    match_words: tuple[int, ...] = (50, 200, 2_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(records=1_000, rounds=3, busy_rounds=3, identity_calls=2_000, match_calls=10)

    @classmethod
    def tiny(cls) -> Sizes:
        """For the test that proves the script runs: seconds, not minutes."""
        return cls(agents=3, team=3, records=20, rounds=2, busy_rounds=1, turns=3, quote_every=2, identity_calls=30,
                   match_calls=3)


# -- texts ----------------------------------------------------------------------------------


class Texts:
    """Deterministic English-like text: words drawn with their frequencies in bench_proxy's
    agent conversation, a few rare tokens, cut into sentences."""

    _SYLLABLES: Final = ("ka", "lo", "mi", "ren", "tas", "vo", "du", "sel", "pri", "gan")

    def __init__(self, seed: int) -> None:
        corpus = bench_proxy._SYSTEM + " " + " ".join(text for _, text in bench_proxy._HISTORY)
        self._tokens = re.findall(r"[a-z]+", corpus.lower()) + list(bench_proxy._WORDS)
        self._rng = random.Random(seed)

    def _word(self) -> str:
        rng = self._rng
        if rng.random() < 0.04:  # names, figures, identifiers: words no cache has seen
            if rng.random() < 0.5:
                return str(rng.randrange(10, 100_000))
            return "".join(rng.choice(self._SYLLABLES) for _ in range(rng.randint(2, 4)))
        return rng.choice(self._tokens)

    def words(self, count: int) -> str:
        rng = self._rng
        sentences: list[str] = []
        left = count
        while left > 0:
            n = min(left, rng.randint(6, 18))
            sentence = " ".join(self._word() for _ in range(n))
            sentences.append(sentence[0].upper() + sentence[1:] + ".")
            left -= n
        return " ".join(sentences)

    def response(self, words: int | None = None) -> str:
        return self.words(words if words is not None else self._rng.randint(*RESPONSE_WORDS))

    def message(self) -> str:
        return self.words(self._rng.randint(*MESSAGE_WORDS))


# -- the policy -------------------------------------------------------------------------------


def agent_names(count: int) -> list[str]:
    return [f"agent-{i:03d}" for i in range(count)]


def agent_key(name: str) -> str:
    """A fixed key per agent, so that runs are alike (a real key is random: `keys new`)."""
    return KEY_PREFIX + hashlib.sha256(f"bench-agents:{name}".encode()).hexdigest()


def teammates(names: Sequence[str], index: int, team: int) -> list[str]:
    first = index - index % team
    return [name for name in names[first:first + team] if name != names[index]]


def agents_policy_yaml(sizes: Sizes) -> str:
    """No rules (so that only the agents' side costs anything), plus the agents: keys,
    edges, tools, a rate limit, lineage (its defaults) and drift on one metric."""
    names = agent_names(sizes.agents)
    lines = [
        "version: 1",
        "name: bench-agents",
        "description: benchmarks/bench_agents.py; no rules, so that only the agents' side costs anything.",
        "defaults: {mode: enforce, on_error: block, unknown_routes: refuse}",
        "identity: {require_key: true}",
        "protocol: {max_hops: 4, agent_rate: {requests: 100000, per: 60}}",
        "lineage: {enabled: true}",
        f"drift: {{metrics: [{DRIFT_METRIC}], min_samples: 30}}",
        "agents:",
    ]
    for index, name in enumerate(names):
        lines.append(f"  {name}: {{keys: [\"{hash_key(agent_key(name))}\"], "
                     f"may_send_to: [{', '.join(teammates(names, index, sizes.team))}], tools: [{', '.join(TOOLS)}]}}")
    lines.append("rules: []")
    return "\n".join(lines) + "\n"


def passthrough_anonymous_yaml() -> str:
    """The pass-through policy for requests that name no agent: the guard has nothing to do."""
    return ("version: 1\nname: bench-agents-baseline\n"
            "description: benchmarks/bench_agents.py baseline; no rules, no agents, no lineage.\n"
            "defaults: {mode: enforce, on_error: block, unknown_routes: refuse}\n"
            "identity: {unidentified: allow}\nlineage: {enabled: false}\nrules: []\n")


def compile_yaml(text: str) -> Policy:
    return compile_policy(parse_policy(text.encode(), "<bench-agents>"))


# -- agent-like traffic ---------------------------------------------------------------------


@dataclass(slots=True)
class Conversation:
    messages: list[Message]
    turns: int = 0


@dataclass(frozen=True, slots=True)
class Request:
    exchange: Exchange
    quoted: str | None  # the teammate whose recorded response the new message quotes


def _quotes_now(sent: list[int], index: int, every: int) -> bool:
    """Whether agent `index`'s next new message quotes: one in `every` of each agent's
    messages, the agents out of step, so that every agent quotes and at different turns."""
    sent[index] += 1
    return (sent[index] + index) % every == 0


def _message(role: str, text: str, index: int) -> Message:
    return Message(role=role, parts=(Part(text=text, path=("messages", index, "content")),))


def _quote(source: str, text: str, item: int = 0) -> str:
    return f"{source} sent this for review (item {item}): {text} Is that right, and what should we do next?"


class Traffic:
    """Every agent's conversation; each request is the history and one new message. Quotes
    are taken from the responses recorded before the traffic only: their path is their
    author alone, so a quote never closes a loop or exceeds max_hops (which would refuse
    the request and measure something else)."""

    def __init__(self, texts: Texts, sizes: Sizes, recorded: Sequence[tuple[str, str]], seed: int) -> None:
        self._texts = texts
        self._sizes = sizes
        self._names = agent_names(sizes.agents)
        self._rng = random.Random(seed)
        self._conversations = [self._fresh() for _ in self._names]
        self._recorded: dict[str, list[str]] = {}
        for agent, text in recorded:
            self._recorded.setdefault(agent, []).append(text)
        self._requests = 0
        self._sent = [0] * len(self._names)
        self._body = {"tools": [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
                                for name in TOOLS[:2]]}

    @staticmethod
    def _fresh() -> Conversation:
        return Conversation([_message("system", bench_proxy._SYSTEM, 0)])

    def request(self, index: int) -> Request:
        conversation = self._conversations[index]
        if conversation.turns >= self._sizes.turns:
            conversation = self._conversations[index] = self._fresh()
        self._requests += 1
        quoted = None
        mates = [name for name in teammates(self._names, index, self._sizes.team) if self._recorded.get(name)]
        if _quotes_now(self._sent, index, self._sizes.quote_every) and mates:
            quoted = self._rng.choice(mates)
            # Numbered: an agent that quotes the same response twice still sends a new message.
            text = _quote(quoted, self._rng.choice(self._recorded[quoted]), self._requests)
        else:
            text = f"{self._rng.choice(bench_proxy._ASKS)} {self._texts.message()}"
        conversation.messages.append(_message("user", text, len(conversation.messages)))
        exchange = Exchange(id=f"ex{self._requests:08d}", direction=Direction.REQUEST, provider="openai",
                            route="openai_chat", messages=tuple(conversation.messages), model="gpt-4o-mini",
                            agent=self._names[index], body=self._body)
        return Request(exchange, quoted)

    def answered(self, index: int, text: str) -> None:
        conversation = self._conversations[index]
        conversation.messages.append(_message("assistant", text, len(conversation.messages)))
        conversation.turns += 1


def _decision(score: float) -> Decision:
    """What the engine would have said: allowed, with the drift metric's score."""
    return Decision(action=Action.ALLOW, intended=Action.ALLOW, mode=Mode.ENFORCE,
                    detectors=(DetectorRun(detector=DRIFT_METRIC, texts=1, skipped=0, ms=0.1, top=score),))


# -- results ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of unsorted values."""
    return bench_proxy._percentile(sorted(values), q)


@dataclass(frozen=True, slots=True)
class Stat:
    """Latencies of one kind of call (ms, or µs where the table says so)."""

    n: int
    p50: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(values), percentile(values, 0.50), percentile(values, 0.99), sum(values) / len(values))


@dataclass(frozen=True, slots=True)
class GuardRun:
    """The per-request cost with one backend."""

    backend: str
    recorded: int  # responses recorded before the traffic
    preload_s: float
    total: Stat  # resolve + admit + after_request + after_response
    admit: Stat
    after: Stat  # after_request + after_response
    quoting: Stat  # total, for the requests whose new message quotes a recorded response
    quotes_found: int  # of those, how many lineage attributed to the quoted teammate
    with_edges: int  # requests whose admission carried a lineage edge (history included)
    refused: int  # requests the guard refused: none expected, or the figures measure something else
    matches: dict[str, Stat]  # lineage match alone, per message case
    state_mib: float | None = None  # Redis: used_memory after recording minus before


@dataclass(frozen=True, slots=True)
class Memory:
    """What recording responses in the memory backend costs a process."""

    words: float  # mean words per response
    rss_before_mib: float
    rss_after_mib: float
    records: int
    record_bytes: int  # record keys and stored values (sys.getsizeof)
    buckets: int  # index bucket sets
    bucket_members: int
    bucket_bytes: int  # bucket keys, their (set, expiry) tuples and the sets; the ids are shared strings
    table_bytes: int  # the backend's two dicts' own tables

    @property
    def delta_mib(self) -> float:
        return self.rss_after_mib - self.rss_before_mib

    @property
    def held_bytes(self) -> int:
        return self.record_bytes + self.bucket_bytes + self.table_bytes


@dataclass(frozen=True, slots=True)
class ProxyRun:
    config: str
    preloaded: int
    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    edges: int  # answers with X-Firewall-Source-Agent: the request carried another agent's words
    cpu_ms: float = math.nan  # the firewall process's CPU time (user + system) per measured request
    busy_requests: int = 0  # then every agent at once, 32 requests in flight
    busy_cpu_ms: float = math.nan  # the firewall's CPU time per request in those
    busy_rps: float = math.nan  # requests/s the load generator saw in those


@dataclass(frozen=True, slots=True)
class Report:
    sizes: Sizes
    command: str
    machine: dict[str, str]
    layout: str
    identity: dict[str, Stat]  # µs
    fingerprints: dict[str, Stat]
    runs: list[GuardRun]
    mean_response_words: float
    redis_note: str = ""  # why there is no redis row, when there is none
    memory: list[Memory] = field(default_factory=list)
    proxy: list[ProxyRun] = field(default_factory=list)
    proxy_note: str = ""


# -- in process ---------------------------------------------------------------------------------


def _corpus(texts: Texts, agents: int, records: int, words: int | None = None) -> list[tuple[str, str]]:
    """(agent, response) for every response recorded before the traffic, spread evenly."""
    names = agent_names(agents)
    return [(names[j % len(names)], texts.response(words)) for j in range(records)]


async def _record_all(lineage: LineageIndex, corpus: Sequence[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for first in range(0, len(corpus), _PRELOAD_CONCURRENCY):
        await asyncio.gather(*(lineage.record(agent, f"pre{first + j:06d}", text)
                               for j, (agent, text) in enumerate(corpus[first:first + _PRELOAD_CONCURRENCY])))
    return time.perf_counter() - started


def _match_cases(texts: Texts, sizes: Sizes, corpus: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """(agent, message) per case; every message unique, so nothing is cached between calls."""
    names = agent_names(sizes.agents)
    rng = random.Random(SEED + 1)
    cases = {f"{words:,} words, new text": [(rng.choice(names), texts.words(words)) for _ in range(sizes.match_calls)]
             for words in sizes.match_words}
    quoting = []
    for _ in range(sizes.match_calls):
        source, quoted = rng.choice(corpus)
        agent = rng.choice([name for name in names if name != source])
        quoting.append((agent, f"{_quote(source, quoted)} {texts.words(max(1, 200 - len(quoted.split())))}"))
    cases["about 200 words quoting a recorded response"] = quoting
    return cases


async def _time_matches(lineage: LineageIndex, cases: dict[str, list[tuple[str, str]]]) -> dict[str, Stat]:
    out = {}
    for name, calls in cases.items():
        times = []
        for agent, text in calls:
            started = time.perf_counter()
            await lineage.match(agent, text)
            times.append(1000 * (time.perf_counter() - started))
        out[name] = Stat.of(times)
    return out


@dataclass(slots=True)
class _Timings:
    totals: list[float] = field(default_factory=list)
    admits: list[float] = field(default_factory=list)
    afters: list[float] = field(default_factory=list)
    quoting: list[float] = field(default_factory=list)
    found: int = 0
    with_edges: int = 0
    refused: int = 0


async def _traffic(guard: AgentGuard, texts: Texts, sizes: Sizes, corpus: Sequence[tuple[str, str]]) -> _Timings:
    from multidict import CIMultiDict  # aiohttp's headers type

    traffic = Traffic(texts, sizes, corpus, SEED + 2)
    resolver = IdentityResolver(guard.policy.agents, spec=guard.policy.spec.identity)
    rng = random.Random(SEED + 3)
    out = _Timings()
    for round_ in range(sizes.warmup_rounds + sizes.rounds):
        measured = round_ >= sizes.warmup_rounds
        for index in range(sizes.agents):
            request = traffic.request(index)
            exchange = request.exchange
            headers = CIMultiDict({"Authorization": f"Bearer {agent_key(str(exchange.agent))}",
                                   "Content-Type": "application/json"})
            asked, answered = _decision(rng.uniform(0, 0.05)), _decision(rng.uniform(0, 0.05))
            response = texts.response()
            started = time.perf_counter()
            identity = resolver.resolve("/v1/chat/completions", headers)
            resolved = time.perf_counter()
            admission: Admission = await guard.admit(exchange)
            admitted = time.perf_counter()
            await guard.after_request(exchange, asked, admission)
            if admission.refusal is None:
                await guard.after_response(exchange, answered, response, admission)
                await guard.settle()  # what the proxy does once the answer is out: counted here
            finished = time.perf_counter()
            traffic.answered(index, response)
            if identity.agent != exchange.agent:
                raise SystemExit(f"identity: the key of {exchange.agent} resolved to {identity.agent!r}")
            if not measured:
                continue
            total = 1000 * (finished - started)
            out.totals.append(total)
            out.admits.append(1000 * (admitted - resolved))
            out.afters.append(1000 * (finished - admitted))
            out.refused += admission.refusal is not None
            out.with_edges += admission.provenance is not None
            if request.quoted is not None:
                out.quoting.append(total)
                new = len(exchange.messages) - 1
                out.found += any(record.get("event") == "lineage" and record.get("source") == request.quoted
                                 and record.get("message") == new for record in admission.records)
    return out


async def _guard_run(backend: str, state: StateBackend, policy: Policy, texts: Texts, sizes: Sizes,
                     corpus: Sequence[tuple[str, str]], cases: dict[str, list[tuple[str, str]]],
                     after_preload: Callable[[], Awaitable[None]] | None = None) -> GuardRun:
    guard = AgentGuard(policy, state)
    assert guard.lineage is not None
    preload = await _record_all(guard.lineage, corpus)
    if after_preload is not None:
        await after_preload()
    matches = await _time_matches(guard.lineage, cases)
    timings = await _traffic(guard, texts, sizes, corpus)
    return GuardRun(backend=backend, recorded=len(corpus), preload_s=preload, total=Stat.of(timings.totals),
                    admit=Stat.of(timings.admits), after=Stat.of(timings.afters), quoting=Stat.of(timings.quoting),
                    quotes_found=timings.found, with_edges=timings.with_edges, refused=timings.refused, matches=matches)


def identity_costs(policy: Policy, sizes: Sizes) -> dict[str, Stat]:
    """KeyRing.agent_for and IdentityResolver.resolve, per call, in µs."""
    from multidict import CIMultiDict  # aiohttp's headers type

    names = agent_names(sizes.agents)
    ring = KeyRing.from_agents({name: [hash_key(agent_key(name))] for name in names})
    resolver = IdentityResolver(policy.agents, spec=policy.spec.identity)
    rng = random.Random(SEED + 4)
    ring_times, resolve_times = [], []
    for _ in range(sizes.identity_calls):
        name = rng.choice(names)
        key = agent_key(name)
        headers = CIMultiDict({"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        started = time.perf_counter_ns()
        found = ring.agent_for(key)
        ring_times.append((time.perf_counter_ns() - started) / 1000)
        started = time.perf_counter_ns()
        identity = resolver.resolve("/v1/chat/completions", headers)
        resolve_times.append((time.perf_counter_ns() - started) / 1000)
        if found != name or identity.agent != name:
            raise SystemExit(f"identity: the key of {name} resolved to {found!r} and {identity.agent!r}")
    return {f"`KeyRing.agent_for` ({len(names)} key hashes)": Stat.of(ring_times),
            f"`IdentityResolver.resolve` (key in Authorization, {len(names)} agents)": Stat.of(resolve_times)}


def fingerprint_costs(policy: Policy, cases: dict[str, list[tuple[str, str]]]) -> dict[str, Stat]:
    spec = policy.spec.lineage
    out = {}
    for name, calls in cases.items():
        times = []
        for _, text in calls:
            started = time.perf_counter()
            fingerprint(text, spec)
            times.append(1000 * (time.perf_counter() - started))
        out[name] = Stat.of(times)
    return out


def measure(sizes: Sizes, *, redis_url: str | None, redis_note: str = "", command: str = "",
            layout: str = "") -> Report:
    """The in-process part: identity, lineage, and the per-request cost with the memory
    backend and, given its URL, a Redis server (emptied first)."""
    machine = bench_proxy._machine()
    policy = compile_yaml(agents_policy_yaml(sizes))
    texts = Texts(SEED)
    corpus = _corpus(texts, sizes.agents, sizes.records)
    cases = _match_cases(texts, sizes, corpus)
    identity = identity_costs(policy, sizes)
    fingerprints = fingerprint_costs(policy, cases)
    runs = [asyncio.run(_guard_run("memory", MemoryState(), policy, texts, sizes, corpus, cases))]
    gc.collect()
    if redis_url is not None:
        runs.append(asyncio.run(_redis_run(redis_url, policy, texts, sizes, corpus, cases)))
    words = sum(len(text.split()) for _, text in corpus) / max(1, len(corpus))
    return Report(sizes=sizes, command=command, machine=machine, layout=layout, identity=identity,
                  fingerprints=fingerprints, runs=runs, mean_response_words=words, redis_note=redis_note)


async def _redis_run(url: str, policy: Policy, texts: Texts, sizes: Sizes, corpus: Sequence[tuple[str, str]],
                     cases: dict[str, list[tuple[str, str]]]) -> GuardRun:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    state = open_state(url)
    used: list[int] = []

    async def note_used() -> None:
        used.append(int((await client.info("memory"))["used_memory"]))

    try:
        await client.flushdb()
        await note_used()
        run = await _guard_run("redis", state, policy, texts, sizes, corpus, cases, note_used)
    finally:
        await state.close()
        await client.aclose()
    return replace(run, state_mib=(used[1] - used[0]) / (1 << 20))


def _status_mib(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def memory_footprint(agents: int, records: int, words: int | None) -> Memory:
    """VmRSS of this process before and after recording `records` responses (of `words`
    words, or 60-200) in a memory backend, and what the backend holds. Meant for a fresh
    process: what an earlier run freed would be reused and hide the growth."""
    from firewall.agents.lineage import LineageSpec

    corpus = _corpus(Texts(SEED + 20), agents, records, words)
    state = MemoryState()
    lineage = LineageIndex(state, LineageSpec())
    gc.collect()
    before = _status_mib("VmRSS")
    asyncio.run(_record_all(lineage, corpus))
    gc.collect()
    after = _status_mib("VmRSS")
    # A benchmark may look inside the backend: what it holds, by kind.
    values, sets = state._values, state._sets
    record_bytes = sum(sys.getsizeof(key) + sys.getsizeof(entry) + sys.getsizeof(entry[0])
                       for key, entry in values.items() if key.startswith("lineage:rec:"))
    # A bucket of one record holds the record id itself, a string shared with every other
    # bucket of that record: only sets (two or more ids) are the bucket's own.
    bucket_bytes = sum(sys.getsizeof(key) + sys.getsizeof(entry) + (0 if isinstance(entry[0], str) else sys.getsizeof(entry[0]))
                       for key, entry in sets.items())
    members = sum(1 if isinstance(entry[0], str) else len(entry[0]) for entry in sets.values())
    mean_words = sum(len(text.split()) for _, text in corpus) / max(1, len(corpus))
    return Memory(words=mean_words, rss_before_mib=before, rss_after_mib=after, records=len(corpus),
                  record_bytes=record_bytes, buckets=len(sets), bucket_members=members, bucket_bytes=bucket_bytes,
                  table_bytes=sys.getsizeof(values) + sys.getsizeof(sets))


def _memory_child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_agents.py _memory")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--words", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(asdict(memory_footprint(args.agents, args.records, args.words))), flush=True)


def measure_memory(sizes: Sizes, cpu: int | None) -> list[Memory]:
    """The memory footprint of 60-200-word and of 150-word responses, each in a fresh process."""
    out = []
    for words in (None, FIXED_WORDS):
        argv = [sys.executable, str(Path(__file__).resolve()), "_memory", "--agents", str(sizes.agents),
                "--records", str(sizes.records)] + ([] if words is None else ["--words", str(words)])
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_CHILD_TIMEOUT, preexec_fn=pin, cwd=_REPO)
        if done.returncode != 0:
            raise SystemExit(f"the memory measurement failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out.append(Memory(**json.loads(done.stdout)))
    return out


# -- end to end: the proxy ---------------------------------------------------------------------


class _ProxyTraffic:
    """The load generator's requests: per agent a conversation resent whole with one new
    message. Each new message carries a tag `[rNNNNNN]` that picks its reply from the fake
    upstream's script, so that every answer is a different 60-200-word text."""

    def __init__(self, sizes: Sizes, seed: int, first_reply: int, quotable: dict[str, list[str]] | None,
                 *, history: bool) -> None:
        self._sizes = sizes
        self._names = agent_names(sizes.agents)
        self._texts = Texts(seed)
        self._rng = random.Random(seed)
        self._reply = first_reply
        self._history = history
        self._histories: list[list[dict[str, str]]] = [[] for _ in self._names]
        self._quotable = quotable  # None: never quote
        self.answers: dict[str, list[str]] = {}
        self._sent = [0] * len(self._names)

    def body(self, index: int, *, anonymous: bool) -> tuple[bytes, dict[str, str]]:
        history = self._histories[index]
        if len(history) >= 2 * self._sizes.turns:
            history.clear()
        tag = f"[r{self._reply:06d}]"
        self._reply += 1
        quotable = self._quotable or {}
        mates = [name for name in teammates(self._names, index, self._sizes.team) if quotable.get(name)]
        if _quotes_now(self._sent, index, self._sizes.quote_every) and mates:
            source = self._rng.choice(mates)
            text = f"{tag} {_quote(source, self._rng.choice(quotable[source]))}"
        else:
            text = f"{tag} {self._rng.choice(bench_proxy._ASKS)} {self._texts.message()}"
        messages = [{"role": "system", "content": bench_proxy._SYSTEM}, *history, {"role": "user", "content": text}]
        if self._history:
            history.append({"role": "user", "content": text})
        key = "sk-bench-not-a-real-key" if anonymous else agent_key(self._names[index])
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        return json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode(), headers

    def answered(self, index: int, text: str) -> None:
        if self._history:
            self._histories[index].append({"role": "assistant", "content": text})
        self.answers.setdefault(self._names[index], []).append(text)


async def _proxy_load(args: argparse.Namespace) -> dict[str, Any]:
    """The load generator (its own process): record responses through the proxy (untimed),
    then warm up and measure at concurrency 1."""
    import aiohttp

    sizes = Sizes(**{**json.loads(args.sizes), "match_words": ()})
    latencies: list[float] = []
    errors = edges = 0
    connector = aiohttp.TCPConnector(limit=max(_PROXY_PRELOAD_CONCURRENCY, _BUSY_CONCURRENCY))
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:

        async def send(traffic: _ProxyTraffic, index: int) -> tuple[float, int, bool]:
            body, headers = traffic.body(index, anonymous=args.anonymous)
            started = time.perf_counter()
            async with session.post(args.url, data=body, headers=headers) as response:
                data = await response.read()
                status, carried = response.status, "X-Firewall-Source-Agent" in response.headers
            elapsed = time.perf_counter() - started
            if status == 200:
                traffic.answered(index, json.loads(data)["choices"][0]["message"]["content"])
            return elapsed, status, carried

        preload = _ProxyTraffic(sizes, SEED + 10, 0, None, history=False)
        for first in range(0, args.preload, _PROXY_PRELOAD_CONCURRENCY):
            done = await asyncio.gather(*(send(preload, (first + j) % sizes.agents)
                                          for j in range(min(_PROXY_PRELOAD_CONCURRENCY, args.preload - first))))
            errors += sum(status != 200 for _, status, _ in done)
        traffic = _ProxyTraffic(sizes, SEED + 11, args.preload, preload.answers, history=True)
        cpu_started = math.nan
        for round_ in range(sizes.warmup_rounds + sizes.rounds):
            if round_ == sizes.warmup_rounds:
                await asyncio.sleep(_SETTLE)
                cpu_started = _cpu_seconds(args.firewall_pid)
            for index in range(sizes.agents):
                elapsed, status, carried = await send(traffic, index)
                errors += status != 200
                if round_ >= sizes.warmup_rounds:
                    latencies.append(1000 * elapsed)
                    edges += carried
        await asyncio.sleep(_SETTLE)
        cpu_ms = 1000 * (_cpu_seconds(args.firewall_pid) - cpu_started) / max(1, len(latencies))

        # Busy: the same conversations go on, every agent at once, 32 requests in flight,
        # so that the firewall's CPU per request is measured with its caches warm.
        in_flight = asyncio.Semaphore(_BUSY_CONCURRENCY)

        async def busy(index: int) -> tuple[float, int, bool]:
            async with in_flight:
                return await send(traffic, index)

        busy_started, busy_cpu = time.perf_counter(), _cpu_seconds(args.firewall_pid)
        for _ in range(sizes.busy_rounds):
            done = await asyncio.gather(*(busy(index) for index in range(sizes.agents)))
            errors += sum(status != 200 for _, status, _ in done)
        busy_seconds = time.perf_counter() - busy_started
        await asyncio.sleep(_SETTLE)
        busy_requests = sizes.busy_rounds * sizes.agents
        busy_cpu_ms = 1000 * (_cpu_seconds(args.firewall_pid) - busy_cpu) / max(1, busy_requests)
    stat = Stat.of(latencies)
    return asdict(ProxyRun(config="", preloaded=args.preload, requests=stat.n, p50_ms=stat.p50, p99_ms=stat.p99,
                           mean_ms=stat.mean, errors=errors, edges=edges, cpu_ms=cpu_ms, busy_requests=busy_requests,
                           busy_cpu_ms=busy_cpu_ms, busy_rps=busy_requests / busy_seconds))


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (NaN without one), from /proc."""
    if pid is None:
        return math.nan
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def _loadgen_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_agents.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--preload", type=int, required=True)
    parser.add_argument("--anonymous", action="store_true")
    parser.add_argument("--firewall-pid", type=int, help="read this process's CPU time around the measured rounds")
    args = parser.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(_proxy_load(args))), flush=True)


def _reply_script(sizes: Sizes) -> list[dict[str, Any]]:
    """The fake upstream's script: reply N to the message tagged [rN], each used once.
    The upstream tries its rules in order, so the measured replies come first: a measured
    request finds its reply after at most (warm-up + measured) rules, not after 10,000."""
    texts = Texts(SEED + 12)
    measured = (sizes.warmup_rounds + sizes.rounds + sizes.busy_rounds) * sizes.agents
    order = [*range(sizes.records, sizes.records + measured), *range(sizes.records)]
    return [{"when": f"[r{n:06d}]", "text": texts.response(), "times": 1} for n in order]


@contextmanager
def _proxy(children: Any, layout: bench_proxy.Layout, tmp: Path, tag: str, policy: Path, script: Path,
           state: str | None) -> Iterator[tuple[int, int]]:
    """The scripted fake upstream and the firewall in front of it, pinned as in
    bench_proxy.py (which starts neither with a script nor a provider key); yields the
    firewall's port and process id."""
    upstream_port = bench_proxy._free_port()
    upstream_log = tmp / f"{tag}-upstream.log"
    upstream = children.start([sys.executable, "-m", "firewall.testing.fake_upstream", "--listen",
                               f"127.0.0.1:{upstream_port}", "--keep", "0", "--script", str(script)],
                              layout.load_cpu, upstream_log)
    firewall = None
    try:
        bench_proxy._wait_ready(upstream, upstream_port, "the fake upstream", upstream_log)
        port = bench_proxy._free_port()
        firewall_log = tmp / f"{tag}-firewall.log"
        argv = [bench_proxy._agent_firewall(), "run", "--policy", str(policy), "--listen", f"127.0.0.1:{port}",
                "--upstream", f"openai=http://127.0.0.1:{upstream_port}", "--audit-log", str(tmp / f"{tag}-audit.jsonl"),
                "--provider-key", f"openai=file:{tmp / 'provider-key'}"]
        if state is not None:
            argv += ["--state", state]
        firewall = children.start(argv, layout.tested_cpu, firewall_log)
        bench_proxy._wait_ready(firewall, port, "the firewall", firewall_log)
        yield port, firewall.pid
    finally:
        if firewall is not None:
            children.stop(firewall)
        children.stop(upstream)


def measure_proxy(sizes: Sizes, tmp: Path, fresh_redis: Callable[[], str] | None) -> list[ProxyRun]:
    """The pass-through policy with anonymous requests, then the agents' policy with memory
    state and (given) Redis state, each with fresh processes and an empty state."""
    layout = bench_proxy._layout()
    children = bench_proxy._Children()
    script = tmp / "replies.json"
    script.write_text(json.dumps(_reply_script(sizes)))
    (tmp / "provider-key").write_text("sk-bench-not-a-real-key\n")
    baseline, agents = tmp / "baseline.yaml", tmp / "agents.yaml"
    baseline.write_text(passthrough_anonymous_yaml())
    agents.write_text(agents_policy_yaml(sizes))
    configs: list[tuple[str, Path, bool, Callable[[], str | None]]] = [
        ("pass-through, anonymous", baseline, True, lambda: None),
        ("agents, memory state", agents, False, lambda: None),
    ]
    if fresh_redis is not None:
        configs.append(("agents, redis state", agents, False, fresh_redis))
    out = []
    try:
        for number, (config, policy, anonymous, state) in enumerate(configs):
            _log(f"end to end: {config} ...")
            tag = f"proxy{number}"
            with _proxy(children, layout, tmp, tag, policy, script, state()) as (port, pid):
                arguments = ["--url", f"http://127.0.0.1:{port}/v1/chat/completions", "--sizes",
                             json.dumps(asdict(sizes)), "--preload", str(sizes.records), "--firewall-pid", str(pid)]
                result = bench_proxy.run_loadgen(children, layout, tmp, tag, Path(__file__).resolve(),
                                                 arguments + (["--anonymous"] if anonymous else []), _CHILD_TIMEOUT)
            run = ProxyRun(**{**result, "config": config})
            _log(f"  p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms, {run.edges} edges, {run.errors} errors")
            if run.errors:
                raise SystemExit(f"end to end, {config}: {run.errors} requests failed; the firewall's log:\n"
                                 f"{(tmp / f'{tag}-firewall.log').read_text(errors='replace')[-3000:]}")
            out.append(run)
    finally:
        children.close()
    return out


# -- the report --------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


def aims(report: Report) -> list[str]:
    """One line per aim, judged on the in-process p50, with the end-to-end figure beside it."""
    by = {run.backend: run for run in report.runs}
    proxy = {run.config.rpartition(", ")[2].removesuffix(" state"): run for run in report.proxy[1:]}
    base = report.proxy[0] if report.proxy else None
    out = []
    for backend, aim, where in (("memory", AIM_MEMORY_MS, "the memory backend"),
                                ("redis", AIM_REDIS_MS, "the redis backend, server on loopback")):
        run = by.get(backend)
        if run is None:
            out.append(f"- Under {aim:g} ms added per request with {where}: not measured ({report.redis_note}).")
            continue
        ok, ok99 = run.total.p50 < aim, run.total.p99 < aim
        line = (f"- Under {aim:g} ms added per request with {where} (in process, judged on p50): p50 "
                f"{run.total.p50:.3f} ms, p99 {run.total.p99:.3f} ms, **{'met' if ok else 'NOT met'}**"
                + (" (p99 too)" if ok and ok99 else " (not at p99)" if ok else ""))
        if abs(aim - run.total.p50) < _CLOSE * aim:
            line += (f", by {abs(aim - run.total.p50):.3f} ms only (under {_CLOSE:.0%} of the aim: within the spread "
                     "between runs on this shared machine)")
        wire = proxy.get(backend)
        if wire is not None and base is not None:
            added = wire.p50_ms - base.p50_ms
            cpu, busy = wire.cpu_ms - base.cpu_ms, wire.busy_cpu_ms - base.busy_cpu_ms
            line += (f". Through the proxy it adds {added:.3f} ms at p50 ({'within' if added < aim else 'over'} the "
                     f"aim), and {cpu:.3f} ms of the firewall's CPU per request at concurrency 1, {busy:.3f} ms with "
                     f"{_BUSY_CONCURRENCY} in flight ({'within' if busy < aim else 'over'} the aim)")
            if added > run.total.p50:
                line += ("; what the proxy does for agents around these calls (an audit record per lineage edge found, "
                         "the key swap, the source-agent header) is not in the in-process figure")
        out.append(line + ".")
    return out


def render(report: Report) -> str:
    s, m = report.sizes, report.machine
    quick = "--quick" in report.command
    lines = [
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} with `{report.command}`"
        f"{' (QUICK RUN: smoke test, not a measurement)' if quick else ''}.",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}; load average before "
        f"the run {m['load']} (other work shares this machine).",
        f"- Layout: {report.layout or 'unpinned'}.",
        f"- Policy: {s.agents} agents in teams of {s.team}, each with a key (its `sha256:` hash), `may_send_to` its "
        f"teammates, `tools` ({', '.join(TOOLS)}) and a rate limit (`protocol.agent_rate`); `identity.require_key`; "
        f"lineage on (its defaults); drift on one metric (`{DRIFT_METRIC}`, CUSUM, baseline of 30); "
        "`protocol.max_hops: 4`; no rules.",
        f"- First {s.records:,} responses are recorded ({s.records // max(1, s.agents)} per agent, "
        f"{RESPONSE_WORDS[0]}-{RESPONSE_WORDS[1]} words, mean {report.mean_response_words:.0f}), generated from a "
        "fixed seed with the word frequencies of bench_proxy's agent conversation and a few rare tokens.",
        "- *Per request*, in process (no HTTP and no engine: the calls the proxy makes around its engine): "
        "`IdentityResolver.resolve` (the agent's key in the headers) + `AgentGuard.admit` + `after_request` + "
        "`after_response`, the last fingerprinting and recording a new "
        f"{RESPONSE_WORDS[0]}-{RESPONSE_WORDS[1]}-word answer. Every agent holds a conversation, resent whole with one "
        f"new user message per request, a new one after {s.turns} turns; {s.warmup_rounds} untimed round, then "
        f"{s.rounds} rounds of one request per agent, one after another. One new message in {s.quote_every} quotes a "
        "teammate's recorded response: *quoting* gives those requests' p50/p99, and *quotes found* how many lineage "
        "attributed to the quoted teammate; *with an edge* counts the requests whose history or new message carried "
        "another agent's words. p50/p99 are nearest-rank, perf_counter around the four calls.",
        "",
        "| state | recorded | requests | p50 ms | p99 ms | mean ms | admit p50 | after-steps p50 | quoting p50 "
        "| quoting p99 | quotes found | with an edge | refused |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in report.runs:
        lines.append(f"| {run.backend} | {run.recorded:,} | {run.total.n:,} | {_ms(run.total.p50)} | {_ms(run.total.p99)} "
                     f"| {_ms(run.total.mean)} | {_ms(run.admit.p50)} | {_ms(run.after.p50)} | {_ms(run.quoting.p50)} "
                     f"| {_ms(run.quoting.p99)} | {run.quotes_found}/{run.quoting.n} | {run.with_edges:,} "
                     f"| {run.refused} |")
    if report.redis_note:
        lines += ["", f"Redis not measured: {report.redis_note}."]

    lines += ["", "Identity alone, per call:", "", "| step | calls | p50 µs | p99 µs | mean µs |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, stat in report.identity.items():
        lines.append(f"| {name} | {stat.n:,} | {stat.p50:.1f} | {stat.p99:.1f} | {stat.mean:.1f} |")

    lines += ["", "Lineage alone, per message: `fingerprint` (no state) and `LineageIndex.match` against the "
              f"{s.records:,} recorded responses, before the traffic (every message unique, so no cache helps):", "",
              "| message | calls | fingerprint p50 ms | "
              + " | ".join(f"match, {run.backend}: p50 ms | p99 ms" for run in report.runs) + " |",
              "| --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in report.runs) + " |"]
    for name, stat in report.fingerprints.items():
        cells = " | ".join(f"{_ms(run.matches[name].p50)} | {_ms(run.matches[name].p99)}" for run in report.runs)
        lines.append(f"| {name} | {stat.n} | {_ms(stat.p50)} | {cells} |")

    lines += ["", *_memory_lines(report), "", *_proxy_lines(report)]
    lines += ["", "Aims of issue 5 (what identity, lineage and agent state add per request; judged in process, the "
              "firewall's own work without HTTP, with the end-to-end figure beside it):", "", *aims(report)]
    return "\n".join(lines) + "\n"


def _memory_lines(report: Report) -> list[str]:
    mib = 1 << 20
    lines = ["Resident memory of the memory backend: not measured."] if not report.memory else [
        "Resident memory of the memory backend, each case in a fresh process: VmRSS before and after recording "
        "the responses (gc collected both times), and what the backend holds by `sys.getsizeof`: *records* (keys and "
        "stored JSON, with the shingle sample), *buckets* (the index: per bucket key, its key, its expiry and "
        "the record id, itself when the bucket holds one record (a string shared with the record's other buckets), "
        "a set when it holds more).",
        "",
        "| responses | words (mean) | RSS before MiB | RSS after MiB | growth MiB | KiB per response | records MiB "
        "| buckets | ids in them | buckets MiB | dict tables MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mem in report.memory:
        lines.append(f"| {mem.records:,} | {mem.words:.0f} | {mem.rss_before_mib:.0f} | {mem.rss_after_mib:.0f} "
                     f"| {mem.delta_mib:.0f} | {1024 * mem.delta_mib / max(1, mem.records):.1f} "
                     f"| {mem.record_bytes / mib:.0f} | {mem.buckets:,} | {mem.bucket_members:,} "
                     f"| {mem.bucket_bytes / mib:.0f} | {mem.table_bytes / mib:.0f} |")
    redis = next((run for run in report.runs if run.state_mib is not None), None)
    if redis is not None:
        lines += ["", f"Redis holds the {redis.recorded:,} responses of the in-process run ({report.mean_response_words:.0f} "
                  f"words on average) in {redis.state_mib:.1f} MiB (`used_memory` after recording minus before)."]
    fixed = next((mem for mem in report.memory if round(mem.words) == FIXED_WORDS), None)
    if fixed is not None:
        lines += ["", _memory_verdict(fixed)]
    return lines


def _memory_verdict(mem: Memory) -> str:
    """What 10,000 responses of 150 words take, and what dominates, beside the earlier index's figure."""
    mb = mem.delta_mib * (1 << 20) / 1e6 * 10_000 / max(1, mem.records)
    share = mem.bucket_bytes / max(1, mem.held_bytes)
    dominant = "the index buckets" if mem.bucket_bytes > mem.record_bytes else "the records"
    return (f"10,000 responses of {FIXED_WORDS} words take {mb:.0f} MB "
            f"({mem.delta_mib * 10_000 / max(1, mem.records):.0f} MiB) of resident memory in the memory backend "
            f"({EARLIER_MB:.0f} MB with the windowed MinHash index this one replaced, 80 buckets per response). "
            f"{dominant[0].upper() + dominant[1:]} dominate: "
            f"{share:.0%} of what the backend holds, {mem.buckets / max(1, mem.records):.0f} buckets per response "
            f"(one per sampled shingle), each a key of its own with its expiry and (almost always) one "
            f"shared record id, about {mem.bucket_bytes / max(1, mem.buckets):.0f} bytes apiece before allocator "
            f"overhead; the records with their "
            f"shingle samples are {mem.record_bytes / max(1, mem.records) / 1024:.1f} KiB per response. "
            f"`sys.getsizeof` accounts for {mem.held_bytes / (1 << 20):.0f} of the {mem.delta_mib:.0f} MiB of growth; "
            "the rest is the allocator's overhead and what fingerprinting left behind (freed, not returned). Memory "
            "grows with the distinct shingles of a response: one in `lineage.sample` is a bucket.")


def _proxy_lines(report: Report) -> list[str]:
    if not report.proxy:
        return [f"End to end: not measured ({report.proxy_note or 'left out'})."]
    s = report.sizes
    base = report.proxy[0]
    lines = [
        "End to end, through the proxy at concurrency 1, firewall and fake upstream pinned as in bench_proxy.py, "
        "audit log written: *pass-through, anonymous* is the pass-through policy with requests that name no agent "
        "(the guard has nothing to do); the *agents* rows are the policy above, each request carrying its agent's "
        "key (swapped for a provider key upstream). Fresh processes and empty state for each row; "
        f"{s.records:,} responses are recorded through the proxy first (untimed, {_PROXY_PRELOAD_CONCURRENCY} at a "
        "time, the fake upstream answering each request with a different 60-200-word reply from its script), then "
        f"{s.warmup_rounds} untimed round and {s.rounds} rounds of one request per agent, conversations as above "
        "(one new message in five quoting a teammate's recorded answer). *edges*: answers that came back with "
        "`X-Firewall-Source-Agent`. *CPU ms*: the firewall process's CPU time (user + system, from /proc) over the "
        "measured rounds, divided by their requests: the work per request wherever it runs, including what the "
        "firewall does after an answer is out (with memory state, fingerprinting the answer for lineage waits until "
        "then; with Redis it is done before the answer is released, so another replica cannot miss it). At "
        "concurrency 1 the firewall sleeps between requests and starts each one with cold caches; *busy* is the same "
        f"traffic going on for {s.busy_rounds} more rounds with every agent at once, {_BUSY_CONCURRENCY} requests in "
        "flight: CPU per request there is what a loaded firewall spends (*req/s*: what the load generator, on the "
        "other CPU, got through).",
        "",
        "| configuration | recorded first | requests | p50 ms | p99 ms | mean ms | added p50 ms | added p99 ms | edges "
        "| CPU ms per request | added CPU ms | busy: CPU ms per request | added | req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in report.proxy:
        added50 = "" if run is base else f"{run.p50_ms - base.p50_ms:+.3f}"
        added99 = "" if run is base else f"{run.p99_ms - base.p99_ms:+.3f}"
        added_cpu = "" if run is base else f"{run.cpu_ms - base.cpu_ms:+.3f}"
        added_busy = "" if run is base else f"{run.busy_cpu_ms - base.busy_cpu_ms:+.3f}"
        preloaded = f"{run.preloaded:,}" if run is not base else "–"
        lines.append(f"| {run.config} | {preloaded} | {run.requests:,} | {run.p50_ms:.3f} | {run.p99_ms:.3f} "
                     f"| {run.mean_ms:.3f} | {added50} | {added99} | {run.edges:,} | {_ms(run.cpu_ms)} | {added_cpu} "
                     f"| {_ms(run.busy_cpu_ms)} | {added_busy} | {run.busy_rps:,.0f} |")
    return lines


# -- main -------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def redis_absent() -> str | None:
    """Why Redis cannot be measured here, or None."""
    if os.environ.get("AFW_SKIP_REDIS") == "1":
        return "AFW_SKIP_REDIS=1"
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis extra is not installed (pip install 'agent-firewall[redis]')"
    return None


@contextmanager
def _redis_server(tmp: Path, cpu: int | None) -> Iterator[Any]:
    """A redis-server of our own (tests/redis_server.py), pinned to `cpu` when given."""
    from tests.redis_server import running_redis_server

    with running_redis_server(tmp / "redis") as server:
        if cpu is not None:
            os.sched_setaffinity(server.process.pid, {cpu})
        yield server


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:
        _loadgen_main(argv[1:])
        return 0
    if argv[:1] == ["_memory"]:
        _memory_child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="RESULTS.md", help="replace the agents section of this file")
    parser.add_argument("--quick", action="store_true", help="fewer records and requests (a smoke test)")
    parser.add_argument("--no-redis", action="store_true", help="leave the redis backend out")
    parser.add_argument("--no-proxy", action="store_true", help="leave the end-to-end part out")
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, bench_proxy._interrupt)

    sizes = Sizes.quick() if args.quick else Sizes()
    command = " ".join([".venv/bin/python benchmarks/bench_agents.py", *(flag for flag, on in (
        ("--quick", args.quick), ("--no-redis", args.no_redis), ("--no-proxy", args.no_proxy)) if on)])
    absent = "left out with --no-redis" if args.no_redis else redis_absent()
    cpus = sorted(os.sched_getaffinity(0))
    own, other = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    layout = (f"in process: this process on CPU {own}, redis-server on CPU {other}" if own is not None
              else "unpinned: only one CPU is available")
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-agents-") as scratch:
            tmp = Path(scratch)
            _log(f"memory: {sizes.records:,} responses, in fresh processes ...")
            memory = measure_memory(sizes, own)
            with _maybe_redis(tmp, absent, other) as server:
                _log(f"in process: {sizes.agents} agents, {sizes.records:,} recorded responses"
                     + ("" if server else f" (no redis: {absent})") + " ...")
                if own is not None:
                    # One core's work plus loopback round trips, not two processes sharing a core.
                    os.sched_setaffinity(0, {own})
                report = measure(sizes, redis_url=server.url if server else None, redis_note=absent or "",
                                 command=command, layout=layout)
                report = replace(report, memory=memory)
                if own is not None:
                    os.sched_setaffinity(0, set(cpus))
                _log(f"  done after {time.perf_counter() - started:.0f} s")
                if args.no_proxy:
                    report = replace(report, proxy_note="left out with --no-proxy")
                else:
                    def fresh_redis() -> str:
                        server.restart()  # empty, as the proxy's memory state starts
                        if other is not None:
                            os.sched_setaffinity(server.process.pid, {other})
                        return server.url

                    runs = measure_proxy(sizes, tmp, fresh_redis if server else None)
                    pinned = bench_proxy._layout()
                    end_to_end = (f"firewall on CPU {pinned.tested_cpu}; fake upstream, load generator and redis-server "
                                  f"on CPU {pinned.load_cpu}" if pinned.pinned else "unpinned")
                    report = replace(report, proxy=runs, layout=f"{layout}; end to end: {end_to_end}")
    except KeyboardInterrupt:
        _log("bench_agents: interrupted; every process it started is stopped")
        return 130
    _log(f"done in {time.perf_counter() - started:.0f} s")
    section = render(report)
    print(section)
    if args.write:
        results.write_section(args.write, SECTION, section)
        _log(f"wrote the agents section of {args.write}")
    return 0


@contextmanager
def _maybe_redis(tmp: Path, absent: str | None, cpu: int | None) -> Iterator[Any]:
    if absent is not None:
        yield None
        return
    with _redis_server(tmp, cpu) as server:
        yield server


if __name__ == "__main__":
    raise SystemExit(main())
