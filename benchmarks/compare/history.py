"""History scaling: one conversation growing turn by turn, each turn resending the whole history.

The client (run in its own process by run.py, pinned like bench_proxy's load generator)
sends every turn twice, back to back: straight to the fake upstream (direct) and through
the firewall, so both see the same body at the same moment and slow drift of the machine
cancels out. The assistant's answer that the firewall returned becomes the next turn's
history, as an agent's SDK would do. Per turn: added latency = firewall - direct.

The summary (pure logic) turns the per-turn lists of
several conversations (after one short, unmeasured warm-up conversation) into the per-turn added latency (median over conversations of the
difference, then a median over a window of turns) and the ratio of the last window to the
first: flat per-turn cost means a ratio near 1.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from bench_proxy import _ASKS, _SYSTEM, _WORDS

WINDOW: Final = 5  # turns per window at each end (one turn alone is one noisy sample)
_HEADERS: Final = {"Content-Type": "application/json", "Authorization": "Bearer bench-not-a-real-key"}


def _user_text(rng: random.Random, conversation: int, turn: int) -> str:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(18, 30)))
    return f"{rng.choice(_ASKS)} item {conversation}.{turn}: {words}."


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(args.seed)
    direct: list[list[float]] = []
    firewall: list[list[float]] = []
    body_bytes: list[int] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=2)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:

        async def post(url: str, body: bytes, agent: str) -> tuple[float, Any]:
            started = time.perf_counter()
            async with session.post(url, data=body, headers={**_HEADERS, "X-Agent-Id": agent}) as response:
                raw = await response.read()
                status = response.status
            elapsed = time.perf_counter() - started
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            return elapsed, json.loads(raw) if status == 200 else None

        # A short conversation first, not measured: the firewall's first requests pay one-off
        # costs (lazy model loading, first inference, connection set-up) that would
        # otherwise land on turn 1 and flatter the ratio.
        warm: list[dict[str, str]] = [{"role": "system", "content": _SYSTEM}]
        for turn in range(1, args.warmup_turns + 1):
            warm.append({"role": "user", "content": _user_text(rng, -1, turn)})
            body = json.dumps({"model": "gpt-4o-mini", "messages": warm}, separators=(",", ":")).encode()
            await post(args.direct, body, "historian-warmup")
            _, answer = await post(args.firewall, body, "historian-warmup")
            warm.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"] if answer else ""})
        for conversation in range(args.conversations):
            agent = f"historian-{conversation}"  # one agent per conversation, as in a real team
            messages: list[dict[str, str]] = [{"role": "system", "content": _SYSTEM}]
            times_direct: list[float] = []
            times_firewall: list[float] = []
            for turn in range(1, args.turns + 1):
                messages.append({"role": "user", "content": _user_text(rng, conversation, turn)})
                body = json.dumps({"model": "gpt-4o-mini", "messages": messages}, separators=(",", ":")).encode()
                if conversation == 0:
                    body_bytes.append(len(body))
                elapsed_direct, _ = await post(args.direct, body, agent)
                elapsed_firewall, answer = await post(args.firewall, body, agent)
                times_direct.append(elapsed_direct)
                times_firewall.append(elapsed_firewall)
                text = answer["choices"][0]["message"]["content"] if answer else "(no answer)"
                messages.append({"role": "assistant", "content": text})
            direct.append(times_direct)
            firewall.append(times_firewall)
    return {"direct": direct, "firewall": firewall, "body_bytes": body_bytes, "statuses": statuses}


def client_main(argv: Sequence[str]) -> None:
    from bench_proxy import run_load

    parser = argparse.ArgumentParser(prog="run.py _loadgen history")
    parser.add_argument("--direct", required=True)
    parser.add_argument("--firewall", required=True)
    parser.add_argument("--turns", type=int, required=True)
    parser.add_argument("--conversations", type=int, required=True)
    parser.add_argument("--warmup-turns", type=int, default=10)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--watch", action="append", default=[])
    args = parser.parse_args(argv)

    async def load(args: argparse.Namespace) -> _Out:
        return _Out(await _client(args))

    run_load(load, args)


@dataclass(frozen=True, slots=True)
class _Out:
    """run_load prints `asdict(result)`: this wraps the client's plain dict."""

    result: dict[str, Any]


# -- the summary (pure) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistorySummary:
    turns: int
    conversations: int
    added_ms: list[float]  # per turn (index 0 = turn 1): median over conversations of firewall - direct
    direct_ms: list[float]  # per turn: median over conversations
    firewall_ms: list[float]
    first_ms: float  # median added latency over the first WINDOW turns
    last_ms: float  # ... over the last WINDOW turns
    ratio: float  # last / first
    body_bytes: list[int]


def summarise(direct: Sequence[Sequence[float]], firewall: Sequence[Sequence[float]],
              body_bytes: Sequence[int], window: int = WINDOW) -> HistorySummary:
    """Per-turn medians over conversations, in ms, and the last-window / first-window ratio.
    The added latency of a turn is the median of the per-conversation differences, so one
    slow request in one conversation does not move it."""
    if not direct or len(direct) != len(firewall):
        raise ValueError("need the same number of conversations, at least one, for direct and firewall")
    turns = min(len(c) for c in (*direct, *firewall))
    window = max(1, min(window, turns // 2 or 1))
    added = [1000 * statistics.median(f[t] - d[t] for d, f in zip(direct, firewall)) for t in range(turns)]
    direct_ms = [1000 * statistics.median(d[t] for d in direct) for t in range(turns)]
    firewall_ms = [1000 * statistics.median(f[t] for f in firewall) for t in range(turns)]
    first = statistics.median(added[:window])
    last = statistics.median(added[-window:])
    ratio = last / first if first > 0 else float("inf")
    return HistorySummary(turns=turns, conversations=len(direct), added_ms=added, direct_ms=direct_ms,
                          firewall_ms=firewall_ms, first_ms=first, last_ms=last, ratio=ratio,
                          body_bytes=list(body_bytes))
