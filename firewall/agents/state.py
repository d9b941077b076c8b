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

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["COMMON", "MemoryState", "StateBackend", "StateUnavailable", "open_state"]

# What a set at an `index_add` key holds once more members came than its limit allows. No
# member is "*": the lineage index's members are `<agent>:<exchange_id>`.
COMMON = "*"


class StateUnavailable(RuntimeError):
    """The state backend cannot be read or written (Redis down, a timeout)."""


@runtime_checkable
class StateBackend(Protocol):
    """The primitives every piece of agent state is built on. All are coroutines: a
    network backend must not stall the event loop."""

    name: str
    # Other processes read and write this state too (Redis). Work that only this process
    # would read may wait until an answer is out when it is False (see LineageIndex.defer).
    shared: bool

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

    async def index_add(self, keys: Iterable[str], member: str, ttl: float | None = None,
                        limit: int | None = None, *, attached: Sequence[str] = (),
                        max_members: int | None = None) -> None:
        """Add `member` to the set at each of `keys` (lineage buckets), atomically; each set
        expires `ttl` seconds after its last addition when given. A set that would hold
        more than `limit` members holds only `COMMON` from then on, and takes no more.

        A backend that holds everything in this process's memory also forgets the members
        whose `ttl` has passed, and the oldest members beyond `max_members`: each from
        its sets, with the values at `attached` (its record). A backend with its own
        expiry and memory limit (Redis) expires by `ttl` and ignores both."""

    async def index_members(self, keys: Iterable[str]) -> dict[str, AbstractSet[str]]:
        """The members of the set at each of `keys` (absent sets are left out), in one
        round trip. Read-only: a backend may hand out what it holds."""

    async def close(self) -> None: ...


class _Member(NamedTuple):
    """What `MemoryState` must undo to forget an index member."""

    keys: tuple[str, ...]
    attached: tuple[str, ...]
    expires: float | None
    serial: int  # which entry of the age queue is this member's current one


