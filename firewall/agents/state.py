"""Where the firewall keeps what it remembers about agents, shared by every process that
uses the same backend.

Quarantine, violation counts, rate limits, lineage fingerprints and drift statistics are
all built on the few primitives below, so that a backend is small and each primitive can
be made atomic where it lives: `memory` (one process, the default) and `redis` (several
processes behaving as one; firewall/agents/redis_state.py).

Keys are plain strings chosen by the modules that use them (`quarantine:<agent>`,
`count:violations:<agent>`...); values are bytes. A backend that cannot be reached raises
`StateUnavailable`, and the caller applies the policy's `on_error`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["MemoryState", "StateBackend", "StateUnavailable", "open_state"]


class StateUnavailable(RuntimeError):
    """The state backend cannot be read or written (Redis down, a timeout)."""


@runtime_checkable
class StateBackend(Protocol):
    """The primitives every piece of agent state is built on. All are coroutines: a
    network backend must not stall the event loop."""

    name: str

    async def get(self, key: str) -> bytes | None:
        """The value at `key`, or None (never set, deleted or expired)."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values at `keys`, in order, in one round trip."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds when given."""

    async def delete(self, key: str) -> None: ...

    async def keys(self, prefix: str) -> list[str]:
        """Every live key that starts with `prefix`, sorted."""

    async def count(self, key: str, now: float, window: float, add: int = 1) -> int:
        """A sliding-window counter, atomically: record `add` events at time `now` (0 to
        only read), forget those older than `now - window`, and return how many remain."""

    async def index_add(self, keys: Iterable[str], member: str, ttl: float | None = None) -> None:
        """Add `member` to the set at each of `keys` (lineage buckets); each set expires
        `ttl` seconds after its last addition when given."""

    async def index_members(self, keys: Iterable[str]) -> dict[str, set[str]]:
        """The members of the set at each of `keys` (absent sets are left out), in one
        round trip."""

    async def close(self) -> None: ...


class MemoryState:
    """State in this process: the default, and the reference the redis backend is
    tested against. Expiry is checked on read, so nothing needs a timer."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._windows: dict[str, deque[tuple[float, int]]] = {}
        self._totals: dict[str, int] = {}
        # A lineage bucket almost always holds one record id: held as the str itself until a
        # second arrives (a set per bucket was 80% of the memory backend's footprint).
        self._sets: dict[str, tuple[str | set[str], float | None]] = {}

    def _live(self, expires: float | None) -> bool:
        return expires is None or expires > self._clock()

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def get(self, key: str) -> bytes | None:
        found = self._values.get(key)
        if found is None:
            return None
        if not self._live(found[1]):
            del self._values[key]
            return None
        return found[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._values[key] = (bytes(value), self._expiry(ttl))

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._windows.pop(key, None)
        self._totals.pop(key, None)
        self._sets.pop(key, None)

    async def keys(self, prefix: str) -> list[str]:
        live = {key for key, (_, expires) in self._values.items() if self._live(expires)}
        live |= {key for key, events in self._windows.items() if events}
        live |= {key for key, (_, expires) in self._sets.items() if self._live(expires)}
        return sorted(key for key in live if key.startswith(prefix))

    async def count(self, key: str, now: float, window: float, add: int = 1) -> int:
        events = self._windows.setdefault(key, deque())
        total = self._totals.get(key, 0)  # kept as events come and go: a busy window is not summed again
        while events and events[0][0] <= now - window:
            total -= events.popleft()[1]
        if add:
            events.append((now, add))
            total += add
        if events:
            self._totals[key] = total
        else:
            del self._windows[key]
            self._totals.pop(key, None)
        return total

    async def index_add(self, keys: Iterable[str], member: str, ttl: float | None = None) -> None:
        # One clock reading for the whole call: a lineage record touches about 80 buckets.
        now = self._clock()
        expires = None if ttl is None else now + ttl
        sets = self._sets
        for key in keys:
            found = sets.get(key)
            if found is None or (found[1] is not None and found[1] <= now) or found[0] == member:
                sets[key] = (member, expires)
            elif isinstance(found[0], str):
                sets[key] = ({found[0], member}, expires)
            else:
                found[0].add(member)
                sets[key] = (found[0], expires)

    async def index_members(self, keys: Iterable[str]) -> dict[str, set[str]]:
        now = self._clock()
        sets = self._sets
        out: dict[str, set[str]] = {}
        for key in keys:
            found = sets.get(key)
            if found is not None and (found[1] is None or found[1] > now):
                out[key] = {found[0]} if isinstance(found[0], str) else set(found[0])
        return out

    async def close(self) -> None:
        return None


def open_state(url: str | None, **options: object) -> StateBackend:
    """The backend named by `url`: None or "memory" for this process's memory,
    `redis://host:port/db` (or `rediss://`) for Redis. A clear error for anything else."""
    if url is None or url == "memory":
        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from firewall.agents.redis_state import RedisState
        except ImportError as error:  # the extra is not installed
            raise ValueError(f"--state {url}: the redis backend needs the extra: pip install 'agent-firewall[redis]' ({error})") from error
        return RedisState(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"--state {url!r}: expected 'memory' or a redis:// URL (e.g. redis://127.0.0.1:6379/0)")

