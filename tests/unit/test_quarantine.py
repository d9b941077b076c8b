"""The quarantine state machine, through the state backend."""

from __future__ import annotations

import asyncio

import pytest

from firewall.agents.quarantine import Quarantine
from firewall.agents.state import MemoryState
from firewall.policy.schema import QuarantineSpec, RateSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def machine(**spec) -> tuple[Quarantine, Clock]:
    clock = Clock()
    return Quarantine(MemoryState(clock=clock), QuarantineSpec(**spec), clock=clock), clock


def run(coroutine):
    return asyncio.run(coroutine)


def test_violations_within_the_window_throttle_then_quarantine():
    q, clock = machine(violations=3, throttle_at=2, window=60)

    async def scenario():
        assert (await q.status("a")).state == "observe"
        assert await q.violation("a", "rule x", by="x") is None
        clock.now += 10
        throttled = await q.violation("a", "rule x", by="x")
        assert throttled.before == "observe" and throttled.after.state == "throttle" and throttled.violations == 2
        clock.now += 10
        quarantined = await q.violation("a", "rule y: said something", by="y")
        assert quarantined.after.state == "quarantine" and quarantined.before == "throttle"
        assert "3 violations within 60 s" in quarantined.after.reason and "rule y" in quarantined.after.reason
        assert quarantined.after.until == clock.now + 3600
        assert await q.violation("a", "rule x", by="x") is None  # already in quarantine
        assert (await q.status("b")).state == "observe"  # agents are independent

    run(scenario())


def test_violations_outside_the_window_do_not_add_up():
    q, clock = machine(violations=2, window=60)

    async def scenario():
        await q.violation("a", "r", by="r")
        clock.now += 61
        assert await q.violation("a", "r", by="r") is None
        assert (await q.status("a")).state == "observe"

    run(scenario())


def test_quarantine_lifts_by_itself_after_release_after_and_then_starts_afresh():
    q, clock = machine(violations=1, release_after=100)

    async def scenario():
        await q.violation("a", "r", by="r")
        assert (await q.status("a")).quarantined
        clock.now += 99
        assert (await q.status("a")).quarantined
        clock.now += 2
        status = await q.status("a")
        assert status.state == "released" and status.by == "expiry"

    run(scenario())


def test_release_by_hand_clears_the_count_and_a_hand_quarantine_can_be_permanent():
    q, clock = machine(violations=2, release_after=None)

    async def scenario():
        await q.violation("a", "r", by="r")
        forced = await q.quarantine("a", "investigating", by="admin")
        assert forced.after.until is None and forced.violations == 1
        clock.now += 10 ** 6
        assert (await q.status("a")).quarantined  # no expiry
        released = await q.release("a")
        assert released.before == "quarantine" and released.after.state == "released"
        assert await q.release("a") is None  # nothing to release
        assert await q.violation("a", "r", by="r") is None  # the old violation no longer counts

    run(scenario())


def test_a_throttled_agent_gets_its_allowance_per_period():
    q, clock = machine(violations=5, throttle_at=1, throttle_rate=RateSpec(requests=2, per=10))

    async def scenario():
        await q.violation("a", "r", by="r")
        assert [await q.throttled("a") for _ in range(3)] == [False, False, True]
        clock.now += 11
        assert await q.throttled("a") is False

    run(scenario())


def test_listing_and_a_corrupt_record(caplog):
    q, _ = machine(violations=1)

    async def scenario():
        await q.violation("b", "r", by="r")
        await q.quarantine("a", "by hand", by="admin")
        assert [s.agent for s in await q.agents()] == ["a", "b"]
        await q.state.set("quarantine:c", b"{not json")
        assert (await q.status("c")).state == "observe"

    run(scenario())
    assert "unreadable quarantine record" in caplog.text


def test_throttle_must_come_before_quarantine():
    with pytest.raises(ValueError, match="throttle_at .3. must be below violations .3."):
        QuarantineSpec(violations=3, throttle_at=3)
