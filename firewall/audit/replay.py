"""Decide recorded exchanges again under another policy, and say what would change.

A security team changing a policy asks what the change will do before it goes live:
`agent-firewall replay AUDIT --policy NEW` answers with the exchanges that the new
policy would block and the old one did not, and the reverse, by rule, with examples.
Replay needs the messages: the recording policy must have said `audit: {messages: true}`
(they are kept as forwarded, redactions applied). A record without them is counted as
not replayable, never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from firewall.audit.reader import rule_ids
from firewall.engine import Engine
from firewall.model import Direction, Exchange, Message, Part, PartKind, Provenance
from firewall.policy import Policy

__all__ = ["Change", "ReplayReport", "replay"]

_EXAMPLES = 3  # exchange ids kept per kind of change


@dataclass(frozen=True, slots=True)
class Change:
    exchange: str
    direction: str
    agent: str | None
    before: str  # the action recorded
    after: str  # the action the new policy takes
    rules_before: tuple[str, ...]
    rules_after: tuple[str, ...]


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    unreplayable: int = 0  # exchange records without their messages
    changes: list[Change] = field(default_factory=list)

    @property
    def newly_blocked(self) -> list[Change]:
        return [c for c in self.changes if c.after == "block" and c.before != "block"]

    @property
    def newly_allowed(self) -> list[Change]:
        return [c for c in self.changes if c.before == "block" and c.after != "block"]

    @property
    def other(self) -> list[Change]:
        return [c for c in self.changes if "block" not in (c.before, c.after)]

    def by_rule(self, changes: Iterable[Change], *, after: bool) -> dict[str, list[str]]:
        """Rule -> the exchanges of `changes` it decided (in the new policy when `after`,
        the old one otherwise)."""
        out: dict[str, list[str]] = {}
        for change in changes:
            for rule in (change.rules_after if after else change.rules_before) or ("-",):
                out.setdefault(rule, []).append(change.exchange)
        return dict(sorted(out.items(), key=lambda item: (-len(item[1]), item[0])))


def replay(records: Iterable[dict[str, Any]], policy: Policy) -> ReplayReport:
    engine = Engine(policy)
    report = ReplayReport()
    for record in records:
        if record.get("direction") not in ("request", "response") or "messages" not in record:
            continue  # not an inspected exchange: an event, a refusal, an agent record
        exchange = _exchange(record)
        if exchange is None:
            report.unreplayable += 1
            continue
        decision = engine.inspect(exchange, remember=False)
        report.replayed += 1
        before = str(record.get("action"))
        rules_before = tuple(rule_ids(record))
        after, rules_after = str(decision.action), decision.rules
        if before != after or set(rules_before) != set(rules_after):
            report.changes.append(Change(str(record.get("exchange")), str(record.get("direction")), record.get("agent"),
                                         before, after, rules_before, rules_after))
    return report


def _exchange(record: dict[str, Any]) -> Exchange | None:
    content = record.get("content")
    if not isinstance(content, list):
        return None
    messages = []
    for index, item in enumerate(content):
        parts = tuple(Part(str(part.get("text", "")), ("replay", index, number), PartKind(part.get("kind", "text")))
                      for number, part in enumerate(item.get("parts", ())))
        messages.append(Message(role=str(item.get("role", "user")), parts=parts, name=item.get("name")))
    found = record.get("provenance")
    provenance = None
    if isinstance(found, dict) and found.get("agent"):
        provenance = Provenance(agent=found["agent"], exchange_id=str(found.get("exchange", "")),
                                flagged=bool(found.get("flagged")), quarantined=bool(found.get("quarantined")),
                                tainted=bool(found.get("tainted")), hops=int(found.get("hops", 1)),
                                path=tuple(found.get("path", ())))
    declared = record.get("source")
    return Exchange(
        id=str(record.get("exchange")), direction=Direction(record["direction"]),
        provider=str(record.get("provider") or "replay"), route=str(record.get("route") or "replay"),
        messages=tuple(messages), model=record.get("model"), agent=record.get("agent"),
        source_agent=declared if declared and (provenance is None or declared != provenance.agent) else None,
        target_agent=record.get("target"), provenance=provenance,
    )
