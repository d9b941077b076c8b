"""MessageStreamGuard: a streamed answer whose events each carry a whole message (MCP's
SSE answers), inspected one event at a time.

The StreamGuard (firewall/stream.py) is for text that grows a few characters per event:
it holds back what a match may still grow into and can cut an answer in the middle. An
MCP event is already complete, and cutting a tool result in the middle would hand the
agent half of it as if it were all. So each event here is decided whole, by every rule,
like a response that was not streamed, and released once decided: allowed as it came,
rewritten where a rule redacts, or, on a block, replaced by the reader's answer to every
request still waiting (an error, or a refusal where the protocol has one), which ends
the stream. Events are never held back for later ones: a server that asks the agent
something mid-stream (sampling, elicitation) gets its question through and its answer
back before the stream goes on.

Same entry points as StreamGuard, so the listener drives both alike: `at_start`,
`feed(chunk) -> bytes`, `close() -> bytes`, `fail(message) -> bytes`, `abort`, `finished`,
`outcome()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from firewall.engine import Engine
from firewall.model import Action, Decision, Direction, Exchange, Finding, Mode, Span
from firewall.protocols._paths import apply_rewrites
from firewall.protocols._sse import SSEDecoder
from firewall.protocols.base import StreamEvent
from firewall.protocols.messages import MessageStreamReader
from firewall.stream import StreamOutcome

__all__ = ["MessageStreamGuard"]


@dataclass
class _Found:
    finding: Finding
    spans: list[Span]
    score: float | None


class MessageStreamGuard:
    """Inspects one stream of whole messages. Not thread-safe: one per stream."""

    def __init__(self, engine: Engine, reader: MessageStreamReader, request: Exchange) -> None:
        self._engine = engine
        self._reader = reader
        self._policy = engine.policy
        self._context = dataclasses.replace(request, direction=Direction.RESPONSE, messages=(), body={}, raw=b"",
                                            stream=True)
        self._decoder = SSEDecoder()
        self._out: list[bytes] = []  # decided, not yet handed to the listener
        self._channels: list[str] = []  # one per inspected message; span.message indexes it
        self._findings: dict[str, _Found] = {}
        self._withheld: list[dict[str, Any]] = []
        self._events_in = self._events_out = 0
        self._finished = False
        self._block: Decision | None = None
        self._error: str | None = None
        # Rules about who is talking are decided before the first byte, as in StreamGuard.
        self.at_start = engine.inspect(self._context)
        self._collect(self.at_start, 0)

    @property
    def finished(self) -> bool:
        """True once the stream has been ended (blocked, failed or closed)."""
        return self._finished

    def feed(self, chunk: bytes) -> bytes:
        if self._finished:
            return b""
        for event in self._decoder.feed(chunk):
            self._decide(event)
        return self._flush()

    def close(self) -> bytes:
        if self._finished:
            return b""
        for event in self._decoder.close():
            self._decide(event)
        self._finished = True
        return self._flush()

    def fail(self, message: str) -> bytes:
        """The upstream broke off, or sent what cannot be read: what was decided goes out,
        then the reader's errors for the requests still waiting."""
        if self._finished:
            return b""
        self._error = message
        self._finished = True
        return self._flush() + self._reader.failed(message)

    def abort(self, message: str) -> bytes:
        """End the stream at once, releasing nothing more."""
        self._error = message
        self._finished = True
        self._out.clear()
        return self._reader.failed(message)

    # -- deciding -----------------------------------------------------------------------

    def _decide(self, event: StreamEvent) -> None:
        if self._finished:
            return  # events after a block are dropped
        self._events_in += 1
        messages = self._reader.messages(event)
        if not messages:
            self._release(event, event.raw)
            return
        offset = len(self._channels)
        self._channels.extend(f"event{self._events_in}.{message.name or message.role}" for message in messages)
        decision = self._engine.inspect(dataclasses.replace(self._context, messages=messages, body=event.json,
                                                            raw=event.raw))
        self._collect(decision, offset)
        if decision.action is Action.BLOCK:
            self._block = decision
            self._finished = True
            self._withheld.append({"channel": self._channels[offset], "event": self._events_in,
                                   "rule": decision.blocking_rule})
            self._out.append(self._reader.blocked(self._block_text(decision), decision.respond))
            return
        if decision.rewrites:
            self._release(event, self._reader.render(event, apply_rewrites(event.json, decision.rewrites)))
        else:
            self._release(event, event.raw)

    def _release(self, event: StreamEvent, data: bytes) -> None:
        self._out.append(data)
        self._reader.released(event)

    def _flush(self) -> bytes:
        out = b"".join(self._out)
        self._events_out += sum(1 for data in self._out if data)
        self._out.clear()
        return out

    def _block_text(self, decision: Decision) -> str:
        rule = decision.blocking_rule or "policy"
        reason = f": {decision.reason}" if decision.reason else ""
        if decision.respond == "refusal":  # read by the agent's model: the same words as a refused request
            return f"This message was blocked by agent-firewall (rule {rule}){reason}."
        return f"blocked by agent-firewall: rule {rule}{reason} (exchange {self._context.id})"

    # -- the outcome --------------------------------------------------------------------

    def _collect(self, decision: Decision, offset: int) -> None:
        for finding in decision.findings:
            found = self._findings.get(finding.rule)
            if found is None:
                found = self._findings[finding.rule] = _Found(dataclasses.replace(finding, spans=()), [], finding.score)
            elif finding.score is not None:
                found.score = max(found.score or 0.0, finding.score)
            found.spans.extend(dataclasses.replace(span, message=span.message + offset) for span in finding.spans)

    def outcome(self) -> StreamOutcome:
        """What happened, for the audit record. `released_text` stays empty: the listener
        fingerprints it as what the agent's model said (lineage), and these messages are
        the server's, not the model's; the channels, rules and spans say what was found."""
        findings = tuple(dataclasses.replace(f.finding, spans=tuple(f.spans), score=f.score)
                         for f in self._findings.values())
        enforced = [f for f in findings if f.mode is Mode.ENFORCE]
        action = max((f.action for f in enforced), key=lambda a: a.severity, default=Action.ALLOW)
        intended = max((f.action for f in findings), key=lambda a: a.severity, default=Action.ALLOW)
        tags = tuple(dict.fromkeys(t for f in enforced if f.action is Action.TAG for t in f.tags))
        block = self._block
        decision = Decision(action=action, intended=intended, mode=self._policy.defaults.mode, findings=findings,
                            tags=tags, blocking_rule=block.blocking_rule if block else None,
                            reason=block.reason if block else None, respond=block.respond if block else None)
        return StreamOutcome(decision=decision, channels=tuple(self._channels), released_text={},
                             tool_calls=self._reader.tool_calls(), holdback_max=0, withheld=self._withheld,
                             events_in=self._events_in, events_out=self._events_out, error=self._error)
