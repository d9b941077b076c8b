"""Server-sent events over a whole buffered body: split into events, render back.

Follows the WHATWG parsing rules that matter for LLM streams: lines end in \\n, \\r\\n
or \\r; a line starting with ':' is a comment; `data` lines of one event are joined
with \\n; a blank line ends an event. A last event without its closing blank line is
still returned, because the SDKs' decoders process it too, and what the client will
act on must be what the firewall inspected.

`SSEDecoder` does the same incrementally, for StreamGuard: it works on bytes and decodes
a line only once it is complete (a UTF-8 character may be split across reads), and
every byte it is fed ends up in exactly one event's `raw`, so an event the firewall does
not change is passed on byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from firewall.protocols.base import BodyShapeError, StreamEvent

__all__ = ["SSEDecoder", "SSEEvent", "parse_events", "render_event", "render_events"]


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


# --- incremental ---------------------------------------------------------------------

_LINE_END: Final = re.compile(rb"[\r\n]")
_CR: Final = 13
_LF: Final = 10
_BOM: Final = b"\xef\xbb\xbf"


class SSEDecoder:
    """Splits a byte stream into `StreamEvent`s as the bytes arrive.

    Every input byte lands in exactly one event's `raw`, so the concatenation of all
    `raw`s is the input. A block of only comments (or a stray blank line) becomes an
    event with no name, empty data and no json, passed on in order like any other.

    Each byte is scanned for line ends once, and the buffer is compacted once per read:
    a long line or a read holding many events costs linear time.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes not yet in a released event
        self._offset = 0  # stream offset of _buf[0], for error messages
        self._event_start = 0  # in _buf: where the event being built begins
        self._line_start = 0  # in _buf: where the incomplete line begins
        self._skip_lf = False  # the last line ended in \r: a \n right after belongs to it
        self._held_end: int | None = None  # an event ended by a \r at the end of a read
        self._first_line = True  # only the stream's first line may start with a BOM
        self._name: str | None = None
        self._data: list[str] = []
        self._closed = False

    @property
    def buffered(self) -> int:
        """How many bytes are held, waiting for the end of their event."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if self._closed:
            raise RuntimeError("SSEDecoder: feed() after close()")
        if not chunk:
            return []
        events: list[StreamEvent] = []
        buf = self._buf
        base = len(buf)  # chunk[i] is buf[base + i]
        buf += chunk
        first = 0
        if self._held_end is not None:
            # The last read ended an event with \r: a \n now completes that \r\n and
            # goes with it; anything else begins the next event.
            end, self._held_end, self._skip_lf = self._held_end, None, False
            if chunk[0] == _LF:
                end += 1
                self._line_start = end
                first = 1
            events.append(self._dispatch(end))
        for match in _LINE_END.finditer(chunk, first):
            end = base + match.start()
            if end < self._line_start:
                continue  # the \n of a \r\n, consumed with its \r
            if self._skip_lf:
                self._skip_lf = False
                if end == self._line_start and buf[end] == _LF:
                    self._line_start = end + 1
                    continue
            blank = self._line(end)
            stop = end + 1
            if buf[end] == _CR:
                if stop < len(buf):
                    stop += buf[stop] == _LF
                else:
                    self._skip_lf = True
                    if blank:
                        # Its \n may come in the next read: wait for it rather than
                        # split one \r\n across two events.
                        self._held_end = stop
                        self._line_start = stop
                        break
            self._line_start = stop
            if blank:
                events.append(self._dispatch(stop))
        self._compact()
        return events

    def close(self) -> list[StreamEvent]:
        """The last event, if the stream ended without its blank line (or mid-line)."""
        if self._closed:
            return []
        self._closed = True
        if self._held_end is not None:
            end, self._held_end = self._held_end, None
            return [self._dispatch(end)]
        if self._event_start == len(self._buf):
            return []
        if self._line_start < len(self._buf):
            self._line(len(self._buf))
        return [self._dispatch(len(self._buf))]

    def _line(self, end: int) -> bool:
        """Reads the line _buf[_line_start:end] into the event being built; True if blank."""
        start = self._line_start
        if self._first_line:
            self._first_line = False
            if self._buf.startswith(_BOM, start, end):
                start += len(_BOM)
        if start == end:
            return True
        try:
            line = self._buf[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyShapeError(f"stream: not valid UTF-8 at byte {self._offset + start + exc.start}") from None
        if line[0] == ":":
            return False
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._name = value
        # id and retry say nothing about content; unknown fields are ignored per spec.
        return False

    def _dispatch(self, end: int) -> StreamEvent:
        """The event made of _buf[_event_start:end]."""
        data = "\n".join(self._data)
        event = StreamEvent(raw=bytes(self._buf[self._event_start : end]), event=self._name, data=data, json=_json(data))
        self._event_start = end
        self._name, self._data = None, []
        return event

    def _compact(self) -> None:
        done = self._event_start
        if done:
            del self._buf[:done]
            self._offset += done
            self._event_start = 0
            self._line_start -= done
            if self._held_end is not None:
                self._held_end -= done


def _json(data: str) -> Any:
    if not data or data == "[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
