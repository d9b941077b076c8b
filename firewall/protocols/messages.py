"""Streams whose events each carry a whole message (MCP's SSE answers), as a wire format
reads them.

An LLM stream adds text to a growing answer a few characters per event; `StreamReader`
reports those deltas and the StreamGuard (firewall/stream.py) inspects the text as it
grows. An MCP stream is different: each event is one complete JSON-RPC message (a
progress notification, a request from the server, the answer itself), and an answer is
decided whole, like a response that was not streamed. A `MessageStreamReader` says what
each event carries; the MessageStreamGuard (firewall/message_stream.py) inspects every
event before it is released, one at a time, so the stream still flows event by event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from firewall.model import Message
from firewall.protocols.base import StreamDelta, StreamEvent

__all__ = ["MessageStreamReader"]


class MessageStreamReader(ABC):
    """One provider's view of one stream of whole messages. Stateful: it remembers which
    requests have been answered, so that a block or a failure answers the others."""

    @abstractmethod
    def messages(self, event: StreamEvent) -> tuple[Message, ...]:
        """The inspectable messages the event carries (paths into `event.json`); none for
        a keep-alive or a message with nothing to inspect. Raises BodyShapeError for an
        event it cannot read: it is not released uninspected."""

    @abstractmethod
    def render(self, event: StreamEvent, json: Any) -> bytes:
        """The event re-rendered with rewritten data (its other fields kept)."""

    @abstractmethod
    def released(self, event: StreamEvent) -> None:
        """The event has been passed on to the client."""

    @abstractmethod
    def blocked(self, message: str, respond: str | None) -> bytes:
        """Events that end the stream after a block, answering every request not yet
        answered: "refusal" as a well-formed answer where the protocol has one, "error"
        or None as an error."""

    @abstractmethod
    def failed(self, message: str) -> bytes:
        """Events that end the stream when the upstream broke off, answering every request
        not yet answered with an error."""

    def tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls the stream made, for the audit record (none by default)."""
        return []

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        # Text deltas are the StreamGuard's business. A stream of whole messages that
        # reached it would pass uninspected; failing here ends it closed instead.
        raise TypeError(f"{type(self).__name__} reads whole messages: its stream goes through "
                        "MessageStreamGuard (firewall/message_stream.py), not StreamGuard")
