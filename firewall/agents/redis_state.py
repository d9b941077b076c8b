"""Agent state in Redis: the `redis` backend of firewall/agents/state.py, with which every
firewall process pointed at the same server remembers the same agents.

Each key lives under a namespace (`prefix`, "afw:" by default) so that several firewalls can
share one Redis. Values are strings; a sliding-window counter is a sorted set with one member
per `count` call that added events (scored by its time, carrying how many it added); a
lineage index is a set.

`count` is a Lua script because it prunes, adds and sums in one step. As separate commands,
two replicas counting the same agent at once could each miss the other's event, and a
quarantine threshold would be crossed late or twice; a script runs atomically on the server,
in one round trip. `index_add` is one too: it adds a record to each of its buckets and turns
a bucket over its limit into the COMMON mark, which is a read-then-write; `index_members`
reads every bucket in one round trip. Scripts are sent by hash (EVALSHA), and their text
only when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH). Every other
primitive is one command or one pipeline of commands that need no read-then-write.

Any failure to talk to Redis (refused, timed out, a wrong password, an error reply) becomes
`StateUnavailable`, naming the URL without its password and the operation, so that the
caller can apply its policy's `on_error`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from firewall.agents.state import COMMON, StateUnavailable

__all__ = ["RedisState"]

# KEYS[1]: the window; ARGV: cutoff, now, add, member, expiry in ms. The scores are passed as
# the strings Python wrote, never through a Lua number, so no precision is lost on the way.
# KEYS: the bucket sets; ARGV[1]: the member; ARGV[2]: ttl in ms, or -1 for none (an
# earlier expiry is dropped then, as in memory); ARGV[3]: the limit, or -1 for none;
# ARGV[4]: the COMMON mark a set over its limit holds instead of its members.
_INDEX_ADD_SCRIPT = """
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
    if limit < 0 or redis.call('SISMEMBER', key, ARGV[4]) == 0 then
        redis.call('SADD', key, ARGV[1])
        if limit >= 0 and redis.call('SCARD', key) > limit then
            redis.call('DEL', key)
            redis.call('SADD', key, ARGV[4])
        end
    end
    if ttl < 0 then redis.call('PERSIST', key) else redis.call('PEXPIRE', key, ttl) end
end
return #KEYS
"""
# KEYS: the bucket sets; the reply: their members, in order (an empty list for an absent set).
_INDEX_MEMBERS_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('SMEMBERS', key) end
return out
"""
_COUNT_SCRIPT = """
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
if tonumber(ARGV[3]) ~= 0 then
  redis.call('ZADD', key, ARGV[2], ARGV[4])
  redis.call('PEXPIRE', key, ARGV[5])
end
local total = 0
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  total = total + tonumber(string.match(member, '^(%-?%d+):'))
end
return total
"""

_GLOB_SPECIAL = str.maketrans({char: "\\" + char for char in "\\*?[]"})


