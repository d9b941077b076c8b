"""Gemini generateContent and streamGenerateContent
(`POST /{v1,v1beta,v1alpha}/models/{model}:generateContent`, `...:streamGenerateContent`).

The route says which model and whether the answer streams; the body says nothing of
either. Every text a model reads or writes becomes a `Part`: the system instruction,
text parts (thoughts included), each string leaf of a function call's `args` and of a
function response's `response`, executable code and its result, and the string leaves of
server-side tool calls and responses. Inline data and file references are not read.

Google's JSON parser accepts a field under its JSON name (`functionCall`) or its proto
name (`function_call`), and its documentation uses both; so does the SDK when it reads an
answer. Both are read here, and an object that carries a field under both names is
refused: which one the upstream would keep is not something the firewall can know.

A streamed answer (`?alt=sse`) is a series of whole GenerateContentResponse objects, one
per SSE event, each adding to the candidates' text; without `alt=sse` the upstream sends
the same objects as one JSON array, which `parse_response` reads too.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Final

import orjson

from firewall.model import EMBEDDED_TEXT, Message, Part, PartKind, Path, Rewrite, ToolCall
from firewall.protocols import _paths
from firewall.protocols._paths import (
    expect_object as _object,
    expect_str as _required_str,
    format_path,
    optional_str as _optional_str,
    shape_error as _shape,
    string_leaves,
)
from firewall.protocols._memo import MessageMemo
from firewall.protocols._sse import parse_events, render_event
from firewall.protocols.base import BodyShapeError, ParsedRequest, StreamDelta, StreamEvent

__all__ = ["GeminiGenerateContent", "GeminiStreamReader"]

_MEMO: Final = MessageMemo()

_ROUTE: Final = re.compile(
    r"/(?:v1|v1beta|v1alpha)/(?P<model>(?:models|tunedModels)/[^/:]+):(?P<method>generateContent|streamGenerateContent)"
)
# google.rpc.Code names, by the HTTP status Google answers them with.
_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Content roles, as rules name them. A user turn made only of function responses is
# role tool (see `_parse_content`), as OpenAI's tool messages are.
_ROLES: Final = {"user": "user", "model": "assistant", "function": "tool", "tool": "tool"}
# Struct-valued fields whose string leaves are inspected: part field -> (member, kind).
_STRUCTS: Final = {
    "functionCall": ("args", PartKind.TOOL_ARGUMENTS),
    "functionResponse": ("response", PartKind.TOOL_RESULT),
    "toolCall": ("args", PartKind.TOOL_ARGUMENTS),
    "toolResponse": ("response", PartKind.TOOL_RESULT),
}
# String fields of code execution: part field -> (member, kind).
_CODE: Final = {
    "executableCode": ("code", PartKind.TOOL_ARGUMENTS),
    "codeExecutionResult": ("output", PartKind.TOOL_RESULT),
}
_FIREWALL_DOMAIN: Final = "agent-firewall"


class GeminiGenerateContent:
    """The wire format, unbound (in the registry) or bound to one route's model and
    streaming flag (what `for_route` returns)."""

    name = "gemini_generate_content"
    provider = "gemini"
    path = "/{v1,v1beta,v1alpha}/models/{model}:generateContent (or :streamGenerateContent)"

    def __init__(self, model: str | None = None, *, stream: bool = False) -> None:
        self.model = model
        self.stream = stream

    def __repr__(self) -> str:
        return f"GeminiGenerateContent(model={self.model!r}, stream={self.stream})"

    def for_route(self, route: str) -> GeminiGenerateContent | None:
        found = _ROUTE.fullmatch(route)
        if found is None:
            return None
        return GeminiGenerateContent(found["model"].removeprefix("models/"),
                                     stream=found["method"] == "streamGenerateContent")

    def parse_request(self, body: Any) -> ParsedRequest:
        obj = _object(body, ())
        contents_key, contents = _field(obj, "contents", ())
        if not isinstance(contents, list):
            raise _shape(("contents",), "an array" if contents_key else "an array (it is missing)")
        messages: list[Message] = []
        system_key, system = _field(obj, "systemInstruction", ())
        if system is not None:
            messages.append(_parse_content(system, (system_key,), role="system"))
        for i, raw in enumerate(contents):
            messages.append(_MEMO.parse(i, raw, lambda raw=raw, i=i: _parse_content(raw, (contents_key, i), role=None)))
        return ParsedRequest(messages=tuple(messages), model=self.model, stream=self.stream)

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        if isinstance(body, list):  # streamGenerateContent without alt=sse: the chunks as one array
            return tuple(message for n, chunk in enumerate(body) for message in _response_messages(chunk, (n,)))
        return _response_messages(body, ())

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        return _assemble_stream(data)

    def stream_reader(self) -> GeminiStreamReader:
        return GeminiStreamReader(self.model)

    def render_stream(self, body: dict[str, Any]) -> bytes:
        # One event holding the whole answer: the SDKs accumulate however it is cut.
        return _event(body)

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        return _paths.apply_rewrites(body, rewrites)

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        return _error(status, message, code)

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        # A text part (response.text reads it, a chat keeps the turn) and finishReason
        # SAFETY, which is how Gemini itself says that it stopped for content.
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "SAFETY", "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0},
            "modelVersion": model or self.model or "unknown",
            "responseId": _response_id(),
        }


# --- parsing -------------------------------------------------------------------------


def _proto_name(json_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", json_name).lower()


_PROTO_NAMES: Final = {
    name: _proto_name(name)
    for name in ("contents", "systemInstruction", "parts", "text", "candidates", "content", "inlineData", "mimeType",
                 *_STRUCTS, *_CODE)
}


def _field(obj: dict[str, Any], json_name: str, where: Path) -> tuple[str, Any]:
    """The key a field is under (its JSON or its proto name; "" when absent) and its value."""
    proto_name = _PROTO_NAMES[json_name]
    if proto_name != json_name and proto_name in obj:
        if json_name in obj:
            raise BodyShapeError(f"{format_path(where)}: both {json_name} and {proto_name} are set; "
                                 "send the field once, under one of its names")
        return proto_name, obj[proto_name]
    if json_name in obj:
        return json_name, obj[json_name]
    return "", None


def _parse_content(raw: Any, where: Path, *, role: str | None) -> Message:
    """A Content object as one Message: `role` None reads the role from the content."""
    content = _object(raw, where)
    parts_key, raw_parts = _field(content, "parts", where)
    if raw_parts is None:
        raw_parts = []
    elif not isinstance(raw_parts, list):
        raise _shape((*where, parts_key), "an array")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    responses: list[tuple[str | None, str | None]] = []  # (id, name) of each function response
    for j, raw_part in enumerate(raw_parts):
        _parse_part(raw_part, (*where, parts_key, j), parts, calls, responses)
    if role is None:
        wire_role = _optional_str(content, "role", where) or "user"
        role = _ROLES.get(wire_role)
        if role is None:
            raise BodyShapeError(f"{format_path((*where, 'role'))}: expected 'user' or 'model', not {wire_role!r}")
        if role == "user" and raw_parts and len(responses) == len(raw_parts):
            role = "tool"
    ids = {call_id for call_id, _ in responses if call_id}
    names = {name for _, name in responses if name}
    return Message(
        role=role,
        parts=tuple(part for part in parts if part.text),
        tool_calls=tuple(calls),
        # Only meaningful when the turn answers a single call.
        tool_call_id=next(iter(ids)) if len(ids) == 1 and len(responses) == 1 else None,
        name=next(iter(names)) if len(names) == 1 and len(responses) == 1 else None,
    )


def _parse_part(
    raw: Any,
    where: Path,
    parts: list[Part],
    calls: list[ToolCall],
    responses: list[tuple[str | None, str | None]],
) -> None:
    part = _object(raw, where)
    text_key, text = _field(part, "text", where)
    if text is not None:
        if not isinstance(text, str):
            raise _shape((*where, text_key), "a string")
        parts.append(Part(text, (*where, text_key)))  # a thought (thought: true) is text too
    for field, (member, kind) in _STRUCTS.items():
        key, value = _field(part, field, where)
        if value is None:
            continue
        field_where: Path = (*where, key)
        obj = _object(value, field_where)
        struct = obj.get(member)
        if struct is not None and not isinstance(struct, dict):
            raise _shape((*field_where, member), "an object")
        parts.extend(Part(leaf, path, kind) for leaf, path in string_leaves(struct, (*field_where, member)))
        call_id = _optional_str(obj, "id", field_where)
        if field == "functionCall":
            calls.append(ToolCall(id=call_id or "", name=_required_str(obj, "name", field_where), arguments=struct or {}))
        elif field == "functionResponse":
            responses.append((call_id, _required_str(obj, "name", field_where)))
    for field, (member, kind) in _CODE.items():
        key, value = _field(part, field, where)
        if value is None:
            continue
        field_where = (*where, key)
        code = _optional_str(_object(value, field_where), member, field_where)
        if code:
            parts.append(Part(code, (*field_where, member), kind))
    _inline_text(part, where, parts)
    # fileData (a URI), binary inlineData, thoughtSignature, videoMetadata...: not text


def _inline_text(part: dict[str, Any], where: Path, parts: list[Part]) -> None:
    """A text file inlined in base64 (`inlineData` of a text media type) is read as text:
    otherwise it would carry words past every rule. Bytes that are not base64 of UTF-8
    under a text media type are refused, never passed on unread."""
    key, value = _field(part, "inlineData", where)
    if value is None:
        return
    field_where: Path = (*where, key)
    blob = _object(value, field_where)
    media_key, media = _field(blob, "mimeType", field_where)
    if not _paths.is_text_media(media):
        return
    data = _required_str(blob, "data", field_where)
    text = _paths.decode_text_file(data)
    if text is None:
        raise _shape((*field_where, "data"), f"base64 of UTF-8 text (the media type is {media})")
    parts.append(Part(text, (*field_where, "data", EMBEDDED_TEXT)))


def _response_messages(body: Any, where: Path) -> tuple[Message, ...]:
    obj = _object(body, where)
    key, candidates = _field(obj, "candidates", where)
    if candidates is None:
        return ()  # a prompt Gemini blocked (promptFeedback), or a chunk of only usage
    if not isinstance(candidates, list):
        raise _shape((*where, key), "an array")
    messages: list[Message] = []
    for k, raw in enumerate(candidates):
        candidate_where: Path = (*where, key, k)
        candidate = _object(raw, candidate_where)
        content_key, content = _field(candidate, "content", candidate_where)
        if content is None:  # stopped before any content (finishReason SAFETY, RECITATION...)
            messages.append(Message(role="assistant"))
        else:
            messages.append(_parse_content(content, (*candidate_where, content_key), role="assistant"))
    return tuple(messages)


# --- a whole buffered stream ---------------------------------------------------------


class _Candidate:
    """One candidate being reassembled from its chunks. Consecutive text parts of the
    same kind (thought or not) join into one part, joined once at the end."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.role: Any = None
        self.parts: list[dict[str, Any]] = []
        self.texts: list[list[str] | None] = []  # fragments of parts[i]["text"]; None for other parts

    def feed(self, candidate: dict[str, Any], where: Path) -> None:
        for key, value in candidate.items():
            if key != "content":
                self.fields[key] = value  # finishReason, safetyRatings, index...: the last word wins
        content = candidate.get("content")
        if content is None:
            return
        content = _object(content, (*where, "content"))
        if self.role is None and content.get("role") is not None:
            self.role = content["role"]
        key, parts = _field(content, "parts", (*where, "content"))
        if parts is None:
            return
        if not isinstance(parts, list):
            raise _shape((*where, "content", key), "an array")
        for j, raw in enumerate(parts):
            self._part(_object(raw, (*where, "content", key, j)))

    def _part(self, part: dict[str, Any]) -> None:
        text = part.get("text")
        if isinstance(text, str) and set(part) <= {"text", "thought", "thoughtSignature"}:
            last = self.texts[-1] if self.texts else None
            if last is not None and self.parts[-1].get("thought") == part.get("thought"):
                last.append(text)
                if "thoughtSignature" in part:
                    self.parts[-1]["thoughtSignature"] = part["thoughtSignature"]
                return
            self.parts.append(dict(part))
            self.texts.append([text])
            return
        self.parts.append(part)
        self.texts.append(None)

    def result(self) -> dict[str, Any]:
        parts = [part if fragments is None else {**part, "text": "".join(fragments)}
                 for part, fragments in zip(self.parts, self.texts, strict=True)]
        out: dict[str, Any] = {"content": {"role": self.role or "model", "parts": parts}} if parts else {}
        return {**out, **self.fields}