class MemoryState:
    """State in this process: the default, and the reference the redis backend is
    tested against. Expiry is checked on read, so nothing needs a timer; index members
    (lineage records, a day each) are also forgotten in age order as new ones come, and
    beyond `max_members`, so that memory stays bounded however long the process runs."""

    name = "memory"
    shared = False

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._windows: dict[str, deque[tuple[float, int]]] = {}
        self._totals: dict[str, int] = {}
        # A lineage bucket almost always holds one record id: held as the str itself until a
        # second arrives (a set per bucket was 80% of the memory backend's footprint).
        self._sets: dict[str, tuple[str | set[str], float | None]] = {}
        self._members: dict[str, _Member] = {}
        self._ages: deque[tuple[int, str]] = deque()  # (serial, member), oldest first
        self._serial = 0
        # Values written with a ttl and never read again (a Responses turn) must go too:
        # a heap of (expiry, key), one entry per key, looked at a few entries per write.
        self._expiring: list[tuple[float, str]] = []
        self._tracked: set[str] = set()

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
        expires = self._expiry(ttl)
        self._values[key] = (bytes(value), expires)
        if expires is not None and key not in self._tracked:
            self._tracked.add(key)
            heapq.heappush(self._expiring, (expires, key))
            if len(self._expiring) > 2 * len(self._tracked) + 1024:
                self._compact_expiring()
        self._drop_expired_values()

    def _compact_expiring(self) -> None:
        """Rebuild the heap from the values still tracked: entries of values deleted before
        their expiry (a lineage record forgotten beyond max_members) would otherwise stay
        until it, one per record of the last `ttl`."""
        values = self._values
        self._expiring = [(found[1], key) for key in self._tracked
                          if (found := values.get(key)) is not None and found[1] is not None]
        heapq.heapify(self._expiring)
        self._tracked = {key for _, key in self._expiring}

    def _drop_expired_values(self, most: int = 8) -> None:
        """Drop up to `most` values whose ttl has passed, the soonest first: a bounded
        share of work per write, which keeps up since each write adds at most one entry."""
        now = self._clock()
        heap, values = self._expiring, self._values
        for _ in range(most):
            if not heap or heap[0][0] > now:
                return
            _, key = heapq.heappop(heap)
            found = values.get(key)
            if found is not None and found[1] is not None and found[1] > now:
                heapq.heappush(heap, (found[1], key))  # written again since, with a later expiry
                continue
            if found is not None and found[1] is not None:
                del values[key]
            self._tracked.discard(key)

    async def delete(self, key: str) -> None:
        self._drop_value(key)
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

    async def index_add(self, keys: Iterable[str], member: str, ttl: float | None = None,
                        limit: int | None = None, *, attached: Sequence[str] = (),
                        max_members: int | None = None) -> None:
        # A lineage record touches about 50 buckets, almost all of them new: they go in
        # with one C-level update, and only the buckets that exist are looked at.
        now = self._clock()
        expires = None if ttl is None else now + ttl
        sets = self._sets
        added: dict[str, tuple[str | set[str], float | None]] = dict.fromkeys(keys, (member, expires))
        for key in [key for key in added if key in sets]:
            held, until = sets[key]
            if (until is not None and until <= now) or held == member:
                continue  # expired, or this member alone: replaced by the new entry
            if held == COMMON:
                added[key] = (COMMON, expires)
                continue
            if isinstance(held, str):
                held = {held, member}
            else:
                held.add(member)
            added[key] = (COMMON if limit is not None and len(held) > limit else held, expires)
        sets.update(added)
        self._remember(member, tuple(added), tuple(attached), expires)
        self._forget_old(now, max_members)

    def _remember(self, member: str, keys: tuple[str, ...], attached: tuple[str, ...], expires: float | None) -> None:
        earlier = self._members.get(member)
        if earlier is not None:  # added again: it leaves every set it is in, not only the new ones
            keys = tuple(dict.fromkeys(earlier.keys + keys))
            attached = tuple(dict.fromkeys(earlier.attached + attached))
        self._serial += 1
        self._members[member] = _Member(keys, attached, expires, self._serial)
        self._ages.append((self._serial, member))

    def _forget_old(self, now: float, max_members: int | None) -> None:
        """Forget members from the oldest while they have expired or are too many. With one
        ttl for all (the lineage index) age order is expiry order; a longer-lived member
        in front only delays the expiry of those behind it until the next addition."""
        ages, members = self._ages, self._members
        while ages:
            serial, member = ages[0]
            entry = members.get(member)
            if entry is None or entry.serial != serial:
                ages.popleft()  # added again later (its newer entry counts) or deleted
                continue
            expired = entry.expires is not None and entry.expires <= now
            if not expired and (max_members is None or len(members) <= max_members):
                return
            ages.popleft()
            del members[member]
            self._forget(member, entry, now)

    def _forget(self, member: str, entry: _Member, now: float) -> None:
        sets = self._sets
        for key in entry.keys:
            found = sets.get(key)
            if found is None:
                continue
            held, until = found
            if held == member or (until is not None and until <= now):
                del sets[key]
            elif isinstance(held, set):
                held.discard(member)
                if len(held) == 1:  # back to the compact form
                    sets[key] = (next(iter(held)), until)
            # COMMON stays until it expires: the shingle is still a stock phrase
        for key in entry.attached:
            self._drop_value(key)

    def _drop_value(self, key: str) -> None:
        self._values.pop(key, None)
        self._tracked.discard(key)  # its heap entry, if any, goes at the next compaction

    @property
    def held(self) -> dict[str, int]:
        """Entries this process holds, expired ones not yet dropped included: values, index
        sets, index members, counters."""
        return {"values": len(self._values), "sets": len(self._sets), "members": len(self._members),
                "counters": len(self._windows)}

    async def index_members(self, keys: Iterable[str]) -> dict[str, AbstractSet[str]]:
        now = self._clock()
        sets = self._sets
        out: dict[str, AbstractSet[str]] = {}
        for key in [key for key in keys if key in sets]:  # most of a request's buckets are empty
            held, until = sets[key]
            if until is None or until > now:
                # The set itself, not a copy (read-only by contract): a lookup reads dozens.
                out[key] = {held} if isinstance(held, str) else held
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

