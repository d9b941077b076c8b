"""Detector cost: messages per second of each detector of the default policy, and of the
whole policy (the engine deciding a request), single and batched.

Run in its own process, pinned to one CPU, by run.py (`run.py _loadgen detectors ...`).
Every message is unique (agent-like text from bench_proxy's generator), so neither a
detector's cache nor the engine's per-message memo ever answers: this is the cost of a
new message. Timing helpers come from bench_detectors.py.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench_detectors import BATCH

from bench_proxy import _ASKS, _WORDS, DEFAULT_POLICY

_WARMUP: Final = 8  # calls before timing: models load lazily, and the first calls are cold


@dataclass(frozen=True, slots=True)
class Rate:
    name: str
    mode: str  # "single" or "batch 32"
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def us_per_message(self) -> float:
        return 1e6 * self.seconds / self.messages


@dataclass(frozen=True, slots=True)
class DetectorCost:
    rates: list[dict[str, Any]]
    mean_words: float
    policy: str


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(18, 30)))
        out.append(f"{rng.choice(_ASKS)} item {i}: {words}.")
    return out


def _rate(name: str, mode: str, call: Callable[[list[str]], object], texts: list[str], size: int,
          budget: float) -> Rate:
    """Call `call` on consecutive chunks of `size` new texts until `budget` seconds or the
    texts run out (a slow detector is timed on fewer messages, never on repeats)."""
    done = 0
    started = time.perf_counter()
    while done + size <= len(texts):
        call(texts[done:done + size])
        done += size
        if time.perf_counter() - started >= budget:
            break
    return Rate(name, mode, done, time.perf_counter() - started)


def measure(budget: float, n_texts: int) -> DetectorCost:
    from firewall import Direction, Engine, Exchange
    from firewall.detectors import CachedDetector
    from firewall.model import Message, Part
    from firewall.policy import load_policy_file

    policy = load_policy_file(DEFAULT_POLICY)
    texts = _texts(n_texts, seed=7)
    warm = _texts(_WARMUP * BATCH, seed=8)
    # The detectors as the policy built them, without the cache in front (all misses
    # anyway; the cache's own cost is bench_detectors.py's business).
    detectors: dict[str, Any] = {name: (d.inner if isinstance(d, CachedDetector) else d)
                                 for name, d in policy.detectors.items()}
    detectors[f"patterns ({len(policy.spec.lists)} lists, {len(policy.spec.patterns)} regexes)"] = policy.patterns
    rates: list[Rate] = []
    offset = 0

    def fresh(count: int) -> list[str]:
        # Each timing gets texts no earlier timing has seen (the engine memo is per engine,
        # but a detector may keep state; unique texts keep every run honest).
        nonlocal offset
        chunk = texts[offset:offset + count] if offset + count <= len(texts) else _texts(count, seed=offset + 100)
        offset += count
        return chunk

    for name, detector in detectors.items():
        for i in range(_WARMUP):
            detector.score(warm[i * BATCH:(i + 1) * BATCH])
        rates.append(_rate(name, "single", lambda chunk, d=detector: d.score(chunk), fresh(n_texts // 4), 1, budget))
        rates.append(_rate(name, f"batch {BATCH}", lambda chunk, d=detector: d.score(chunk), fresh(n_texts // 2),
                           BATCH, budget))

    engine = Engine(policy)
    counter = iter(range(10**9))

    def inspect(chunk: list[str]) -> object:
        messages = tuple(Message(role="user", parts=(Part(text, ("messages", i, "content")),))
                         for i, text in enumerate(chunk))
        exchange = Exchange(id=f"ex_{next(counter)}", direction=Direction.REQUEST, provider="openai",
                            route="openai_chat", messages=messages, model="gpt-4o-mini", agent="researcher")
        return engine.inspect(exchange)

    for i in range(_WARMUP):
        inspect(warm[i * BATCH:(i + 1) * BATCH])
    whole = f"whole policy ({policy.name}, request direction, {len(policy.rules)} rules)"
    rates.append(_rate(whole, "single", inspect, fresh(n_texts // 4), 1, budget))
    rates.append(_rate(whole, f"batch {BATCH}", inspect, fresh(n_texts // 2), BATCH, budget))
    words = sum(len(t.split()) for t in texts) / len(texts)
    return DetectorCost(rates=[{"name": r.name, "mode": r.mode, "messages": r.messages, "seconds": r.seconds}
                               for r in rates], mean_words=words, policy=str(Path(DEFAULT_POLICY).name))


def child_main(argv: Sequence[str]) -> None:
    from bench_proxy import run_load

    parser = argparse.ArgumentParser(prog="run.py _loadgen detectors")
    parser.add_argument("--budget", type=float, required=True, help="seconds per row, at most")
    parser.add_argument("--texts", type=int, required=True)
    parser.add_argument("--watch", action="append", default=[])
    args = parser.parse_args(argv)

    async def load(args: argparse.Namespace) -> DetectorCost:
        # Synchronous work; run_load's event loop only carries it.
        return measure(args.budget, args.texts)

    run_load(load, args)
