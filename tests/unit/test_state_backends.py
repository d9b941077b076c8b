"""The state backend contract, run against every backend: MemoryState, and RedisState on a
real redis-server (tests/redis_server.py). Then what only Redis can get wrong: namespaces,
the count script, the unix socket, and a server that is gone, silent or refuses us."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from firewall.agents.state import COMMON, MemoryState, StateBackend, StateUnavailable, open_state
from tests.redis_server import SKIP_VARIABLE, RedisServer, redis_server_binary, running_redis_server

try:
    import redis.asyncio as redis_client

    from firewall.agents.redis_state import RedisState
except ImportError as error:  # the `redis` extra is missing: the Redis tests say so
    MISSING_EXTRA: str | None = str(error)
else:
    MISSING_EXTRA = None

PASSWORD = "s3cret-7391"  # a test server's password, to prove that it never leaks


@pytest.fixture
def redis_extra() -> None:
    """The `redis` package, which every Redis test needs: a failure saying how to install
    it when it is missing (a skip only when AFW_SKIP_REDIS=1)."""
    if MISSING_EXTRA is None:
        return
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the Redis tests are skipped")
    pytest.fail(f"the redis package is not installed: pip install -e '.[redis]' ({MISSING_EXTRA})", pytrace=False)


@pytest.fixture
def redis_server(tmp_path: Path, redis_extra: None) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def guarded_server(tmp_path: Path, redis_extra: None) -> Iterator[RedisServer]:
    """A server that wants a password: its URL carries one."""
    with running_redis_server(tmp_path / "redis", password=PASSWORD) as server:
        yield server


@pytest.fixture
async def redis_states(redis_extra: None) -> AsyncIterator[list[RedisState]]:
    """Closes every RedisState a test opens."""
    opened: list[RedisState] = []
    yield opened
    for state in opened:
        await state.close()


@pytest.fixture
def connect(redis_states: list[RedisState]) -> Any:
    def open_one(url: str, **options: Any) -> RedisState:
        state = RedisState(url, **options)
        redis_states.append(state)
        return state

    return open_one


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis_client.Redis]:
    """A plain client, to look at what the backend left in the server."""
    client = redis_client.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def pair(request: pytest.FixtureRequest) -> tuple[StateBackend, StateBackend]:
    """Two handles on one store: the same MemoryState twice, or two RedisState clients of
    one server, as two firewall processes would hold."""
    if request.param == "memory":
        state = MemoryState()
        return state, state
    server: RedisServer = request.getfixturevalue("redis_server")
    connect = request.getfixturevalue("connect")
    return connect(server.url), connect(server.url)


@pytest.fixture
def state(pair: tuple[StateBackend, StateBackend]) -> StateBackend:
    return pair[0]


# The contract ---------------------------------------------------------------------------


async def test_set_get_overwrite_delete(state: StateBackend) -> None:
    assert await state.get("quarantine:planner") is None
    await state.set("quarantine:planner", b"since 12:00")
    assert await state.get("quarantine:planner") == b"since 12:00"
    await state.set("quarantine:planner", b"\x00\xffbinary")
    assert await state.get("quarantine:planner") == b"\x00\xffbinary"
    await state.delete("quarantine:planner")
    assert await state.get("quarantine:planner") is None
    await state.delete("never-set")
    await state.set("gone-at-once", b"x", ttl=0)
    assert await state.get("gone-at-once") is None


async def test_get_many_answers_in_order_with_none_for_what_is_missing(state: StateBackend) -> None:
    await state.set("m:a", b"1")
    await state.set("m:c", b"\x00three")
    assert await state.get_many(["m:c", "m:b", "m:a", "m:c"]) == [b"\x00three", None, b"1", b"\x00three"]
    assert await state.get_many([]) == []


async def test_values_and_indexes_expire_after_their_ttl(state: StateBackend) -> None:
    await state.set("short", b"x", ttl=0.2)
    await state.set("long", b"y", ttl=30)
    await state.set("made-permanent", b"z", ttl=0.2)
    await state.set("made-permanent", b"z2")  # a set without ttl drops the earlier one
    await state.index_add(["bucket:short"], "fp-1", ttl=0.2)
    await state.index_add(["bucket:kept"], "fp-1", ttl=0.2)
    await state.index_add(["bucket:kept"], "fp-2")
    await asyncio.sleep(0.3)
    assert await state.get("short") is None
    assert await state.get("long") == b"y"
    assert await state.get("made-permanent") == b"z2"
    assert await state.keys("") == ["bucket:kept", "long", "made-permanent"]
    assert await state.index_members(["bucket:short", "bucket:kept"]) == {"bucket:kept": {"fp-1", "fp-2"}}


async def test_keys_lists_every_kind_by_prefix_sorted(state: StateBackend) -> None:
    await state.set("quarantine:b", b"1")
    await state.set("quarantine:a", b"1")
    await state.set("drift:a", b"1")
    await state.count("count:violations:a", now=10.0, window=60.0)
    await state.index_add(["lineage:7f", "lineage:01"], "fp")
    assert await state.keys("quarantine:") == ["quarantine:a", "quarantine:b"]
    assert await state.keys("count:") == ["count:violations:a"]
    assert await state.keys("lineage:") == ["lineage:01", "lineage:7f"]
    assert await state.keys("") == ["count:violations:a", "drift:a", "lineage:01", "lineage:7f", "quarantine:a", "quarantine:b"]
    assert await state.keys("quarantine:c") == []
    assert await state.keys("unknown:") == []


async def test_keys_prefix_is_literal_not_a_pattern(state: StateBackend) -> None:
    for key in ["a*b:1", "a?b:1", "a[b]:1", "a\\b:1", "axb:1", "ab:1"]:
        await state.set(key, b"1")
    assert await state.keys("a*") == ["a*b:1"]
    assert await state.keys("a?") == ["a?b:1"]
    assert await state.keys("a[b]") == ["a[b]:1"]
    assert await state.keys("a[") == ["a[b]:1"]
    assert await state.keys("a\\") == ["a\\b:1"]
    assert await state.keys("ab") == ["ab:1"]


async def test_count_is_a_sliding_window(state: StateBackend) -> None:
    key = "count:violations:planner"
    assert await state.count(key, now=100.0, window=10.0) == 1
    assert await state.count(key, now=101.0, window=10.0, add=2) == 3
    assert await state.count(key, now=109.9, window=10.0) == 4
    # At 110 the event of 100 is exactly one window old: forgotten.
    assert await state.count(key, now=110.0, window=10.0) == 4
    assert await state.count(key, now=111.0, window=10.0, add=0) == 2
    assert await state.count("count:violations:other", now=111.0, window=10.0) == 1
    assert await state.count(key, now=500.0, window=10.0, add=0) == 0
    assert await state.keys("count:violations:planner") == []


async def test_count_with_add_zero_only_reads(state: StateBackend) -> None:
    key = "count:requests:executor"
    assert await state.count(key, now=5.0, window=60.0, add=0) == 0
    assert await state.keys("") == []
    assert await state.count(key, now=5.0, window=60.0, add=3) == 3
    assert await state.count(key, now=6.0, window=60.0, add=0) == 3
    assert await state.count(key, now=7.0, window=60.0, add=0) == 3


async def test_index_add_and_members(state: StateBackend) -> None:
    await state.index_add(["lineage:1", "lineage:2"], "fp-planner")
    await state.index_add(iter(["lineage:2", "lineage:3"]), "fp-executor")
    await state.index_add(["lineage:1"], "fp-planner")
    await state.index_add([], "fp-nowhere")
    found = await state.index_members(key for key in ["lineage:1", "lineage:2", "lineage:3", "lineage:absent"])
    assert found == {
        "lineage:1": {"fp-planner"},
        "lineage:2": {"fp-planner", "fp-executor"},
        "lineage:3": {"fp-executor"},
    }
    assert await state.index_members(["lineage:absent"]) == {}
    assert await state.index_members([]) == {}
    await state.delete("lineage:2")
    assert await state.index_members(["lineage:2"]) == {}


async def test_a_bucket_over_its_limit_holds_only_the_common_mark(state: StateBackend) -> None:
    for n in range(3):
        await state.index_add(["lineage:stock", "lineage:rare"], f"fp-{n}", limit=3)
    assert await state.index_members(["lineage:stock"]) == {"lineage:stock": {"fp-0", "fp-1", "fp-2"}}
    await state.index_add(["lineage:stock"], "fp-3", limit=3)  # a fourth: over the limit
    await state.index_add(["lineage:stock"], "fp-4", limit=3)  # and it takes no more
    await state.index_add(["lineage:stock"], "fp-0", limit=3)  # not even one it held before
    found = await state.index_members(["lineage:stock", "lineage:rare"])
    assert found == {"lineage:stock": {COMMON}, "lineage:rare": {"fp-0", "fp-1", "fp-2"}}
    await state.index_add(["lineage:free"], "fp-0")
    await state.index_add(["lineage:free"], "fp-1")  # no limit given: none applies
    assert await state.index_members(["lineage:free"]) == {"lineage:free": {"fp-0", "fp-1"}}


async def test_a_common_bucket_expires_like_any_other(state: StateBackend) -> None:
    await state.index_add(["lineage:stock"], "fp-0", ttl=0.3, limit=1)
    await state.index_add(["lineage:stock"], "fp-1", ttl=0.3, limit=1)
    assert await state.index_members(["lineage:stock"]) == {"lineage:stock": {COMMON}}
    await asyncio.sleep(0.5)
    await state.index_add(["lineage:stock"], "fp-2", ttl=0.3, limit=1)
    assert await state.index_members(["lineage:stock"]) == {"lineage:stock": {"fp-2"}}


async def test_concurrent_counts_from_two_clients_are_atomic(pair: tuple[StateBackend, StateBackend]) -> None:
    first, second = pair
    calls = [(first if n % 2 else second).count("count:burst", now=1000.0, window=60.0) for n in range(50)]
    seen = await asyncio.gather(*calls)
    # Each call saw the count right after its own event, never a stale one: 1..50, once each.
    assert sorted(seen) == list(range(1, 51))
    assert await first.count("count:burst", now=1000.0, window=60.0, add=0) == 50
    assert await second.count("count:burst", now=1000.0, window=60.0, add=0) == 50


async def test_two_clients_see_each_others_writes(pair: tuple[StateBackend, StateBackend]) -> None:
    first, second = pair
    await first.set("quarantine:executor", b"manual")
    assert await second.get("quarantine:executor") == b"manual"
    await second.index_add(["lineage:9"], "fp")
    assert await first.index_members(["lineage:9"]) == {"lineage:9": {"fp"}}
    await first.count("count:violations:executor", now=1.0, window=60.0, add=2)
    assert await second.count("count:violations:executor", now=2.0, window=60.0) == 3
    assert await second.keys("") == ["count:violations:executor", "lineage:9", "quarantine:executor"]
    await second.delete("quarantine:executor")
    assert await first.get("quarantine:executor") is None


# Redis only -----------------------------------------------------------------------------


async def test_namespaces_keep_firewalls_sharing_a_server_apart(redis_server: RedisServer, connect: Any, raw: Any) -> None:
    default = connect(redis_server.url)
    team = connect(redis_server.url, prefix="team[1]:")
    lookalike = connect(redis_server.url, prefix="team1:")
    await default.set("quarantine:a", b"default")
    await team.set("quarantine:a", b"team")
    await team.count("count:a", now=1.0, window=60.0)
    assert await raw.get("afw:quarantine:a") == b"default"
    assert await lookalike.keys("") == []
    assert await team.keys("") == ["count:a", "quarantine:a"]
    assert await default.keys("") == ["quarantine:a"]
    assert await default.get("quarantine:a") == b"default"
    assert await lookalike.count("count:a", now=1.0, window=60.0, add=0) == 0


async def test_idle_keys_expire_on_the_server(redis_server: RedisServer, connect: Any, raw: Any) -> None:
    state = connect(redis_server.url)
    await state.count("count:a", now=time.time(), window=60.0)
    await state.count("count:read-only", now=time.time(), window=60.0, add=0)
    await state.set("value", b"x", ttl=30.5)
    await state.index_add(["bucket"], "fp", ttl=3600)
    assert 0 < await raw.pttl("afw:count:a") <= 60_000
    assert 0 < await raw.pttl("afw:value") <= 30_500
    assert 0 < await raw.pttl("afw:bucket") <= 3_600_000
    assert await raw.exists("afw:count:read-only") == 0


async def test_count_survives_the_server_forgetting_its_script(redis_server: RedisServer, connect: Any, raw: Any) -> None:
    state = connect(redis_server.url)
    assert await state.count("count:a", now=1.0, window=60.0) == 1
    await raw.script_flush()
    assert await state.count("count:a", now=2.0, window=60.0) == 2


async def test_unix_socket_url(redis_server: RedisServer, connect: Any) -> None:
    over_socket = connect(redis_server.unix_url)
    over_tcp = connect(redis_server.url)
    await over_socket.set("k", b"v")
    assert await over_tcp.get("k") == b"v"


async def test_a_password_protected_server(guarded_server: RedisServer, connect: Any) -> None:
    state = connect(guarded_server.url)
    await state.set("k", b"v")
    assert await state.get("k") == b"v"
    assert PASSWORD not in repr(state)


OPERATIONS = {
    "get": lambda state: state.get("k"),
    "set": lambda state: state.set("k", b"v", ttl=1),
    "delete": lambda state: state.delete("k"),
    "keys": lambda state: state.keys("k"),
    "count": lambda state: state.count("k", now=1.0, window=60.0),
    "index_add": lambda state: state.index_add(["k"], "fp", ttl=1),
    "index_members": lambda state: state.index_members(["k"]),
}


async def test_a_stopped_server_makes_every_operation_unavailable(guarded_server: RedisServer, connect: Any) -> None:
    state = connect(guarded_server.url)
    await state.set("k", b"v")
    guarded_server.stop()
    shown = f"redis://127.0.0.1:{guarded_server.port}/0"
    for operation, call in OPERATIONS.items():
        with pytest.raises(StateUnavailable) as caught:
            await call(state)
        message = str(caught.value)
        assert message.startswith(f"redis at {shown} unreachable during {operation}: "), message
        assert PASSWORD not in message


async def test_a_restarted_server_is_used_again_without_reconnecting(redis_server: RedisServer, connect: Any) -> None:
    state = connect(redis_server.url)
    await state.set("k", b"before")
    redis_server.stop()
    with pytest.raises(StateUnavailable):
        await state.get("k")
    redis_server.restart()
    assert await state.get("k") is None  # persistence is off: the new server starts empty
    await state.set("k", b"after")
    assert await state.get("k") == b"after"


async def test_a_server_restarted_behind_pooled_connections_is_used_again(redis_server: RedisServer, connect: Any) -> None:
    state = connect(redis_server.url)
    await asyncio.gather(*(state.count("count:a", now=1.0, window=60.0) for _ in range(5)))  # several pooled connections
    redis_server.restart()
    assert await state.count("count:a", now=2.0, window=60.0) == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://worker:{password}@127.0.0.1:{port}/0", "redis://worker@127.0.0.1:{port}/0"),
        ("redis://127.0.0.1:{port}/0?password={password}", "redis://127.0.0.1:{port}/0"),
        ("redis://:{quoted}@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0"),
    ],
)
async def test_messages_never_show_a_password(connect: Any, url: str, shown: str) -> None:
    port = _closed_port()
    values = {"password": PASSWORD, "quoted": "p%40ss%3Aword", "port": port}
    state = connect(url.format(**values))
    with pytest.raises(StateUnavailable) as caught:
        await state.get("k")
    message = str(caught.value)
    assert message.startswith(f"redis at {shown.format(**values)} unreachable during get: "), message
    for secret in (PASSWORD, "p%40ss%3Aword", "p@ss:word"):
        assert secret not in message
        assert secret not in repr(state)


async def test_a_wrong_password_is_unavailable_and_not_shown(guarded_server: RedisServer, connect: Any) -> None:
    state = connect(f"redis://:not-the-password-1234@127.0.0.1:{guarded_server.port}/0")
    with pytest.raises(StateUnavailable, match=r"unreachable during set: ") as caught:
        await state.set("k", b"v")
    assert "not-the-password-1234" not in str(caught.value)


async def test_a_silent_server_times_out(connect: Any) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        state = connect(f"redis://127.0.0.1:{port}/0", timeout=0.05)
        with pytest.raises(
            StateUnavailable, match=rf"^redis at redis://127.0.0.1:{port}/0 unreachable during count: .*[Tt]imeout"
        ):
            await state.count("k", now=1.0, window=60.0)


async def test_an_error_reply_is_unavailable_too(redis_server: RedisServer, connect: Any) -> None:
    state = connect(redis_server.url)
    await state.count("count:a", now=1.0, window=60.0)
    with pytest.raises(StateUnavailable, match=r"failed during get: WRONGTYPE"):
        await state.get("count:a")


def test_bad_options_are_refused_clearly(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match=r"timeout must be a positive number of seconds, not 0"):
        RedisState(redis_server.url, timeout=0)
    with pytest.raises(ValueError, match=r"prefix must be a string"):
        RedisState(redis_server.url, prefix=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^redis state at redis://127.0.0.1:port/0: ") as caught:
        RedisState(f"redis://:{PASSWORD}@127.0.0.1:port/0")
    assert PASSWORD not in str(caught.value)


async def test_open_state_names_the_backend(redis_server: RedisServer, redis_states: list[RedisState]) -> None:
    assert isinstance(open_state(None), MemoryState)
    assert isinstance(open_state("memory"), MemoryState)
    state = open_state(redis_server.url, prefix="fw2:", timeout=1.0)
    assert isinstance(state, RedisState)
    redis_states.append(state)
    assert isinstance(state, StateBackend)
    await state.set("k", b"v")
    assert await state.get("k") == b"v"
    assert state.prefix == "fw2:"
    with pytest.raises(ValueError, match=r"--state 'bogus': expected 'memory' or a redis:// URL"):
        open_state("bogus")


# The test server itself -----------------------------------------------------------------


def test_a_missing_redis_server_fails_the_test_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(SKIP_VARIABLE, raising=False)
    with pytest.raises(
        pytest.fail.Exception, match=r"redis-server is not installed.*apt-get install redis-server.*AFW_SKIP_REDIS=1"
    ):
        redis_server_binary()
    monkeypatch.setenv(SKIP_VARIABLE, "1")
    with pytest.raises(pytest.skip.Exception, match=SKIP_VARIABLE):
        redis_server_binary()


def _closed_port() -> int:
    """A loopback port nobody listens on (the probe socket is closed on return)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