def _assemble_stream(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = {}
    candidates: dict[int, _Candidate] = {}
    for n, event in enumerate(parse_events(data)):
        if not event.data:
            continue
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
        if not isinstance(chunk, dict):
            raise BodyShapeError(f"stream event {n}: expected a JSON object")
        if chunk.get("error") is not None:
            return {"error": chunk["error"]}  # the stream turned into an error: what the client sees
        for key, value in chunk.items():
            if key not in ("candidates", "error"):
                body[key] = value  # usageMetadata, modelVersion, responseId...: the last word wins
        key, raw_candidates = _field(chunk, "candidates", (f"stream event {n}",))
        if raw_candidates is None:
            continue
        if not isinstance(raw_candidates, list):
            raise _shape((f"stream event {n}", key), "an array")
        for k, raw in enumerate(raw_candidates):
            where: Path = (f"stream event {n}", key, k)
            candidate = _object(raw, where)
            index = _candidate_index(candidate, where)
            candidates.setdefault(index, _Candidate()).feed(candidate, where)
    if candidates:
        body = {"candidates": [candidates[index].result() for index in sorted(candidates)], **body}
    return body


def _candidate_index(candidate: dict[str, Any], where: Path) -> int:
    # proto3 JSON leaves out a zero: the first candidate often has no index at all.
    index = candidate.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _shape((*where, "index"), "a non-negative integer")
    return index


# --- incremental reading -------------------------------------------------------------

_SSE_FIELDS: Final = frozenset({b"data", b"event", b"id", b"retry"})


class GeminiStreamReader:
    """One streamGenerateContent?alt=sse stream, event by event (see `StreamReader`).

    Channels are named by the candidate's own `index`: ("candidates", i, "text") and
    ("candidates", i, "thought") grow over the events; a function call arrives whole in
    one event, and each string leaf of its `args` is a channel of its own,
    ("candidates", i, "functionCall", k, *leaf), k counting the candidate's calls.

    The SDK reads a stream more loosely than SSE does (a line that is no SSE field is
    taken for JSON; JSON that Python's parser accepts and a strict one does not, such as
    NaN, goes through), so what this reader cannot read is an error, never a pass: data
    that is not a JSON object, a line that is no SSE field, a text it cannot attribute.
    """

    def __init__(self, model: str | None = None) -> None:
        self._model = model
        self._meta: dict[str, Any] = {}
        self._candidates: dict[int, None] = {}  # the candidate indices seen, in order
        self._counts: dict[tuple[int, str], int] = {}  # parts of a kind seen per candidate
        self._calls: list[dict[str, Any]] = []

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        _check_lines(event.raw)
        if not event.data:
            return []  # a comment or a keep-alive
        chunk = event.json
        if not isinstance(chunk, dict):
            raise BodyShapeError("stream event: data is not a JSON object")
        for key in ("modelVersion", "responseId"):
            if key not in self._meta and isinstance(chunk.get(key), str):
                self._meta[key] = chunk[key]
        key, candidates = _field(chunk, "candidates", ())
        if candidates is None:
            return []  # usage only, prompt feedback, or an error
        if not isinstance(candidates, list):
            raise _stream_shape((key,), "an array")
        out: list[StreamDelta] = []
        for position, raw in enumerate(candidates):
            where: Path = (key, position)
            if not isinstance(raw, dict):
                raise _stream_shape(where, "an object")
            try:
                index = _candidate_index(raw, where)
            except BodyShapeError as error:
                raise BodyShapeError(f"stream event: {error}") from None
            self._candidates.setdefault(index, None)
            content = raw.get("content")
            if content is None:
                continue
            if not isinstance(content, dict):
                raise _stream_shape((*where, "content"), "an object")
            parts_key, parts = _field(content, "parts", (*where, "content"))
            if parts is None:
                continue
            if not isinstance(parts, list):
                raise _stream_shape((*where, "content", parts_key), "an array")
            for j, part in enumerate(parts):
                self._part(out, part, index, (*where, "content", parts_key, j))
        return out

    def _part(self, out: list[StreamDelta], raw: Any, index: int, where: Path) -> None:
        if not isinstance(raw, dict):
            raise _stream_shape(where, "an object")
        try:
            parsed: list[Part] = []
            calls: list[ToolCall] = []
            _parse_part(raw, where, parsed, calls, [])
        except BodyShapeError as error:
            raise BodyShapeError(f"stream event: {error}") from None
        channels: dict[str, tuple[str | int, ...]] = {}  # per part field: the channel its leaves go under
        for part in parsed:
            if not part.text:
                continue
            field = str(part.path[len(where)])
            if field == "text":
                name = "thought" if raw.get("thought") is True else "text"
                channel: tuple[str | int, ...] = ("candidates", index, name)
            else:
                base = channels.get(field)
                if base is None:
                    base = channels[field] = self._next(index, field)
                # the leaf's path below the field, e.g. ("args", "to"), names it in the channel
                channel = (*base, *(item for item in part.path[len(where) + 1:] if isinstance(item, str | int)))
            out.append(StreamDelta(channel=channel, kind=part.kind, text=part.text, path=part.path))
        for call in calls:
            field = next(f for f in ("functionCall", "function_call") if f in raw)
            base = channels.get(field) or self._next(index, field)
            self._calls.append({"channel": base, "id": call.id or None, "name": call.name})

    def _next(self, index: int, field: str) -> tuple[str | int, ...]:
        """The channel for the next part of this kind (a call, some code) of a candidate."""
        name = field if field in _STRUCTS or field in _CODE else _json_name(field)
        count = self._counts.get((index, name), 0)
        self._counts[(index, name)] = count + 1
        return ("candidates", index, name, count)

    def render(self, event: StreamEvent, json: Any) -> bytes:
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def released(self, event: StreamEvent) -> None:
        """Nothing to track: a SAFETY finish for a candidate the client has not seen is harmless."""

    def blocked(self, message: str, respond: str | None) -> bytes:
        if respond == "error":
            return _event(_error(403, message, "firewall_blocked"))
        if respond not in (None, "refusal"):
            raise ValueError(f"respond must be None, 'refusal' or 'error', not {respond!r}")
        # What Gemini sends when its own filter stops a stream: a last chunk whose
        # candidates finish with SAFETY.
        return _event({
            "candidates": [{"finishReason": "SAFETY", "index": index} for index in (self._candidates or {0: None})],
            "modelVersion": self._meta.get("modelVersion") or self._model or "unknown",
            "responseId": self._meta.get("responseId") or _response_id(),
        })

    def failed(self, message: str) -> bytes:
        return _event(_error(502, message, "upstream_disconnected"))

    def tool_calls(self) -> list[dict[str, Any]]:
        return [dict(call) for call in self._calls]


def _json_name(proto_name: str) -> str:
    head, *rest = proto_name.split("_")
    return head + "".join(word.title() for word in rest)


def _check_lines(raw: bytes) -> None:
    for line in raw.removeprefix(b"\xef\xbb\xbf").splitlines():  # bytes split at \r, \n, \r\n only
        if line and not line.startswith(b":") and line.partition(b":")[0] not in _SSE_FIELDS:
            raise BodyShapeError(f"stream event: a line that is no SSE field ({line[:40]!r}), "
                                 "which the SDK would read as JSON")


def _stream_shape(where: Path, expected: str) -> BodyShapeError:
    return BodyShapeError(f"stream event: {format_path(where)}: expected {expected}")


# --- answers -------------------------------------------------------------------------


def _error(status: int, message: str, code: str | None) -> dict[str, Any]:
    """Google's error shape; the firewall's own reason, if any, as a google.rpc.ErrorInfo."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status) or ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
    }
    if code is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code.upper(),
                             "domain": _FIREWALL_DOMAIN}]
    return {"error": error}


def _event(body: dict[str, Any]) -> bytes:
    # The SDK reads a data line only with its space: `data: {...}`.
    return b"data: " + orjson.dumps(body) + b"\r\n\r\n"


def _response_id() -> str:
    return "fw-" + secrets.token_hex(12)
