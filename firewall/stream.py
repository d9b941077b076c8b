"""StreamGuard: incremental inspection of a streamed response, with a bounded hold-back.

One synchronous object per stream, shared by every listener: `feed(chunk) -> bytes` and
`close() -> bytes` (and `fail(message) -> bytes` when the upstream breaks off). It parses
the SSE bytes into events, reassembles each text the events add to (a *channel*: a
choice's content, a tool call's arguments, a content block), inspects the growing text
with the same engine and policy as a whole message, and releases an event only once
every character it carries has been checked and can no longer become part of a match.

What it holds back is the least the rules that can still change the stream need (see
`firewall/holdback.py`), never more than the policy's `stream.max_holdback` characters.
A redaction that cannot close within that cap blocks the stream: fail closed. Each
window is inspected by those rules only; when the stream ends, the whole text is
inspected once more by every rule, so tags, monitor findings and scores are recorded as
for any other response.

A block releases the text before the offending span, then ends the stream the way the
provider's SDK understands (`StreamReader.blocked`). A redaction rewrites the deltas that
carry the span: the first gets the replacement, the rest lose the span's characters, and
every event stays valid JSON in its original order.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from firewall.engine import Engine, apply_redactions
from firewall.engine import replacement as _replace_with
from firewall.holdback import HoldBack, acts_mid_stream
from firewall.model import Action, Decision, Direction, Exchange, Finding, Message, Mode, Part, PartKind, Span
from firewall.protocols._paths import set_at
from firewall.protocols._sse import SSEDecoder
from firewall.protocols.base import StreamDelta, StreamEvent, StreamReader

__all__ = ["HoldBack", "StreamGuard", "StreamOutcome"]


@dataclass
class _Channel:
    """One reassembled text."""

    name: str
    kind: PartKind
    text: str = ""
    released: int = 0  # text[:released] has reached the client
    inspected: int = 0  # text[:inspected] has been inspected
    safe: int = 0  # text[:safe] may be released
    cut: int | None = None  # a block: nothing from here on is released
    redactions: list[tuple[int, int, str]] = field(default_factory=list)
    open_from: int | None = None  # the start of a match still reaching the end of the text
    matches: list[tuple[int, int, str]] = field(default_factory=list)  # list/pattern matches in the last window


@dataclass(frozen=True, slots=True)
class _Piece:
    delta: StreamDelta
    channel: _Channel
    start: int
    end: int


@dataclass(slots=True)
class _Held:
    event: StreamEvent
    pieces: tuple[_Piece, ...]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """What happened to one stream, for the audit record."""

    decision: Decision
    channels: tuple[str, ...]  # span.message indexes this tuple
    released_text: dict[str, str]  # per channel, as the client received it (redacted, cut)
    tool_calls: list[dict[str, Any]]
    holdback_max: int  # the most characters held back at once
    withheld: list[dict[str, Any]]  # block cuts: channel, from offset, rule
    events_in: int
    events_out: int
    error: str | None


class StreamGuard:
    """Inspects one streamed response incrementally. Not thread-safe: one per stream."""

    def __init__(self, engine: Engine, reader: StreamReader, request: Exchange, holdback: HoldBack | None = None,
                 window_engine: Engine | None = None) -> None:
        self._engine = engine
        self._window_engine = window_engine or Engine(engine.policy, only=acts_mid_stream)

        self._reader = reader
        self._policy = engine.policy
        self._holdback = holdback or HoldBack.for_policy(engine.policy, request.route)
        self._context = dataclasses.replace(request, direction=Direction.RESPONSE, messages=(), body={}, raw=b"",
                                            stream=True)
        self._decoder = SSEDecoder()
        self._held: deque[_Held] = deque()
        self._channels: dict[tuple[str | int, ...], _Channel] = {}
        self._findings: dict[str, _Found] = {}
        self._holdback_max = 0
        self._terminal = getattr(reader, "terminal", None)
        self._at_end = False
        self._closing = False
        self._withheld: list[dict[str, Any]] = []
        self._events_in = self._events_out = 0
        self._finished = False
        self._block: Finding | None = None
        self._error: str | None = None
        # Rules about who is talking are decided before the first byte: a stream that
        # is refused outright is answered like any other blocked response.
        self.at_start = engine.inspect(self._context)
        self._collect(self.at_start, {})

    @property
    def finished(self) -> bool:
        """True once the stream has been ended (blocked, failed or closed)."""
        return self._finished

    # -- the three entry points ---------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        if self._finished:
            return b""
        for event in self._decoder.feed(chunk):
            self._accept(event)
        self._inspect(final=False)
        return self._release()

    @property
    def at_end(self) -> bool:
        """The event that ends the stream for the SDK has arrived (it is held for `close`)."""
        return self._at_end

    def close(self) -> bytes:
        if self._finished:
            return b""
        for event in self._decoder.close():
            self._accept(event)
        self._inspect(final=True)
        self._closing = True
        out = self._release()
        self._finished = True
        self._inspect_whole()
        return out

    def fail(self, message: str) -> bytes:
        """The upstream broke off: release what has been checked, then an error event."""
        if self._finished:
            return b""
        self._error = message
        self._inspect(final=True)
        out = self._release()
        self._finished = True
        self._inspect_whole()
        return out + self._reader.failed(message)

    def abort(self, message: str) -> bytes:
        """End the stream at once with an error event, releasing nothing more."""
        self._error = message
        self._finished = True
        self._held.clear()
        return self._reader.failed(message)

    # -- reading ------------------------------------------------------------------------

    def _accept(self, event: StreamEvent) -> None:
        self._events_in += 1
        if self._terminal is not None and self._terminal(event):
            self._at_end = True
        pieces = []
        for delta in self._reader.deltas(event):
            channel = self._channels.get(delta.channel)
            if channel is None:
                channel = self._channels[delta.channel] = _Channel(".".join(map(str, delta.channel)), delta.kind)
            start = len(channel.text)
            channel.text += delta.text
            pieces.append(_Piece(delta, channel, start, len(channel.text)))
        self._held.append(_Held(event, tuple(pieces)))

    # -- inspecting ---------------------------------------------------------------------

    def _inspect(self, *, final: bool) -> None:
        # A match held open at the end of a channel's text ("kill" may become "killing") is
        # decided at the end of the stream even if that channel got nothing more since.
        fresh = [c for c in self._channels.values()
                 if (len(c.text) > c.inspected or (final and c.open_from is not None)) and c.cut is None]
        if fresh and self._block is None:
            windows: list[tuple[_Channel, int]] = []
            for channel in fresh:
                start = self._holdback.window_start(channel.text, channel.released)
                (found,) = self._policy.patterns.score([channel.text[start:]])
                channel.matches = [(start + m.start, start + m.end, m.label) for m in found.matches]
                channel.inspected = len(channel.text)
                channel.open_from = None
                # Most windows match no list or pattern at all; when every rule that acts
                # mid-stream needs one, such a window cannot fire and costs no more.
                if found.matches or not self._holdback.pattern_gated:
                    windows.append((channel, start))
            if windows:
                messages = tuple(Message(role="assistant", parts=(Part(c.text[start:], ("stream", c.name), c.kind),))
                                 for c, start in windows)
                decision = self._window_engine.inspect(dataclasses.replace(self._context, messages=messages),
                                                       remember=False)
                self._apply(decision, dict(enumerate(windows)), final)
        for channel in self._channels.values():
            channel.safe = self._safe_point(channel, final)
        if self._block is not None:  # a block found while computing a safe point
            for channel in self._channels.values():
                channel.safe = channel.cut if channel.cut is not None else channel.released

    def _apply(self, decision: Decision, windows: dict[int, tuple[_Channel, int]], final: bool) -> None:
        """Turn a window's decision into cuts, redactions and held matches."""
        self._collect(decision, windows)
        for finding in decision.findings:
            if finding.mode is not Mode.ENFORCE or finding.action not in (Action.BLOCK, Action.REDACT):
                continue
            spans = [(windows[s.message][0], windows[s.message][1] + s.start, windows[s.message][1] + s.end, s)
                     for s in finding.spans if s.message in windows]
            # A match that reaches the end of the text so far may still grow ("kill" may
            # become "killing", a token may go on): hold it and decide when it stops.
            settled = [span for span in spans if final or span[2] < len(span[0].text)]
            for channel, start, _end, _span in spans:
                if not final and _end >= len(channel.text):
                    channel.open_from = start if channel.open_from is None else min(channel.open_from, start)
            if finding.action is Action.BLOCK:
                if spans and not settled:
                    continue
                self._block_at(finding, settled, windows)
                return
            for channel, start, end, span in settled:
                replacement = _replace_with(self._policy, finding.rule, span.label or finding.rule)
                if channel.kind is PartKind.TOOL_ARGUMENTS:
                    replacement = orjson.dumps(replacement).decode()[1:-1]  # stays a valid JSON string
                if (start, end, replacement) not in channel.redactions:
                    channel.redactions.append((start, end, replacement))

    def _block_at(self, finding: Finding, spans: list[tuple[_Channel, int, int, Span]],
                  windows: dict[int, tuple[_Channel, int]]) -> None:
        self._block = finding
        if spans:
            channel = min(spans, key=lambda s: s[1])[0]
            cuts = {id(channel): max(channel.released, min(s[1] for s in spans if s[0] is channel))}
        else:  # no span (a score, a condition): withhold everything not yet released
            cuts = {id(c): c.released for c, _ in windows.values()}
        for channel in self._channels.values():
            channel.cut = cuts.get(id(channel), channel.released)
            if id(channel) in cuts:
                self._withheld.append({"channel": channel.name, "start": channel.cut, "end": len(channel.text),
                                       "rule": finding.rule})

    def _safe_point(self, channel: _Channel, final: bool) -> int:
        if channel.cut is not None:
            return channel.cut
        n = len(channel.text)
        if final:
            return n
        hold = self._holdback
        point = max(hold.hold_from(channel.text, channel.released, channel.matches), n - hold.cap)
        if channel.open_from is not None:
            if n - channel.open_from > hold.cap and self._block is None:
                self._fail_closed(channel)
                return channel.cut if channel.cut is not None else channel.released
            point = min(point, channel.open_from)
        return max(point, channel.released)

    def _fail_closed(self, channel: _Channel) -> None:
        finding = Finding(rule="stream-holdback-exceeded", action=Action.BLOCK, mode=Mode.ENFORCE,
                          message=f"a match in {channel.name} grew past stream.max_holdback "
                                  f"({self._holdback.cap} characters) before it could be redacted")
        self._findings[finding.rule] = _Found(finding, [], None)
        self._block = finding
        for other in self._channels.values():
            other.cut = max(other.released, channel.open_from or 0) if other is channel else other.released
        self._withheld.append({"channel": channel.name, "start": channel.cut, "end": len(channel.text),
                               "rule": finding.rule})

    def _inspect_whole(self) -> None:
        """Every rule on the whole response, once: what only tags or monitors is recorded
        here, as it would be for a response that was not streamed."""
        channels = [c for c in self._channels.values() if c.text]
        if not channels or self._block is not None:
            return
        messages = tuple(Message(role="assistant", parts=(Part(c.text, ("stream", c.name), c.kind),)) for c in channels)
        decision = self._engine.inspect(dataclasses.replace(self._context, messages=messages), remember=False)
        acting = {rule.id for rule in self._policy.rules if acts_mid_stream(rule)}
        late = dataclasses.replace(decision, findings=tuple(f for f in decision.findings if f.rule not in acting))
        self._collect(late, {index: (channel, 0) for index, channel in enumerate(channels)})

    # -- releasing ----------------------------------------------------------------------

    def _release(self) -> bytes:
        """Release held events, in order, as far as every piece they carry is safe."""
        out: list[bytes] = []
        for channel in self._channels.values():
            self._holdback_max = max(self._holdback_max, len(channel.text) - channel.safe)
        while self._held:
            held = self._held[0]
            if not self._closing and self._block is None and self._terminal is not None \
                    and self._terminal(held.event):
                break  # the stream's end waits for close(): see StreamReader.terminal
            if not all(piece.end <= piece.channel.safe for piece in held.pieces):
                if self._block is None:
                    break
                # The event that crosses the cut: it carries what comes before the cut.
                self._held.clear()
            else:
                self._held.popleft()
            out.append(self._render(held))
            self._reader.released(held.event)
            for piece in held.pieces:
                piece.channel.released = max(piece.channel.released, min(piece.end, piece.channel.safe))
        if self._block is not None and not self._finished:
            self._finished = True
            out.append(self._reader.blocked(self._block_message(), self._respond()))
        self._events_out += len(out)
        return b"".join(out)

    def _render(self, held: _Held) -> bytes:
        changed = [(piece, self._released_text(piece)) for piece in held.pieces]
        changed = [(piece, text) for piece, text in changed if text != piece.delta.text]
        if not changed:
            # An event may state again, whole, a text earlier events streamed (OpenAI
            # Responses' `*.done` events and `response.completed`): a reader that has such
            # events re-renders them with the text as the client received it.
            restate = getattr(self._reader, "restate", None)
            restated = restate(held.event) if restate is not None else None
            return held.event.raw if restated is None else restated
        data = held.event.json
        for piece, text in changed:
            data = set_at(data, piece.delta.path, text)
        return self._reader.render(held.event, data)

    def _released_text(self, piece: _Piece) -> str:
        """The piece's text as it may be released: redactions applied, nothing past a cut."""
        channel, start, end = piece.channel, piece.start, min(piece.end, piece.channel.safe)
        if end <= start:
            return ""
        spans = [(max(s, start) - start, min(e, end) - start, text if start <= s < end else "")
                 for s, e, text in channel.redactions if s < end and e > start]
        return apply_redactions(channel.text[start:end], spans) if spans else channel.text[start:end]

    def _block_message(self) -> str:
        assert self._block is not None
        reason = f": {self._block.message}" if self._block.message else ""
        return f"blocked by agent-firewall: rule {self._block.rule}{reason}"

    def _respond(self) -> str | None:
        assert self._block is not None
        rule = next((r for r in self._policy.rules if r.id == self._block.rule), None)
        return rule.respond if rule else None  # a finding of the firewall's own: the listener's default

    # -- the outcome --------------------------------------------------------------------

    def _collect(self, decision: Decision, windows: dict[int, tuple[_Channel, int]]) -> None:
        order = list(self._channels.values())
        for finding in decision.findings:
            found = self._findings.get(finding.rule)
            if found is None:
                found = self._findings[finding.rule] = _Found(finding, [], finding.score)
            elif finding.score is not None:
                found.score = max(found.score or 0.0, finding.score)
            for span in finding.spans:
                if span.message in windows:
                    channel, offset = windows[span.message]
                    shifted = Span(order.index(channel), 0, offset + span.start, offset + span.end, span.label)
                    if shifted not in found.spans:
                        found.spans.append(shifted)

    def outcome(self) -> StreamOutcome:
        findings = tuple(dataclasses.replace(f.finding, spans=tuple(f.spans), score=f.score)
                         for f in self._findings.values())
        enforced = [f for f in findings if f.mode is Mode.ENFORCE]
        action = max((f.action for f in enforced), key=lambda a: a.severity, default=Action.ALLOW)
        intended = max((f.action for f in findings), key=lambda a: a.severity, default=Action.ALLOW)
        tags = tuple(dict.fromkeys(t for f in enforced if f.action is Action.TAG for t in f.tags))
        decision = Decision(action=action, intended=intended, mode=self._policy.defaults.mode, findings=findings,
                            tags=tags, blocking_rule=self._block.rule if self._block else None,
                            reason=self._block.message if self._block else None)
        released = {c.name: _released(c) for c in self._channels.values()}
        return StreamOutcome(decision, tuple(c.name for c in self._channels.values()), released,
                             self._reader.tool_calls(), self._holdback_max, self._withheld,
                             self._events_in, self._events_out, self._error)


@dataclass
class _Found:
    finding: Finding
    spans: list[Span]
    score: float | None


def _released(channel: _Channel) -> str:
    end = channel.released
    spans = [(s, min(e, end), text) for s, e, text in channel.redactions if s < end]
    return apply_redactions(channel.text[:end], spans) if spans else channel.text[:end]

