"""What one audit record says about one inspected direction of an exchange.

A record names the rules that fired, their scores and the offsets of what they matched.
Request texts are not copied into the log; a response record holds the answer as the
agent received it, after redaction, so the log never becomes a second copy of the
secrets it caught, yet a reviewer can read what one agent said to the next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from firewall.model import Action, Decision, Direction, Exchange, Finding

if TYPE_CHECKING:
    from firewall.stream import StreamOutcome


def finding_record(finding: Finding) -> dict[str, Any]:
    record: dict[str, Any] = {"id": finding.rule, "action": str(finding.action), "mode": str(finding.mode)}
    if finding.detector is not None:
        record["detector"] = finding.detector
        record["score"] = round(finding.score or 0.0, 6)
    if finding.scores:
        record["scores"] = {name: round(value, 6) for name, value in finding.scores.items()}
    if finding.spans:
        record["spans"] = [
            {"message": span.message, "part": span.part, "start": span.start, "end": span.end, "label": span.label}
            for span in finding.spans
        ]
    if finding.tags:
        record["tags"] = list(finding.tags)
    return record


def exchange_record(
    exchange: Exchange,
    decision: Decision,
    *,
    policy_name: str,
    policy_sha256: str,
    identified_by: str | None,
    timings: dict[str, float],
    status: int | None = None,
    note: str | None = None,
    messages: bool = False,
) -> dict[str, Any]:
    """`messages`: keep each message's role and text as forwarded (the policy's
    `audit.messages`), for replay."""
    record: dict[str, Any] = {
        "exchange": exchange.id,
        "direction": str(exchange.direction),
        "agent": exchange.agent,
        "identified_by": identified_by,
        "source": exchange.source_agent or (exchange.provenance.agent if exchange.provenance else None),
        "target": exchange.target_agent,
        "route": exchange.route,
        "provider": exchange.provider,
        "model": exchange.model,
        "stream": exchange.stream,
        "messages": len(exchange.messages),
        "roles": [message.role for message in exchange.messages],
        "action": str(decision.action),
        "intended": str(decision.intended),
        "rules": [finding_record(finding) for finding in decision.findings],
        "tags": list(decision.tags),
        "policy": {"name": policy_name, "sha256": policy_sha256},
        "timings_ms": _milliseconds(timings),
    }
    _add_verdict(record, decision)
    if exchange.provenance is not None:
        found = exchange.provenance
        record["provenance"] = {"agent": found.agent, "exchange": found.exchange_id, "flagged": found.flagged,
                                "quarantined": found.quarantined, "tainted": found.tainted, "hops": found.hops,
                                "path": list(found.path)}
    if decision.rewrites:
        record["redacted_parts"] = len(decision.rewrites)
    if exchange.direction is Direction.RESPONSE and decision.action is not Action.BLOCK:
        record["response"] = released_response(exchange, decision)
    if status is not None:
        record["status"] = status
    if note:
        record["note"] = note
    if messages:
        record["content"] = forwarded_messages(exchange, decision)
    return record


def _milliseconds(timings: dict[str, float]) -> dict[str, float]:
    # Rounded to the microsecond by round() without digits: round(x, 3) goes through a
    # decimal string and cost more than the rest of the record.
    return {name: round(value * 1_000_000) / 1000 for name, value in timings.items()}


def forwarded_messages(exchange: Exchange, decision: Decision) -> list[dict[str, Any]]:
    """Each message's role, name and text as it was forwarded: a redacted part as
    redacted, so that secrets reach the log no more than they reached the provider."""
    rewritten = {rewrite.path: rewrite.text for rewrite in decision.rewrites}
    out = []
    for message in exchange.messages:
        parts = [{"text": rewritten.get(part.path, part.text), "kind": str(part.kind)} for part in message.parts]
        item: dict[str, Any] = {"role": message.role, "parts": parts}
        if message.name:
            item["name"] = message.name
        out.append(item)
    return out


def _add_verdict(record: dict[str, Any], decision: Decision) -> None:
    """What every record of a decision says beyond its action: the detectors that ran, and
    the rule that blocked with its reason."""
    if decision.detectors:
        record["detectors"] = detector_runs(decision)
    if decision.blocking_rule:
        record["blocking_rule"] = decision.blocking_rule
        record["reason"] = decision.reason


def detector_runs(decision: Decision) -> list[dict[str, Any]]:
    """Each stage of the cascade: what it was given, what it was spared, its cost and verdict."""
    return [
        {"detector": run.detector, "texts": run.texts, "skipped": run.skipped, "ms": run.ms, "top": round(run.top, 4)}
        for run in decision.detectors
    ]


def released_response(exchange: Exchange, decision: Decision) -> dict[str, Any]:
    """The response as the agent received it (redactions applied), in the shape of an
    end-of-stream record, so a reviewer reads streamed and whole answers alike."""
    rewritten = {rewrite.path: rewrite.text for rewrite in decision.rewrites}
    text: dict[str, str] = {}
    for message in exchange.messages:
        for part in message.parts:
            key = ".".join(str(item) for item in part.path)
            text[key] = rewritten.get(part.path, part.text)
    calls = [{"id": call.id, "name": call.name} for message in exchange.messages for call in message.tool_calls]
    return {"text": text, "tool_calls": calls}


def event_record(
    exchange_id: str,
    *,
    event: str,
    agent: str | None,
    route: str | None,
    status: int,
    error: str,
    policy_name: str,
    policy_sha256: str,
    direction: str = "request",
    action: str = "block",
    rules: Sequence[str] = (),
) -> dict[str, Any]:
    """A record for an exchange that never became inspectable (malformed body, upstream
    down, body too large, an agent in quarantine): the refusal is evidence too."""
    return {
        "exchange": exchange_id,
        "direction": direction,
        "event": event,
        "agent": agent,
        "route": route,
        "action": action,
        "intended": action,
        "status": status,
        "error": error,
        "rules": [{"id": rule} for rule in rules],
        "tags": [],
        "policy": {"name": policy_name, "sha256": policy_sha256},
    }


def agent_record(exchange_id: str, details: Mapping[str, Any], *, policy_name: str, policy_sha256: str) -> dict[str, Any]:
    """What the firewall learnt about agents during an exchange: a lineage edge, a
    quarantine transition, a drift alert, a protocol rule crossed in monitor mode.
    `details` carries `event` and the agent(s) it is about."""
    return {"exchange": exchange_id, **details, "policy": {"name": policy_name, "sha256": policy_sha256}}


def stream_record(
    request: Exchange,
    outcome: StreamOutcome,
    *,
    policy_name: str,
    policy_sha256: str,
    identified_by: str | None,
    timings: dict[str, float],
    note: str | None = None,
) -> dict[str, Any]:
    """The end-of-stream record: the response as the client received it (redactions
    applied, nothing past a block), so a stream is reviewed like any other response.
    Span `message` numbers index `channels`."""
    decision = outcome.decision
    record: dict[str, Any] = {
        "exchange": request.id,
        "direction": "response",
        "agent": request.agent,
        "identified_by": identified_by,
        "source": request.source_agent,
        "target": request.target_agent,
        "route": request.route,
        "provider": request.provider,
        "model": request.model,
        "stream": True,
        "action": str(decision.action),
        "intended": str(decision.intended),
        "rules": [finding_record(finding) for finding in decision.findings],
        "tags": list(decision.tags),
        "channels": list(outcome.channels),
        "response": {"text": outcome.released_text, "tool_calls": outcome.tool_calls},
        "holdback_max_chars": outcome.holdback_max,
        "events": {"in": outcome.events_in, "out": outcome.events_out},
        "policy": {"name": policy_name, "sha256": policy_sha256},
        "timings_ms": _milliseconds(timings),
    }
    _add_verdict(record, decision)
    if decision.blocking_rule:
        record["withheld"] = outcome.withheld
    if outcome.error:
        record["error"] = outcome.error
    if note:
        record["note"] = note
    return record