class RedisState:
    """State in a Redis server shared by several firewall processes.

    `url` is `redis://[[user]:password@]host:port/db`, `rediss://...` (TLS) or
    `unix:///path/to/redis.sock?db=0`; `timeout` bounds connecting and each reply, in
    seconds; `prefix` is the namespace of every key this firewall writes. Nothing connects
    until the first operation."""

    name = "redis"
    shared = True

    def __init__(self, url: str, *, timeout: float = 0.5, prefix: str = "afw:") -> None:
        self.url = _without_password(url)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"redis state at {self.url}: timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"redis state at {self.url}: prefix must be a string, not {prefix!r}")
        self.prefix = prefix
        self._secrets = _passwords(url)
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                # One immediate retry, on a failed connection only: it covers a pooled
                # connection that a restarted server dropped. A timeout is not retried: the
                # server may have run the command (a count would be counted twice), and the
                # caller is waiting.
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
        except ValueError as error:
            raise ValueError(f"redis state at {self.url}: {self._scrub(str(error))}") from None
        self._count_script = self._client.register_script(_COUNT_SCRIPT)
        self._index_add_script = self._client.register_script(_INDEX_ADD_SCRIPT)
        self._index_members_script = self._client.register_script(_INDEX_MEMBERS_SCRIPT)

    def __repr__(self) -> str:
        return f"RedisState({self.url!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _failures(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            reason = self._scrub(str(error) or type(error).__name__)
            raise StateUnavailable(f"redis at {self.url} unreachable during {operation}: {reason}") from error
        except RedisError as error:
            reason = self._scrub(str(error) or type(error).__name__)
            raise StateUnavailable(f"redis at {self.url} failed during {operation}: {reason}") from error

    async def get(self, key: str) -> bytes | None:
        with self._failures("get"):
            return await self._client.get(self._key(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with self._failures("get_many"):
            return list(await self._client.mget([self._key(key) for key in keys]))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        with self._failures("set"):
            if ttl is None:
                await self._client.set(self._key(key), value)
            elif (milliseconds := _milliseconds(ttl)) > 0:
                await self._client.set(self._key(key), value, px=milliseconds)
            else:  # already expired, as in memory; PX refuses a zero
                await self._client.delete(self._key(key))

    async def delete(self, key: str) -> None:
        with self._failures("delete"):
            await self._client.delete(self._key(key))

    async def keys(self, prefix: str) -> list[str]:
        # SCAN, never KEYS: KEYS blocks a shared server while it walks every key.
        pattern = (self.prefix + prefix).translate(_GLOB_SPECIAL) + "*"
        start = len(self.prefix)
        with self._failures("keys"):
            found = {key[start:].decode() async for key in self._client.scan_iter(match=pattern, count=1000)}
        return sorted(found)  # SCAN may return a key twice, and in no order

    async def count(self, key: str, now: float, window: float, add: int = 1) -> int:
        member = f"{int(add)}:{uuid.uuid4().hex}"
        expiry = max(1, math.ceil(window * 1000))
        arguments = [repr(float(now - window)), repr(float(now)), int(add), member, expiry]
        with self._failures("count"):
            return int(await self._count_script(keys=[self._key(key)], args=arguments))

    async def index_add(self, keys: Iterable[str], member: str, ttl: float | None = None,
                        limit: int | None = None, *, attached: Sequence[str] = (),
                        max_members: int | None = None) -> None:
        # `attached` and `max_members` bound a process's own memory; Redis expires by ttl,
        # and its maxmemory policy is the operator's (docs/operations.md).
        del attached, max_members
        names = [self._key(key) for key in keys]
        if not names:
            return
        with self._failures("index_add"):
            # One script: atomic (a reader sees a fingerprint in all its buckets or none),
            # and one command for the client to build and parse instead of two per bucket.
            await self._index_add_script(keys=names, args=[member, _milliseconds(ttl) if ttl is not None else -1,
                                                           -1 if limit is None else limit, COMMON])

    async def index_members(self, keys: Iterable[str]) -> dict[str, set[str]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._failures("index_members"):
            replies = await self._index_members_script(keys=[self._key(key) for key in wanted])
        return {key: {member.decode() for member in members} for key, members in zip(wanted, replies) if members}

    async def close(self) -> None:
        with self._failures("close"):
            await self._client.aclose()


def _milliseconds(seconds: float) -> int:
    # Rounded up: a value may outlive its ttl by a fraction of a millisecond, never die early.
    return math.ceil(seconds * 1000)


def _without_password(url: str) -> str:
    """`url` as it may be shown: the user kept, the password (in the authority or the
    query) left out."""
    try:
        parts = urlsplit(url)
    except ValueError:  # from_url will say what is wrong with it
        return "<unparsable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hostport}" if at and user else hostport
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name.lower() != "password"]
    # Not urlunsplit: it would shorten unix:///path to unix:/path.
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{shown}?{urlencode(query)}" if query else shown


def _passwords(url: str) -> list[str]:
    """Every spelling of the passwords in `url`, to scrub them from messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = urlsplit("")
    found = [value for name, value in parse_qsl(parts.query) if name.lower() == "password"]
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    spellings = {spelling for secret in found for spelling in (secret, unquote(secret)) if spelling}
    return sorted(spellings, key=len, reverse=True)
