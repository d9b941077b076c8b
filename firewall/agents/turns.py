"""Earlier turns a request continues by id, remembered so that rules still see them.

OpenAI's Responses API lets a request name the response it follows
(`previous_response_id`) or a conversation it adds to (`conversation`) instead of resending
the history: the earlier turns are not in the body. A firewall that inspected only the
body would judge each turn alone, and an instruction planted three turns back would be
out of sight. So the firewall keeps what it saw of each turn in the agent state backend
(shared by every replica with Redis): the messages it forwarded (redactions applied: a
redacted secret is not stored) and the answer the client received. A request that
continues an id it knows is inspected with those messages in front; their parts' paths
start with `EARLIER`, so no rewrite targets them (they are not in this body: `in_body`).
An id this firewall never saw (another firewall's, or expired) is said so in the audit
record, and the request is inspected as it is.

Each turn is stored once, with its own messages and the ids of the turns before it (newest
first): storage grows with the conversation, not with its square, and a recall reads the
turn and then its predecessors, a batch per round trip, until `max_chars` of text are in.

A refusal the firewall answers a blocked request with has an id of its own making, which
the upstream never issued: continued as it is, the next request would fail upstream. Such
a turn is remembered as *answered here*, with the turn the upstream knows before it
(`resumes`); a request that continues it is sent on as continuing that turn instead
(`ContinuesTurns.resumed`), as if the blocked turn had not happened, which upstream it did
not. Its messages are not kept: the blocked request read back as context would block every
turn after it, and the refusal's text names the rule's subject.

Any wire format can take part: it implements `ContinuesTurns` (which earlier turn a
request continues; which ids a response can be continued by, its own id first), and its
stream reader `StreamTurnIds` (the ids a streamed answer carries, known once it has begun).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeGuard, runtime_checkable

import orjson

from firewall.agents.state import StateBackend
from firewall.model import EARLIER, Message, Part, PartKind, Path, Rewrite, ToolCall

__all__ = [
    "MAX_CHARS",
    "MAX_TURNS",
    "ContinuesTurns",
    "Recalled",
    "StreamTurnIds",
    "TurnMemory",
    "as_forwarded",
    "continues_turns",
    "in_body",
    "knows_turn_ids",
    "streamed_messages",
]

_KEY: Final = "turns:"
_VERSION: Final = 1
# Rules see the newest messages of a conversation, up to this many characters of text.
MAX_CHARS: Final = 256_000
# A turn remembers the ids of at most this many turns before it.
MAX_TURNS: Final = 512
_BATCH: Final = 32  # earlier turns read per round trip


@runtime_checkable
class ContinuesTurns(Protocol):
    """A wire format whose requests can continue an earlier turn by id."""

    def continues(self, body: Any) -> str | None:
        """The id of the earlier turn this request body continues, or None."""
        ...

    def turn_ids(self, body: Any) -> tuple[str, ...]:
        """The ids a later request may name to continue after this response body, the
        response's own id first (a conversation's id may follow)."""
        ...

    def resumed(self, body: Any, turn_id: str | None) -> Any:
        """Request `body` continuing `turn_id` instead of the turn it names (one the
        upstream never saw: the firewall's own answer); None: continuing no earlier turn."""
        ...


@runtime_checkable
class StreamTurnIds(Protocol):
    """A stream reader that knows the ids its streamed answer can be continued by."""

    def turn_ids(self) -> tuple[str, ...]: ...


@functools.cache
def _implements(cls: type, protocol: type) -> bool:
    return issubclass(cls, protocol)


# isinstance() against a runtime protocol inspects the object's attributes every time
# (about 10 µs in Python 3.11, on every request); a class's answer never changes.
def continues_turns(wire: object) -> TypeGuard[ContinuesTurns]:
    """isinstance(wire, ContinuesTurns), decided once per class."""
    return _implements(type(wire), ContinuesTurns)


def knows_turn_ids(reader: object) -> TypeGuard[StreamTurnIds]:
    """isinstance(reader, StreamTurnIds), decided once per class."""
    return _implements(type(reader), StreamTurnIds)


@dataclass(frozen=True, slots=True)
class Recalled:
    """What the firewall remembers of the turns a request continues."""

    id: str  # as the request named it
    messages: tuple[Message, ...]  # oldest first; every part's path starts with EARLIER
    seen: bool  # False: not seen by this firewall, or expired
    agent: str | None = None  # the agent whose turn it was
    turns: tuple[str, ...] = ()  # the turns the conversation is made of, newest first (their own ids)
    truncated: bool = False  # older messages were left out to stay within max_chars
    expired: int = 0  # older turns no longer remembered
    answered_here: bool = False  # the turn is the firewall's own answer (a refusal): the upstream never saw it
    resumes: str | None = None  # then: the turn the upstream knows before it (None: none)

    def audit(self) -> dict[str, Any]:
        """The `context` of the request's audit record."""
        if not self.seen:
            return {"continues": self.id, "seen": False,
                    "note": f"unknown previous turn {self.id}: this firewall did not see it, or it expired; "
                            "the earlier turns were not inspected"}
        out: dict[str, Any] = {"continues": self.id, "seen": True, "earlier_messages": len(self.messages)}
        if self.agent is not None:
            out["agent"] = self.agent
        if self.truncated:
            out["truncated"] = True
        if self.expired:
            out["expired_turns"] = self.expired
        if self.answered_here:
            out["answered_by_firewall"] = True
            out["sent_on_as"] = self.resumes  # what the upstream was told this request continues
        return out


class TurnMemory:
    """Turns by id in a state backend."""

    def __init__(self, state: StateBackend, *, max_chars: int = MAX_CHARS) -> None:
        self.state = state
        self.max_chars = max_chars

    async def recall(self, wire: str, turn_id: str) -> Recalled:
        """The conversation up to and including turn `turn_id`, newest `max_chars` of it.
        Raises StateUnavailable when the backend cannot be read."""
        raw = await self.state.get(_key(wire, turn_id))
        if raw is None:
            return Recalled(turn_id, (), seen=False)
        latest = orjson.loads(raw)
        chain: list[str] = latest["chain"]
        kept: list[list[dict[str, Any]]] = []  # each turn's messages kept, newest turn first
        budget, truncated, expired, read = self.max_chars, False, 0, 0
        pending: list[dict[str, Any] | None] = [latest]
        while True:
            for turn in pending:
                if turn is None:
                    expired += 1
                    continue
                messages = turn["messages"]
                keep = _fitting(messages, budget, first=not kept)
                kept.append(messages[len(messages) - keep:])
                budget -= sum(_size(message) for message in kept[-1])
                if keep < len(messages):
                    truncated = True
                    break
            if truncated or read >= len(chain):
                break
            batch = chain[read:read + _BATCH]
            read += len(batch)
            values = await self.state.get_many([_key(wire, earlier) for earlier in batch])
            pending = [None if value is None else orjson.loads(value) for value in values]
        messages = [message for turn in reversed(kept) for message in turn]
        here = "resumes" in latest
        return Recalled(turn_id, _decode(messages), seen=True, agent=latest.get("agent"), turns=(latest["id"], *chain),
                        truncated=truncated or read < len(chain), expired=expired, answered_here=here,
                        resumes=latest["resumes"] if here else None)

    async def remember(self, wire: str, turn_ids: Sequence[str], messages: Sequence[Message], *,
                       after: Recalled | None, agent: str | None, ttl: float) -> None:
        """Store one turn (`messages`: this request's own, as forwarded, and the answer as
        the client received it) under each of `turn_ids`, its own id first, after the
        turns `after` holds. Raises StateUnavailable when the backend cannot be written."""
        await self._store(wire, turn_ids, {"messages": [_encode(message) for message in messages]}, after, agent, ttl)

    async def remember_refusal(self, wire: str, turn_id: str, *, resumes: str | None, after: Recalled | None,
                               agent: str | None, ttl: float) -> None:
        """Store the firewall's own answer to a blocked request under its id, after the
        turns `after` holds: a request continuing it is to be sent on as continuing
        `resumes`, the turn the upstream knows before it (or the one `after` resumes, when
        that was the firewall's too). Raises StateUnavailable when the backend cannot be
        written."""
        if after is not None and after.answered_here:
            resumes = after.resumes
        await self._store(wire, (turn_id,), {"messages": [], "resumes": resumes}, after, agent, ttl)

    async def _store(self, wire: str, turn_ids: Sequence[str], content: dict[str, Any], after: Recalled | None,
                     agent: str | None, ttl: float) -> None:
        ids = list(dict.fromkeys(turn_ids))
        if not ids:
            return
        chain = list(after.turns[:MAX_TURNS]) if after is not None and after.seen else []
        value = orjson.dumps({"v": _VERSION, "id": ids[0], "agent": agent, "chain": chain, **content})
        for turn_id in ids:
            await self.state.set(_key(wire, turn_id), value, ttl=ttl)


def in_body(rewrites: Iterable[Rewrite]) -> tuple[Rewrite, ...]:
    """The rewrites aimed at this body: none at an earlier turn's part (it is not here)."""
    return tuple(rewrite for rewrite in rewrites if not (rewrite.path and rewrite.path[0] is EARLIER))


def as_forwarded(messages: Iterable[Message], rewrites: Iterable[Rewrite]) -> tuple[Message, ...]:
    """`messages` as they went on: each rewritten part with its new text."""
    rewritten = {rewrite.path: rewrite.text for rewrite in rewrites}
    if not rewritten:
        return tuple(messages)
    out = []
    for message in messages:
        parts = tuple(Part(rewritten.get(part.path, part.text), part.path, part.kind) for part in message.parts)
        out.append(Message(message.role, parts, message.tool_calls, message.tool_call_id, message.name))
    return tuple(out)


def streamed_messages(released_text: dict[str, str], tool_calls: Iterable[dict[str, Any]]) -> tuple[Message, ...]:
    """A streamed answer as the client received it (`StreamOutcome.released_text`), one
    assistant message per channel; a channel that carried a tool call's arguments is one."""
    calls = {".".join(map(str, call["channel"])): call for call in tool_calls}
    out = []
    for channel, text in released_text.items():
        call = calls.get(channel)
        if call is None:
            out.append(Message("assistant", (Part(text, (channel,)),)))
        else:
            out.append(Message("assistant", (Part(text, (channel,), PartKind.TOOL_ARGUMENTS),),
                               (ToolCall(call.get("id") or "", call.get("name") or "", text),)))
    return tuple(out)


# --- storage -------------------------------------------------------------------------


def _key(wire: str, turn_id: str) -> str:
    return f"{_KEY}{wire}:{turn_id}"


def _size(message: dict[str, Any]) -> int:
    return sum(len(text) for text, _ in message["parts"])


def _fitting(messages: list[dict[str, Any]], budget: int, *, first: bool) -> int:
    """How many of a turn's newest messages fit in `budget` characters (the newest turn's
    last message always does: a request is never inspected with nothing before it)."""
    used = count = 0
    for message in reversed(messages):
        size = _size(message)
        if used + size > budget and not (first and count == 0):
            break
        used += size
        count += 1
    return count


def _encode(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "parts": [[part.text, str(part.kind)] for part in message.parts]}
    if message.tool_calls:
        out["calls"] = [[call.id, call.name] for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _decode(stored: list[dict[str, Any]]) -> tuple[Message, ...]:
    messages = []
    for m, item in enumerate(stored):
        where: Path = (EARLIER, m)
        parts = tuple(Part(text, (*where, p), PartKind(kind)) for p, (text, kind) in enumerate(item["parts"]))
        calls = tuple(ToolCall(call_id, name, None) for call_id, name in item.get("calls", ()))
        messages.append(Message(item["role"], parts, calls, item.get("tool_call_id"), item.get("name")))
    return tuple(messages)
