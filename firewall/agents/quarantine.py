"""Behavioural quarantine: a state machine per agent, kept in the state backend so that
every firewall process sharing it enforces the same state.

    observe ──(violations ≥ throttle_at)──▶ throttle ──(violations ≥ violations)──▶ quarantine
       ▲                                                                              │
       └───────────── released (after `release_after`, or by hand) ◀──────────────────┘

Violations are counted in a sliding window (`window` seconds). A drift alert or tainted
input can quarantine at once, as the policy says. A quarantined agent's requests are
refused with an error that names the quarantine and its reason; its outputs, met again in
another agent's request, are reported by lineage as `source.quarantined`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from firewall.agents.state import StateBackend
from firewall.policy.schema import QuarantineSpec

__all__ = ["AgentStatus", "Quarantine", "QuarantineSpec", "Transition"]

log = logging.getLogger("firewall.agents")

State = Literal["observe", "throttle", "quarantine", "released"]
_STATUS = "quarantine:"
_VIOLATIONS = "violations:"
_THROTTLE = "throttle:"
_SEEN_LIMIT = 10_000  # agents whose state is remembered between reads


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent: str
    state: State = "observe"
    reason: str = ""
    since: float = 0.0  # unix time of the last change
    until: float | None = None  # quarantine: when it lifts by itself (None: by hand only)
    by: str = ""  # what changed it: a rule, "drift", "taint", "admin"

    @property
    def quarantined(self) -> bool:
        return self.state == "quarantine"

    def as_record(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if value not in (None, "")}


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the audit log."""

    agent: str
    before: State
    after: AgentStatus
    violations: int  # in the window, when the change was made

    def as_record(self) -> dict[str, object]:
        return {"agent": self.agent, "from": self.before, "to": self.after.state, "reason": self.after.reason,
                "by": self.after.by, "until": self.after.until, "violations": self.violations}


class Quarantine:
    """The agents' states, read and written through the backend. A state read from the
    backend is reused for up to `fresh_for` seconds (0.5: a change made by another process
    is enforced here within that); a change made here is seen here at once."""

    def __init__(self, state: StateBackend, spec: QuarantineSpec, clock: Callable[[], float] = time.time,
                 fresh_for: float = 0.5) -> None:
        self.state = state
        self.spec = spec
        self._clock = clock
        self._fresh_for = fresh_for
        self._seen: dict[str, tuple[float, bytes | None]] = {}  # agent -> (read at, monotonic; raw record)

    async def status(self, agent: str, *, fresh: bool = False) -> AgentStatus:
        if not fresh:
            # Nearly every agent has no record (it was never throttled nor quarantined):
            # read lately and found absent, it is observed, without the general path's work.
            seen = self._seen.get(agent)
            if seen is not None and seen[1] is None and time.monotonic() - seen[0] <= self._fresh_for:
                return AgentStatus(agent)
        return (await self.statuses([agent], fresh=fresh))[0]

    async def statuses(self, agents: Sequence[str], *, fresh: bool = False) -> list[AgentStatus]:
        """The state of each of `agents`, those not read lately (all, with `fresh`: what
        a person asks for is read now) in one round trip."""
        now = time.monotonic()
        stale = [agent for agent in dict.fromkeys(agents)
                 if fresh or (seen := self._seen.get(agent)) is None or now - seen[0] > self._fresh_for]
        if stale:
            for agent, raw in zip(stale, await self.state.get_many([_STATUS + agent for agent in stale]), strict=True):
                self._seen[agent] = (now, raw)
            if len(self._seen) > _SEEN_LIMIT:
                self._seen = {agent: seen for agent, seen in self._seen.items() if now - seen[0] <= self._fresh_for}
        return [await self._parse(agent, self._seen[agent][1]) for agent in agents]

    async def _parse(self, agent: str, raw: bytes | None) -> AgentStatus:
        if raw is None:
            return AgentStatus(agent)
        try:
            status = AgentStatus(**json.loads(raw))
        except (TypeError, ValueError) as error:
            # Refusing the agent on a corrupt record would let anyone who can write the
            # backend lock agents out; the log says it happened.
            log.warning("agent %s: unreadable quarantine record (%s); treated as observe", agent, error)
            return AgentStatus(agent)
        if status.quarantined and status.until is not None and status.until <= self._clock():
            return await self._set(AgentStatus(agent, "released", "quarantine expired", status.until, None, "expiry"))
        return status

    async def violation(self, agent: str, reason: str, by: str) -> Transition | None:
        """Count one violation by `agent`; return the change of state it causes, if any."""
        now = self._clock()
        count = await self.state.count(_VIOLATIONS + agent, now, self.spec.window)
        current = await self.status(agent)
        if current.quarantined:
            return None
        if self.spec.violations and count >= self.spec.violations:
            return await self.quarantine(agent, f"{count} violations within {self.spec.window:g} s, the last: {reason}",
                                         by=by, violations=count)
        if self.spec.throttle_at and count >= self.spec.throttle_at and current.state != "throttle":
            after = await self._set(AgentStatus(agent, "throttle", f"{count} violations within {self.spec.window:g} s, "
                                                f"the last: {reason}", now, None, by))
            return Transition(agent, current.state, after, count)
        return None

    async def quarantine(self, agent: str, reason: str, *, by: str, ttl: float | None = None,
                         violations: int | None = None) -> Transition | None:
        """Put `agent` in quarantine (for `ttl` seconds, or the policy's `release_after`)."""
        current = await self.status(agent, fresh=True)
        if current.quarantined:
            return None
        now = self._clock()
        lasting = ttl if ttl is not None else self.spec.release_after
        after = await self._set(AgentStatus(agent, "quarantine", reason, now, now + lasting if lasting else None, by))
        if violations is None:
            violations = await self.state.count(_VIOLATIONS + agent, now, self.spec.window, add=0)
        return Transition(agent, current.state, after, violations)

    async def release(self, agent: str, *, by: str = "admin", reason: str = "released by hand") -> Transition | None:
        current = await self.status(agent, fresh=True)
        if current.state not in ("quarantine", "throttle"):
            return None
        # A fresh start: the violations that led here are not held against it again.
        await self.state.delete(_VIOLATIONS + agent)
        after = await self._set(AgentStatus(agent, "released", reason, self._clock(), None, by))
        return Transition(agent, current.state, after, 0)

    async def throttled(self, agent: str) -> bool:
        """Whether a throttled agent has used up its allowance for now (this request counts)."""
        rate = self.spec.throttle_rate
        used = await self.state.count(_THROTTLE + agent, self._clock(), rate.per)
        return used > rate.requests

    async def agents(self) -> list[AgentStatus]:
        """Every agent with a state other than the default, by name."""
        names = [key[len(_STATUS):] for key in await self.state.keys(_STATUS)]
        return await self.statuses(names, fresh=True)

    async def _set(self, status: AgentStatus) -> AgentStatus:
        raw = json.dumps(asdict(status)).encode()
        await self.state.set(_STATUS + status.agent, raw)
        self._seen[status.agent] = (time.monotonic(), raw)
        return status
