"""Server-sent events over a whole buffered body: split into events, render back.

Follows the WHATWG parsing rules that matter for LLM streams: lines end in \\n, \\r\\n
or \\r; a line starting with ':' is a comment; `data` lines of one event are joined
with \\n; a blank line ends an event. A last event without its closing blank line is
still returned, because the SDKs' decoders process it too, and what the client will
act on must be what the firewall inspected. Incremental parsing is StreamGuard's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from firewall.protocols.base import BodyShapeError

__all__ = ["SSEEvent", "parse_events", "render_event", "render_events"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str | None = None


def parse_events(data: bytes) -> list[SSEEvent]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyShapeError(f"stream: not valid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        text = text[1:]

    events: list[SSEEvent] = []
    event_name: str | None = None
    data_lines: list[str] = []
    # splitlines() would also split on \x0b, \x1c, \u2028 and friends, which SSE does not.
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if data_lines or event_name is not None:
                events.append(SSEEvent(data="\n".join(data_lines), event=event_name))
            event_name, data_lines = None, []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            event_name = value
        # id and retry say nothing about content; unknown fields are ignored per spec.
    if data_lines or event_name is not None:
        events.append(SSEEvent(data="\n".join(data_lines), event=event_name))
    return events


def render_event(data: str, event: str | None = None) -> bytes:
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def render_events(events: Iterable[SSEEvent]) -> bytes:
    return b"".join(render_event(event.data, event.event) for event in events)
