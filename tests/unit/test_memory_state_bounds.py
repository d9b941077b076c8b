"""The memory state's memory stays bounded: index members (lineage records) are forgotten,
with their set entries and attached values, once their ttl has passed or when there are
more than `max_members`; so is the lineage index built on it (`lineage.memory_records`)."""

from __future__ import annotations

from firewall.agents.lineage import LineageIndex, LineageSpec, fingerprint
from firewall.agents.state import COMMON, MemoryState
from tests.unit.test_lineage import Clock, filler


async def test_the_oldest_members_beyond_max_members_leave_their_sets_and_take_their_values():
    state = MemoryState()
    for n in range(5):
        await state.set(f"rec:{n}", b"record")
        await state.index_add([f"own:{n}", "shared"], f"m{n}", attached=[f"rec:{n}"], max_members=3)

    assert state.held["members"] == 3
    assert await state.index_members(["shared"]) == {"shared": {"m2", "m3", "m4"}}
    assert await state.index_members([f"own:{n}" for n in range(5)]) == {f"own:{n}": {f"m{n}"} for n in (2, 3, 4)}
    assert [await state.get(f"rec:{n}") for n in range(5)] == [None, None, b"record", b"record", b"record"]
    assert state.held == {"values": 3, "sets": 4, "members": 3, "counters": 0}


async def test_expired_members_are_dropped_when_others_arrive_not_only_when_read():
    clock = Clock(100.0)
    state = MemoryState(clock=clock)
    await state.set("rec:old", b"x", ttl=10)
    await state.index_add(["a", "b"], "old", ttl=10, attached=["rec:old"])
    await state.set("rec:kept", b"y")
    await state.index_add(["c"], "kept")  # no ttl: only max_members could forget it
    assert state.held == {"values": 2, "sets": 3, "members": 2, "counters": 0}

    clock.now = 111.0
    await state.index_add(["d"], "new", ttl=10)
    # "old" stood first in age order and had expired: gone with its sets and its record,
    # though nothing read them.
    assert state.held == {"values": 1, "sets": 2, "members": 2, "counters": 0}
    assert await state.index_members(["a", "b", "c", "d"]) == {"c": {"kept"}, "d": {"new"}}


async def test_a_member_added_again_leaves_every_set_it_joined_once_forgotten():
    state = MemoryState()
    await state.index_add(["x"], "twice")
    await state.index_add(["y"], "other")
    await state.index_add(["z"], "twice")  # now the newest: "other" is the oldest
    await state.index_add(["w"], "third", max_members=2)
    assert await state.index_members(["x", "y", "z", "w"]) == {"x": {"twice"}, "z": {"twice"}, "w": {"third"}}
    await state.index_add(["v"], "fourth", max_members=2)
    assert await state.index_members(["x", "y", "z", "w", "v"]) == {"w": {"third"}, "v": {"fourth"}}
    assert state.held["members"] == 2


async def test_a_common_mark_outlives_the_members_that_made_it():
    state = MemoryState()
    for n in range(4):
        await state.index_add(["stock phrase", f"own:{n}"], f"m{n}", limit=2, max_members=4)
    assert await state.index_members(["stock phrase"]) == {"stock phrase": {COMMON}}
    for n in range(4, 8):
        await state.index_add([f"own:{n}"], f"m{n}", max_members=4)
    assert state.held["members"] == 4
    # Every member that made it common is forgotten; the shingle is still a stock phrase.
    assert await state.index_members(["stock phrase"]) == {"stock phrase": {COMMON}}


async def test_the_lineage_index_keeps_the_last_memory_records_responses():
    clock = Clock()
    state = MemoryState(clock=clock)
    lineage = LineageIndex(state, LineageSpec(memory_records=3), clock=clock)
    responses = [filler(60, seed) for seed in range(10, 16)]
    for n, text in enumerate(responses):
        await lineage.record("planner", f"ex_{n}", text)

    found = [[m.record.id for m in await lineage.match("executor", f"planner said: {text}")] for text in responses]
    assert found == [[], [], [], ["planner:ex_3"], ["planner:ex_4"], ["planner:ex_5"]]
    assert state.held["members"] == 3 and state.held["values"] == 3
    # Each held set belongs to one of the three records left: nothing of the others stays.
    held = await state.index_members(await state.keys("lineage:sh:"))
    assert set().union(*held.values()) == {"planner:ex_3", "planner:ex_4", "planner:ex_5"}
    assert len(held) == state.held["sets"]


async def test_a_lineage_record_past_its_ttl_is_dropped_by_the_next_record():
    clock = Clock()
    state = MemoryState(clock=clock)
    spec = LineageSpec(ttl=60)
    lineage = LineageIndex(state, spec, clock=clock)
    first, second = filler(60, 20), filler(60, 21)
    await lineage.record("planner", "ex_1", first)
    clock.now += 61
    await lineage.record("planner", "ex_2", second)
    buckets = fingerprint(second, spec).bucket_keys(spec.sample)  # type: ignore[union-attr]
    assert state.held == {"values": 1, "sets": len(buckets), "members": 1, "counters": 0}


async def test_values_past_their_ttl_are_dropped_as_others_are_written_not_only_when_read():
    clock = Clock(100.0)
    state = MemoryState(clock=clock)
    for n in range(100):  # Responses turns: written once, with a ttl, never read again
        await state.set(f"turns:{n}", b"turn", ttl=10)
    await state.set("kept", b"no ttl")
    await state.set("rewritten", b"first", ttl=10)
    clock.now = 105.0
    await state.set("rewritten", b"second", ttl=60)  # its expiry moved: it must stay
    clock.now = 111.0
    for n in range(20):  # a few writes are enough: each drops up to eight expired values
        await state.set(f"later:{n}", b"x", ttl=600)
    assert state.held["values"] == 1 + 1 + 20  # kept, rewritten, the later ones
    assert await state.get("rewritten") == b"second" and await state.get("kept") == b"no ttl"
    clock.now = 200.0
    await state.set("one more", b"x")
    assert state.held["values"] == 1 + 20 + 1  # "rewritten" has gone too, unread


async def test_records_forgotten_beyond_max_members_leave_no_expiry_entries_behind():
    state = MemoryState()
    for n in range(20_000):  # a day's ttl, far more records than the cap: evicted, not expired
        await state.set(f"rec:{n}", b"record", ttl=86_400)
        await state.index_add([f"own:{n}"], f"m{n}", ttl=86_400, attached=[f"rec:{n}"], max_members=100)
    assert state.held["values"] == 100 and state.held["members"] == 100
    assert len(state._expiring) <= 2 * 100 + 1024 + 1  # bounded by what is held, not by what was written
