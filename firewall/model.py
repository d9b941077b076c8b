"""The few types everything in the firewall speaks.

A wire format turns an HTTP body into an `Exchange`; the engine turns an `Exchange`
into a `Decision`; the wire format applies the `Decision` back to the body. Every piece
of text the firewall inspects is a `Part` that remembers where it lives in the body
(`Part.path`), so a redaction can be written back into exactly the same place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final


class Direction(enum.StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class Action(enum.StrEnum):
    """What happens to an exchange. Declared in order of severity."""

    ALLOW = "allow"
    TAG = "tag"
    REDACT = "redact"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY: Final = {Action.ALLOW: 0, Action.TAG: 1, Action.REDACT: 2, Action.BLOCK: 3}


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"


class PartKind(enum.StrEnum):
    TEXT = "text"
    TOOL_ARGUMENTS = "tool_arguments"
    TOOL_RESULT = "tool_result"


class _EmbeddedJson:
    """Path marker: the value at this point is a JSON document encoded in a string
    (OpenAI's `function.arguments`); the rest of the path descends into it."""

    _instance: _EmbeddedJson | None = None

    def __new__(cls) -> _EmbeddedJson:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EMBEDDED_JSON"

    def __reduce__(self) -> str:
        return "EMBEDDED_JSON"


EMBEDDED_JSON: Final = _EmbeddedJson()


class _EmbeddedText:
    """Path marker: the value at this point is a text file's bytes in base64 (an A2A file
    part, Gemini's inline data); reading decodes them as UTF-8, writing encodes again."""

    _instance: _EmbeddedText | None = None

    def __new__(cls) -> _EmbeddedText:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EMBEDDED_TEXT"

    def __reduce__(self) -> str:
        return "EMBEDDED_TEXT"


EMBEDDED_TEXT: Final = _EmbeddedText()


class _Earlier:
    """Path marker, always first: the part is not in this body but in an earlier turn the
    request continues by id (OpenAI Responses' `previous_response_id`), put in front so
    that rules see the conversation (firewall/agents/turns.py). No rewrite targets it."""

    _instance: _Earlier | None = None

    def __new__(cls) -> _Earlier:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "EARLIER"

    def __reduce__(self) -> str:
        return "EARLIER"


EARLIER: Final = _Earlier()

PathItem = str | int | _EmbeddedJson | _EmbeddedText | _Earlier
Path = tuple[PathItem, ...]


@dataclass(frozen=True, slots=True)
class Part:
    """One inspectable piece of text and where it lives in the body."""

    text: str
    path: Path
    kind: PartKind = PartKind.TEXT


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: Any  # decoded JSON when it parses, else the raw string


@dataclass(frozen=True, slots=True)
class Message:
    """A message in provider-neutral form. Tool-call arguments and tool results are
    parts too (with their own `kind`), so every rule sees them."""

    role: str  # system | developer | user | assistant | tool
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(part.text for part in self.parts)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Whose words a request carries, as lineage found them: the agent whose recorded
    output overlaps the request, and what is known about that output now."""

    agent: str  # the source agent
    exchange_id: str  # the exchange whose response the words come from
    flagged: bool = False  # that response crossed a rule
    quarantined: bool = False  # the source agent is in quarantine now
    tainted: bool = False  # flagged or quarantined content anywhere upstream
    hops: int = 1  # agents the content passed through before this request
    path: tuple[str, ...] = ()  # those agents, oldest first


    def key(self) -> tuple[Any, ...]:
        return (self.agent, self.flagged, self.quarantined, self.tainted, self.hops)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One direction of one call through the firewall.

    `agent` is the calling agent; `source_agent` the agent whose words the request
    carries, when the caller declared it. `body` is the parsed JSON body and `raw` its
    bytes as received.
    """

    id: str
    direction: Direction
    provider: str  # the upstream: openai | anthropic
    route: str  # the wire format: openai_chat | anthropic_messages
    messages: tuple[Message, ...]
    model: str | None = None
    agent: str | None = None
    source_agent: str | None = None
    target_agent: str | None = None
    stream: bool = False
    provenance: Provenance | None = None  # requests only: where lineage says the content came from
    trace_id: str | None = None  # the W3C traceparent's trace id, when the caller sent one
    body: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    raw: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Span:
    """Characters [start, end) of `messages[message].parts[part].text`."""

    message: int
    part: int
    start: int
    end: int
    label: str | None = None  # what matched: a list, pattern or detector name


@dataclass(frozen=True, slots=True)
class DetectorRun:
    """One detector's work on an exchange: the texts it was given (cache hits included),
    the texts it was spared (their message was already blocked by cheaper rules, or a
    cascade's cheaper detector was sure), its wall time and the highest score it gave."""

    detector: str
    texts: int
    skipped: int
    ms: float
    top: float


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired: why, how strongly, and where."""

    rule: str
    action: Action
    mode: Mode
    detector: str | None = None
    score: float | None = None
    spans: tuple[Span, ...] = ()
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    tags: tuple[str, ...] = ()
    message: str | None = None  # the rule's explanation, shown to the client on block


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Replace the text at `path` with `text` (the part after redaction)."""

    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine decided. `action` is what is enforced; `intended` what would
    have been enforced if every rule were in enforce mode (they differ in monitor mode)."""

    action: Action
    intended: Action
    mode: Mode
    findings: tuple[Finding, ...] = ()
    tags: tuple[str, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    blocking_rule: str | None = None
    reason: str | None = None
    respond: str | None = None  # error | refusal | None (the listener's default): how a block is answered
    detectors: tuple[DetectorRun, ...] = ()  # what each detector cost, for the messages not decided before

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(finding.rule for finding in self.findings))


ALLOW: Final = Decision(action=Action.ALLOW, intended=Action.ALLOW, mode=Mode.ENFORCE)
