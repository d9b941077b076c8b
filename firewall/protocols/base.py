"""The one interface every wire format implements.

A wire format knows one provider's body shapes: how to read the messages out of a
request or a response, how to write a redaction back, and how that provider says
"error" and "refused". The proxy knows none of this; it only calls these methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from firewall.model import Message, PartKind, Path, Rewrite


class BodyShapeError(ValueError):
    """The JSON parsed, but it is not a body this wire format understands."""


class ExactRoute:
    """`for_route` for a wire format with one fixed route, its `path`."""

    path: str

    def for_route(self, route: str) -> ExactRoute | None:
        return self if route == self.path else None


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    messages: tuple[Message, ...]
    model: str | None
    stream: bool


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event as it arrived: `raw` is every byte of it, its terminating
    blank line included, so an event the firewall does not change is passed on as is."""

    raw: bytes
    event: str | None  # the `event:` field
    data: str  # the `data:` lines joined with \n ("" for a comment or keep-alive)
    json: Any  # `data` parsed, or None ([DONE], a comment, a keep-alive, not JSON)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """A piece of text an event adds to one reassembled text (a channel)."""

    channel: tuple[str | int, ...]  # stable name of the reassembled text, e.g. ("choices", 0, "content")
    kind: PartKind  # TEXT, or TOOL_ARGUMENTS for partial JSON of a tool call
    text: str
    path: Path  # where `text` lives inside the event's `json`


class StreamReader(Protocol):
    """One provider's view of one streamed response, event by event. Stateful: it
    remembers what it has seen (ids, model, open blocks) to end the stream correctly."""

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        """The text deltas the event carries (none for role, usage, ping, [DONE]...)."""
        ...

    def render(self, event: StreamEvent, json: Any) -> bytes:
        """The event re-rendered with rewritten data (same event name, one data line)."""
        ...

    def released(self, event: StreamEvent) -> None:
        """The event has been passed on to the client (so `blocked` closes only what
        the client has seen open)."""
        ...

    def blocked(self, message: str, respond: str | None) -> bytes:
        """Bytes that end the stream cleanly after a block, in a shape the SDK accepts.
        respond None or "refusal": a clean end (OpenAI finish_reason content_filter and
        [DONE]; Anthropic stop_reason refusal); "error": an error event the SDK raises.
        Anthropic's default (None) is an error event."""
        ...

    def failed(self, message: str) -> bytes:
        """Bytes that end the stream when the upstream broke off: an error event."""
        ...

    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls seen so far: [{"channel", "id", "name"}], for the audit record."""
        ...

    # Optional: `terminal(event) -> bool`: the event that ends the stream for the SDK
    # (OpenAI's `[DONE]`, Anthropic's `message_stop`). The StreamGuard holds it until
    # `close()`, so that the listener can still end the stream with an error the SDK reads
    # (when the answer's audit record cannot be written) instead of after a clean end.
    # Optional: `restate(event) -> bytes | None`. An event that states again, whole, a text
    # earlier events streamed (OpenAI Responses' `*.done` events and `response.completed`)
    # is re-rendered with the text as the client received it (None: pass it as it came).
    # The StreamGuard calls it, when the reader has it, for every event it passes unchanged.


class WireFormat(Protocol):
    """One provider's or protocol's request and answer shapes.

    Optional members, which the listeners look up with getattr (a format without them gets
    the LLM-call behaviour; each is tested with the format that needs it):

    - `peer -> str | None`: the agent the route fronts (A2A): the exchange's agent is then
      that agent, and the caller is its source and target.
    - `upstream_path(route) -> str`: where the request goes on the upstream (default: the
      route itself).
    - `error_status(status) -> int`: the HTTP status to send a firewall error with
      (JSON-RPC: 200, the error is in the body).
    - `forwarded_methods -> frozenset[str]`: HTTP methods other than POST that the route
      passes through uninspected and recorded (MCP's DELETE, A2A's Agent Card GET); others
      get 405.
    - `rewrite_passed(status, data, url, upstream) -> bytes`: what such a passed answer
      becomes (the Agent Card's endpoint pointed at the firewall).
    - `continues(body) -> str | None` and `turn_ids(body)`: turns named by id rather than
      resent (OpenAI Responses' previous_response_id): see firewall/agents/turns.py.
    - `answers_from_tools -> bool`: the answers are a tool server's (MCP), not the calling
      agent's model's: no lineage record and no violation for the agent.
    """

    name: str  # openai_chat | anthropic_messages | ...
    provider: str  # the upstream it goes to (a name of ProxyConfig.upstreams): openai | anthropic | ...
    path: str  # the route, e.g. /v1/chat/completions (a pattern's description for parameterised routes)

    def for_route(self, route: str) -> WireFormat | None:
        """This wire format for `route` (a request path without its query string or a
        trailing slash), or None when the route is not its own. A format whose routes
        carry parameters (the model, whether to stream) returns an instance bound to
        them, so that parse_request sees them."""
        ...

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

    def stream_reader(self) -> StreamReader:
        """A reader for one streamed response of this provider."""
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
