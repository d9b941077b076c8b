"""Anthropic Messages (`POST /v1/messages`).

Every text a model reads or writes becomes a `Part`: the system prompt, text and
thinking blocks, each string leaf of a tool_use block's `input`, and tool results.
Images, documents and redacted thinking are not readable text and are skipped.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import orjson

from firewall.model import Message, Part, PartKind, Path, Rewrite, ToolCall
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
from firewall.protocols.base import BodyShapeError, ExactRoute, ParsedRequest, StreamDelta, StreamEvent

__all__ = ["AnthropicMessages"]

_MEMO: Final = MessageMemo()


def _parse_entry(raw: Any, i: int) -> Message:
    where: Path = ("messages", i)
    msg = _object(raw, where)
    return _parse_message(_required_str(msg, "role", where), msg.get("content"), (*where, "content"))

# https://docs.anthropic.com/en/api/errors; 504 is `timeout_error` there and in the SDK.
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Blocks whose `input` is the model's call to a tool (client-side or server-side).
_TOOL_USE_TYPES: Final = frozenset({"tool_use", "server_tool_use"})


class AnthropicMessages(ExactRoute):
    name = "anthropic_messages"
    provider = "anthropic"
    path = "/v1/messages"

    def parse_request(self, body: Any) -> ParsedRequest:
        obj = _object(body, ())
        messages = obj.get("messages")
        if not isinstance(messages, list):
            raise _shape(("messages",), "an array" if "messages" in obj else "an array (it is missing)")
        parsed: list[Message] = []
        system = obj.get("system")
        if system is not None:
            parsed.append(Message(role="system", parts=_system_parts(system)))
        for i, raw in enumerate(messages):
            parsed.append(_MEMO.parse(i, raw, lambda raw=raw, i=i: _parse_entry(raw, i)))
        model = _optional_str(obj, "model", ())
        stream = obj.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _shape(("stream",), "a boolean")
        return ParsedRequest(messages=tuple(parsed), model=model, stream=bool(stream))

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        obj = _object(body, ())
        content = obj.get("content")
        if not isinstance(content, list):
            raise _shape(("content",), "an array")
        role = obj.get("role", "assistant")
        if not isinstance(role, str):
            raise _shape(("role",), "a string")
        return (_parse_message(role, content, ("content",)),)

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        return _assemble_stream(data)

    def stream_reader(self) -> AnthropicStreamReader:
        return AnthropicStreamReader()

    def render_stream(self, body: dict[str, Any]) -> bytes:
        return _render_stream(body)

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        return _paths.apply_rewrites(body, rewrites)

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        # Anthropic errors carry no code field; the type is the machine-readable part.
        error_type = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        if model is None and isinstance(request, dict) and isinstance(request.get("model"), str):
            model = request["model"]
        return {
            "id": f"msg_fw_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": model or "unknown",
            "content": [{"type": "text", "text": text}],
            # `refusal` is in the SDK's StopReason since the API introduced it.
            "stop_reason": "refusal",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }


# --- parsing -------------------------------------------------------------------------


def _system_parts(system: Any) -> tuple[Part, ...]:
    if isinstance(system, str):
        return (Part(system, ("system",)),) if system else ()
    if not isinstance(system, list):
        raise _shape(("system",), "a string or an array of text blocks")
    parts: list[Part] = []
    for j, raw in enumerate(system):
        where: Path = ("system", j)
        block = _object(raw, where)
        if _block_type(block, where) == "text":
            parts.append(Part(_required_str(block, "text", where), (*where, "text")))
    return tuple(part for part in parts if part.text)


def _parse_message(role: str, content: Any, where: Path) -> Message:
    if isinstance(content, str):
        return Message(role=role, parts=(Part(content, where),) if content else ())
    if not isinstance(content, list):
        raise _shape(where, "a string or an array of content blocks")
    parts: list[Part] = []
    calls: list[ToolCall] = []
    result_ids: set[str] = set()
    for j, raw in enumerate(content):
        block_where: Path = (*where, j)
        block = _object(raw, block_where)
        block_type = _block_type(block, block_where)
        if block_type == "text":
            parts.append(Part(_required_str(block, "text", block_where), (*block_where, "text")))
        elif block_type == "thinking":
            parts.append(Part(_required_str(block, "thinking", block_where), (*block_where, "thinking")))
        elif block_type in _TOOL_USE_TYPES:
            tool_input = block.get("input")
            parts.extend(
                Part(text, path, PartKind.TOOL_ARGUMENTS)
                for text, path in string_leaves(tool_input, (*block_where, "input"))
            )
            calls.append(
                ToolCall(
                    id=_required_str(block, "id", block_where),
                    name=_required_str(block, "name", block_where),
                    arguments=tool_input,
                )
            )
        elif block_type == "tool_result":
            result_ids.add(_required_str(block, "tool_use_id", block_where))
            parts.extend(_tool_result_parts(block.get("content"), (*block_where, "content")))
        # image, document, redacted_thinking, search results...: nothing readable here
    return Message(
        role=role,
        parts=tuple(part for part in parts if part.text),
        tool_calls=tuple(calls),
        # One Message per body message; its tool_call_id is only meaningful when the
        # message answers a single call (several tool_results may share a message).
        tool_call_id=next(iter(result_ids)) if len(result_ids) == 1 else None,
    )


def _tool_result_parts(content: Any, where: Path) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Part(content, where, PartKind.TOOL_RESULT)]
    if not isinstance(content, list):
        raise _shape(where, "a string or an array of content blocks")
    parts: list[Part] = []
    for k, raw in enumerate(content):
        block_where: Path = (*where, k)
        block = _object(raw, block_where)
        if _block_type(block, block_where) == "text":
            text = _required_str(block, "text", block_where)
            parts.append(Part(text, (*block_where, "text"), PartKind.TOOL_RESULT))
    return parts


def _block_type(block: dict[str, Any], where: Path) -> str:
    return _required_str(block, "type", where)


# --- streaming -----------------------------------------------------------------------


def _assemble_stream(data: bytes) -> dict[str, Any]:
    """Rebuild the message the way the SDK's MessageStream does: message_start gives
    the skeleton, blocks grow by deltas, message_delta sets the stop reason and the
    (cumulative) usage."""
    message: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = []
    texts: dict[int, list[str]] = {}  # block index -> text or thinking fragments
    json_fragments: dict[int, list[str]] = {}
    for n, sse in enumerate(parse_events(data)):
        if sse.event == "ping" or not sse.data:
            continue
        event = _decode_event(sse.data, n)
        kind = event.get("type", sse.event)
        if kind == "error":
            return event
        if kind == "message_start":
            message = dict(_object(event.get("message"), ("message_start", "message")))
            blocks = list(message.get("content") or [])
            message["content"] = blocks
            continue
        if message is None:
            raise BodyShapeError(f"stream event {n}: {kind} before message_start")
        if kind == "content_block_start":
            index = _event_index(event, n, len(blocks) + 1)
            block = dict(_object(event.get("content_block"), (f"stream event {n}", "content_block")))
            if index == len(blocks):
                blocks.append(block)
            else:
                blocks[index] = block
        elif kind == "content_block_delta":
            index = _event_index(event, n, len(blocks))
            delta = _object(event.get("delta"), (f"stream event {n}", "delta"))
            _apply_delta(blocks[index], index, delta, texts, json_fragments)
        elif kind == "message_delta":
            delta = _object(event.get("delta"), (f"stream event {n}", "delta"))
            for key, value in delta.items():
                if key != "container" or value is not None:
                    message[key] = value
            usage = _object(event.get("usage") or {}, (f"stream event {n}", "usage"))
            message["usage"] = {
                **(message.get("usage") or {}),
                **{key: value for key, value in usage.items() if value is not None},
            }
        # content_block_stop, message_stop: nothing to add
    if message is None:
        raise BodyShapeError("stream: no message_start event")
    for index, fragments in texts.items():
        block = blocks[index]
        field = "thinking" if block.get("type") == "thinking" else "text"
        block[field] = block.get(field, "") + "".join(fragments)
    for index, fragments in json_fragments.items():
        raw = "".join(fragments)
        if raw:
            try:
                blocks[index]["input"] = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BodyShapeError(f"content[{index}].input: the streamed JSON does not decode ({exc})") from None
    return message


def _apply_delta(
    block: dict[str, Any],
    index: int,
    delta: dict[str, Any],
    texts: dict[int, list[str]],
    json_fragments: dict[int, list[str]],
) -> None:
    delta_type = delta.get("type")
    if delta_type == "text_delta" and isinstance(delta.get("text"), str):
        texts.setdefault(index, []).append(delta["text"])
    elif delta_type == "thinking_delta" and isinstance(delta.get("thinking"), str):
        texts.setdefault(index, []).append(delta["thinking"])
    elif delta_type == "input_json_delta" and isinstance(delta.get("partial_json"), str):
        json_fragments.setdefault(index, []).append(delta["partial_json"])
    elif delta_type == "signature_delta":
        block["signature"] = delta.get("signature")
    elif delta_type == "citations_delta":
        block["citations"] = [*(block.get("citations") or []), delta.get("citation")]


def _decode_event(data: str, n: int) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise BodyShapeError(f"stream event {n}: expected a JSON object")
    return event


def _event_index(event: dict[str, Any], n: int, limit: int) -> int:
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < limit:
        raise BodyShapeError(f"stream event {n}: index {index!r} does not name a content block")
    return index


def _render_stream(body: dict[str, Any]) -> bytes:
    out: list[bytes] = []

    def emit(event: dict[str, Any]) -> None:
        out.append(render_event(orjson.dumps(event).decode("utf-8"), event["type"]))

    usage = body.get("usage") or {"input_tokens": 0, "output_tokens": 0}
    start = {**body, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    start.pop("stop_details", None)
    emit({"type": "message_start", "message": start})
    emit({"type": "ping"})
    for index, block in enumerate(body.get("content") or ()):
        block_type = block.get("type")
        if block_type == "text":
            head = {**block, "text": ""}
            citations = head.pop("citations", None) or []
            emit({"type": "content_block_start", "index": index, "content_block": head})
            for citation in citations:
                delta = {"type": "citations_delta", "citation": citation}
                emit({"type": "content_block_delta", "index": index, "delta": delta})
            if block.get("text"):
                delta = {"type": "text_delta", "text": block["text"]}
                emit({"type": "content_block_delta", "index": index, "delta": delta})
        elif block_type == "thinking":
            emit({"type": "content_block_start", "index": index, "content_block": {**block, "thinking": "", "signature": ""}})
            if block.get("thinking"):
                delta = {"type": "thinking_delta", "thinking": block["thinking"]}
                emit({"type": "content_block_delta", "index": index, "delta": delta})
            if block.get("signature"):
                delta = {"type": "signature_delta", "signature": block["signature"]}
                emit({"type": "content_block_delta", "index": index, "delta": delta})
        elif block_type in _TOOL_USE_TYPES:
            emit({"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}})
            if block.get("input"):
                delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block["input"]).decode("utf-8")}
                emit({"type": "content_block_delta", "index": index, "delta": delta})
        else:  # redacted_thinking, server tool results...: they arrive whole
            emit({"type": "content_block_start", "index": index, "content_block": block})
        emit({"type": "content_block_stop", "index": index})
    delta: dict[str, Any] = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    for key in ("stop_details", "container"):
        if body.get(key) is not None:
            delta[key] = body[key]
    emit({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    emit({"type": "message_stop"})
    return b"".join(out)


# --- incremental reading -------------------------------------------------------------

# content_block_delta types that carry text: delta type -> (channel name, field, kind)
_DELTA_TEXT: Final = {
    "text_delta": ("text", "text", PartKind.TEXT),
    "thinking_delta": ("thinking", "thinking", PartKind.TEXT),
    "input_json_delta": ("input", "partial_json", PartKind.TOOL_ARGUMENTS),
}
# content_block_start blocks that may already hold text: block type -> field
_START_TEXT: Final = {"text": "text", "thinking": "thinking"}


class AnthropicStreamReader:
    """One Messages stream, event by event (see `StreamReader`).

    A channel is named by the content block's index and what grows in it: ("content",
    i, "text" | "thinking" | "input"). A text this reader cannot attribute raises
    BodyShapeError rather than pass uninspected.

    `blocked(respond="refusal")` closes the blocks the client has open. By default that
    is every block seen started and not stopped; a guard that holds events back and then
    drops them should call `released(event)` for each event it passes on, so that only
    blocks the client has actually seen are closed (the SDK fails on a
    content_block_stop for a block it never saw start).
    """

    def __init__(self) -> None:
        self._message_id: str | None = None
        self._model: str | None = None
        self._open: dict[int, None] = {}  # blocks seen started and not stopped, in order
        self._calls: dict[int, dict[str, Any]] = {}
        self._tracks_release = False
        self._sent_start = False  # message_start has reached the client
        self._sent_open: dict[int, None] = {}  # blocks the client has open

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        data = event.json
        if not isinstance(data, dict):
            return []  # a comment, a keep-alive, not JSON
        kind = data.get("type")
        if kind == "content_block_delta":
            index = _stream_index(data)
            delta = data.get("delta")
            if not isinstance(delta, dict):
                raise _stream_shape(("delta",), "an object")
            spec = _DELTA_TEXT.get(delta.get("type"))  # type: ignore[arg-type]
            if spec is None:
                return []  # signature_delta, citations_delta: no text of the model's own
            name, key, part_kind = spec
            return _delta(delta, key, ("content", index, name), part_kind, ("delta",))
        if kind == "content_block_start":
            index = _stream_index(data)
            block = data.get("content_block")
            if not isinstance(block, dict):
                raise _stream_shape(("content_block",), "an object")
            self._open[index] = None
            block_type = block.get("type")
            if block_type in _TOOL_USE_TYPES:
                self._calls[index] = {"channel": ("content", index, "input"), "id": block.get("id"), "name": block.get("name")}
            elif block_type in _START_TEXT:
                key = _START_TEXT[block_type]
                return _delta(block, key, ("content", index, key), PartKind.TEXT, ("content_block",))
        elif kind == "content_block_stop":
            self._open.pop(_stream_index(data), None)
        elif kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self._message_id = message["id"]
                if isinstance(message.get("model"), str):
                    self._model = message["model"]
        return []

    @staticmethod
    def terminal(event: StreamEvent) -> bool:
        return event.event == "message_stop"

    def released(self, event: StreamEvent) -> None:
        """The guard passed `event` on to the client (as it was or re-rendered)."""
        self._tracks_release = True
        data = event.json
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        index = data.get("index")
        if kind == "message_start":
            self._sent_start = True
        elif kind == "content_block_start" and isinstance(index, int):
            self._sent_open[index] = None
        elif kind == "content_block_stop" and isinstance(index, int):
            self._sent_open.pop(index, None)

    def render(self, event: StreamEvent, json: Any) -> bytes:
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def blocked(self, message: str, respond: str | None) -> bytes:
        if respond in (None, "error"):
            return _error_event(message, "permission_error")
        if respond != "refusal":
            raise ValueError(f"respond must be None, 'refusal' or 'error', not {respond!r}")
        out: list[bytes] = []

        def emit(event: dict[str, Any]) -> None:
            out.append(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")

        if self._tracks_release and not self._sent_start:
            # Blocked before the client saw the message begin: the SDK needs one.
            emit({"type": "message_start", "message": self._skeleton()})
        for index in self._sent_open if self._tracks_release else self._open:
            emit({"type": "content_block_stop", "index": index})
        emit({
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": 0},
        })
        emit({"type": "message_stop"})
        return b"".join(out)

    def failed(self, message: str) -> bytes:
        return _error_event(message, "api_error")

    def tool_calls(self) -> list[dict[str, Any]]:
        return [dict(call) for call in self._calls.values()]

    def _skeleton(self) -> dict[str, Any]:
        return {
            "id": self._message_id or f"msg_fw_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": self._model or "unknown",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }


def _delta(
    holder: dict[str, Any], key: str, channel: tuple[str | int, ...], kind: PartKind, where: Path
) -> list[StreamDelta]:
    text = holder.get(key)
    if text is None:
        return []
    if not isinstance(text, str):
        raise _stream_shape((*where, key), "a string")
    return [StreamDelta(channel=channel, kind=kind, text=text, path=(*where, key))] if text else []


def _stream_index(data: dict[str, Any]) -> int:
    index = data.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _stream_shape(("index",), "a content block index")
    return index


def _stream_shape(where: Path, expected: str) -> BodyShapeError:
    return BodyShapeError(f"stream event: {format_path(where)}: expected {expected}")


def _error_event(message: str, error_type: str) -> bytes:
    # The SDK raises on an `error` event, whatever came before it.
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
