"""The one interface every wire format implements.

A wire format knows one provider's body shapes: how to read the messages out of a
request or a response, how to write a redaction back, and how that provider says
"error" and "refused". The proxy knows none of this; it only calls these methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from firewall.model import Message, Rewrite


class BodyShapeError(ValueError):
    """The JSON parsed, but it is not a body this wire format understands."""


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    messages: tuple[Message, ...]
    model: str | None
    stream: bool


class WireFormat(Protocol):
    name: str  # openai_chat | anthropic_messages
    provider: str  # the upstream it goes to: openai | anthropic
    path: str  # the route, e.g. /v1/chat/completions

    def parse_request(self, body: Any) -> ParsedRequest:
        """Every inspectable text of a request body (all roles, tool arguments and
        tool results). Raises BodyShapeError for a body of the wrong shape."""
        ...

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        """Every inspectable text of a non-streamed response body."""
        ...

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        """A whole buffered SSE response, reassembled into the equivalent
        non-streamed response body."""
        ...

    def render_stream(self, body: dict[str, Any]) -> bytes:
        """A non-streamed response body rendered as this provider's SSE stream."""
        ...

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        """The body with each rewrite's text written at its path (a new object)."""
        ...

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        """This provider's error body for an HTTP status, as its SDK expects it."""
        ...

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        """A well-formed completion that carries a refusal, so an agent loop goes on
        (OpenAI: finish_reason content_filter; Anthropic: stop_reason refusal)."""
        ...
