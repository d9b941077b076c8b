"""OpenAI Chat Completions (`POST /v1/chat/completions`).

Every text a model reads or writes becomes a `Part`: message content (a string or an
array of content parts), refusals, tool-call arguments (a JSON document inside a string,
one part per string leaf) and tool results. Images, audio and files are not text and
are skipped.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import orjson

from firewall.model import EMBEDDED_JSON, Message, Part, PartKind, Path, Rewrite, ToolCall
from firewall.protocols import _paths
from firewall.protocols._paths import (
    decode_embedded,
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

__all__ = ["OpenAIChat"]

_MEMO: Final = MessageMemo()

_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_TOOL_ROLES: Final = frozenset({"tool", "function"})  # "function": the legacy tool-result role


class OpenAIChat(ExactRoute):
    name = "openai_chat"
    provider = "openai"
    path = "/v1/chat/completions"

    def parse_request(self, body: Any) -> ParsedRequest:
        obj = _object(body, ())
        messages = obj.get("messages")
        if not isinstance(messages, list):
            raise _shape(("messages",), "an array" if "messages" in obj else "an array (it is missing)")
        parsed = tuple(
            _MEMO.parse(i, m, lambda m=m, i=i: _parse_message(m, ("messages", i), default_role=None))
            for i, m in enumerate(messages)
        )
        return ParsedRequest(messages=parsed, model=_optional_str(obj, "model", ()), stream=_stream_flag(obj))

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        obj = _object(body, ())
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise _shape(("choices",), "an array")
        messages: list[Message] = []
        for c, choice in enumerate(choices):
            where: Path = ("choices", c)
            choice_obj = _object(choice, where)
            messages.append(_parse_message(choice_obj.get("message"), (*where, "message"), default_role="assistant"))
        return tuple(messages)

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        return _StreamAssembler().assemble(data)

    def stream_reader(self) -> OpenAIStreamReader:
        return OpenAIStreamReader()

    def render_stream(self, body: dict[str, Any]) -> bytes:
        return _render_stream(body)

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        return _paths.apply_rewrites(body, rewrites)

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        error_type = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        if model is None and isinstance(request, dict) and isinstance(request.get("model"), str):
            model = request["model"]
        return {
            "id": f"chatcmpl-fw-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or "unknown",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "content_filter",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


# --- parsing -------------------------------------------------------------------------


def _parse_message(value: Any, where: Path, *, default_role: str | None) -> Message:
    msg = _object(value, where)
    role = msg.get("role", default_role)
    if not isinstance(role, str):
        raise _shape((*where, "role"), "a string")
    kind = PartKind.TOOL_RESULT if role in _TOOL_ROLES else PartKind.TEXT
    parts = _content_parts(msg.get("content"), (*where, "content"), kind)
    refusal = _optional_str(msg, "refusal", where)
    if refusal is not None:
        parts.append(Part(refusal, (*where, "refusal")))

    tool_calls: list[ToolCall] = []
    raw_calls = msg.get("tool_calls")
    if raw_calls is not None:
        if not isinstance(raw_calls, list):
            raise _shape((*where, "tool_calls"), "an array")
        for k, raw_call in enumerate(raw_calls):
            _tool_call(raw_call, (*where, "tool_calls", k), parts, tool_calls)
    if msg.get("function_call") is not None:
        call_where: Path = (*where, "function_call")
        name, arguments = _function(msg["function_call"], call_where, parts)
        tool_calls.append(ToolCall(id="", name=name, arguments=arguments))

    return Message(
        role=role,
        parts=tuple(part for part in parts if part.text),
        tool_calls=tuple(tool_calls),
        tool_call_id=_optional_str(msg, "tool_call_id", where),
        name=_optional_str(msg, "name", where),
    )


def _content_parts(content: Any, where: Path, kind: PartKind) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Part(content, where, kind)]
    if not isinstance(content, list):
        raise _shape(where, "a string, an array of content parts or null")
    parts: list[Part] = []
    for j, item in enumerate(content):
        item_where: Path = (*where, j)
        obj = _object(item, item_where)
        part_type = obj.get("type")
        if not isinstance(part_type, str):
            raise _shape((*item_where, "type"), "a string")
        if part_type in ("text", "refusal"):  # the field is named after the type
            parts.append(Part(_required_str(obj, part_type, item_where), (*item_where, part_type), kind))
        # image_url, input_audio, file: not text, nothing to inspect
    return parts


def _tool_call(value: Any, where: Path, parts: list[Part], calls: list[ToolCall]) -> None:
    call = _object(value, where)
    call_id = _optional_str(call, "id", where) or ""
    call_type = call.get("type", "function")
    if call_type == "function":
        name, arguments = _function(call.get("function"), (*where, "function"), parts)
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
    elif call_type == "custom":  # free-form input, not JSON
        custom_where: Path = (*where, "custom")
        custom = _object(call.get("custom"), custom_where)
        text = _required_str(custom, "input", custom_where)
        parts.append(Part(text, (*custom_where, "input"), PartKind.TOOL_ARGUMENTS))
        calls.append(ToolCall(id=call_id, name=_required_str(custom, "name", custom_where), arguments=text))
    elif not isinstance(call_type, str):
        raise _shape((*where, "type"), "a string")


def _function(value: Any, where: Path, parts: list[Part]) -> tuple[str, Any]:
    """The name and decoded arguments of a `function` object; its parts go to `parts`."""
    function = _object(value, where)
    name = _required_str(function, "name", where)
    raw = _optional_str(function, "arguments", where) or ""
    path: Path = (*where, "arguments")
    try:
        decoded = decode_embedded(raw)
    except ValueError:
        # Not JSON (a model can emit anything): inspect the string as it is.
        parts.append(Part(raw, path, PartKind.TOOL_ARGUMENTS))
        return name, raw
    parts.extend(
        Part(text, leaf_path, PartKind.TOOL_ARGUMENTS)
        for text, leaf_path in string_leaves(decoded, (*path, EMBEDDED_JSON))
    )
    return name, decoded


def _stream_flag(obj: dict[str, Any]) -> bool:
    stream = obj.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise _shape(("stream",), "a boolean")
    return stream


# --- streaming -----------------------------------------------------------------------

_CARRIED_FIELDS: Final = ("id", "created", "model", "system_fingerprint", "service_tier")


class _ChoiceState:
    """One choice being reassembled. Text arrives in fragments and is joined once at
    the end: `+=` per chunk would be quadratic in the length of a long answer."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = "assistant"
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.arguments: dict[int, list[str]] = {}
        self.function_call: dict[str, Any] | None = None
        self.function_arguments: list[str] = []
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any] | None] | None = None
        self.annotations: list[Any] | None = None

    def feed(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        self._text("content", delta)
        self._text("refusal", delta)
        for call in delta.get("tool_calls") or ():
            self._tool_call(call)
        if isinstance(delta.get("function_call"), dict):
            fragment = delta["function_call"]
            if self.function_call is None:
                self.function_call = {"name": "", "arguments": ""}
            if fragment.get("name"):
                self.function_call["name"] = fragment["name"]
            if isinstance(fragment.get("arguments"), str):
                self.function_arguments.append(fragment["arguments"])
        if isinstance(delta.get("annotations"), list):
            self.annotations = (self.annotations or []) + delta["annotations"]
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            if self.logprobs is None:
                self.logprobs = {}
            for key, tokens in logprobs.items():
                if isinstance(tokens, list):
                    self.logprobs[key] = (self.logprobs.get(key) or []) + tokens
                else:
                    self.logprobs.setdefault(key, None)

    def _text(self, key: str, delta: dict[str, Any]) -> None:
        fragment = delta.get(key)
        if isinstance(fragment, str):
            buffer = getattr(self, key)
            if buffer is None:
                setattr(self, key, [fragment])
            else:
                buffer.append(fragment)

    def _tool_call(self, fragment: Any) -> None:
        if not isinstance(fragment, dict) or not isinstance(fragment.get("index"), int):
            raise BodyShapeError("stream: a tool_calls delta without an integer index")
        index = fragment["index"]
        call = self.tool_calls.get(index)
        if call is None:
            call = self.tool_calls[index] = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            self.arguments[index] = []
        # id, type and name arrive once, in the call's first fragment.
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
        function = fragment.get("function")
        if isinstance(function, dict):
            if function.get("name"):
                call["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                self.arguments[index].append(function["arguments"])

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": None if self.content is None else "".join(self.content),
            "refusal": None if self.refusal is None else "".join(self.refusal),
        }
        if self.tool_calls:
            calls = []
            for index in sorted(self.tool_calls):
                call = self.tool_calls[index]
                call["function"]["arguments"] = "".join(self.arguments[index])
                calls.append(call)
            message["tool_calls"] = calls
        if self.function_call is not None:
            message["function_call"] = {**self.function_call, "arguments": "".join(self.function_arguments)}
        if self.annotations is not None:
            message["annotations"] = self.annotations
        return {
            "index": self.index,
            "message": message,
            "logprobs": self.logprobs,
            "finish_reason": self.finish_reason,
        }


class _StreamAssembler:
    def assemble(self, data: bytes) -> dict[str, Any]:
        body: dict[str, Any] = {"object": "chat.completion"}
        choices: dict[int, _ChoiceState] = {}
        usage: Any = None
        for n, event in enumerate(parse_events(data)):
            if event.data.startswith("[DONE]"):
                break
            chunk = _decode_chunk(event.data, n)
            if chunk.get("error"):
                # The stream turned into an error; this is the body the client sees.
                return {"error": chunk["error"]}
            for key in _CARRIED_FIELDS:
                if chunk.get(key) is not None and key not in body:
                    body[key] = chunk[key]
            if chunk.get("usage") is not None:
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
                    raise BodyShapeError(f"stream event {n}: a choice without an integer index")
                state = choices.get(choice["index"])
                if state is None:
                    state = choices[choice["index"]] = _ChoiceState(choice["index"])
                state.feed(choice)
        body["choices"] = [choices[index].result() for index in sorted(choices)]
        if usage is not None:
            body["usage"] = usage
        return body


def _decode_chunk(data: str, n: int) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
    if not isinstance(chunk, dict):
        raise BodyShapeError(f"stream event {n}: expected a JSON object")
    return chunk


def _render_stream(body: dict[str, Any]) -> bytes:
    base: dict[str, Any] = {
        "id": body.get("id") or f"chatcmpl-fw-{secrets.token_hex(12)}",
        "object": "chat.completion.chunk",
        "created": body.get("created") if isinstance(body.get("created"), int) else int(time.time()),
        "model": body.get("model") or "unknown",
    }
    for key in ("system_fingerprint", "service_tier"):
        if body.get(key) is not None:
            base[key] = body[key]

    out: list[bytes] = []

    def emit(index: int, delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        out.append(render_event(orjson.dumps({**base, "choices": [choice]}).decode("utf-8")))

    for position, choice in enumerate(body.get("choices") or ()):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        # The first chunk names the role and carries no text, as the API's does.
        emit(index, {"role": message.get("role", "assistant"), "content": "", "refusal": None})
        if message.get("content"):
            emit(index, {"content": message["content"]}, logprobs=choice.get("logprobs"))
        if message.get("refusal"):
            emit(index, {"refusal": message["refusal"]})
        if message.get("annotations"):
            emit(index, {"annotations": message["annotations"]})
        for k, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            head = {"index": k, "id": call.get("id"), "type": call.get("type", "function")}
            if head["type"] == "function":
                emit(index, {"tool_calls": [{**head, "function": {"name": function.get("name"), "arguments": ""}}]})
                if function.get("arguments"):
                    emit(index, {"tool_calls": [{"index": k, "function": {"arguments": function["arguments"]}}]})
            else:
                emit(index, {"tool_calls": [{**call, "index": k}]})
        if message.get("function_call"):
            emit(index, {"function_call": message["function_call"]})
        emit(index, {}, finish_reason=choice.get("finish_reason") or "stop")

    if body.get("usage") is not None:
        # As with stream_options.include_usage: a last chunk with no choices.
        out.append(render_event(orjson.dumps({**base, "choices": [], "usage": body["usage"]}).decode("utf-8")))
    out.append(render_event("[DONE]"))
    return b"".join(out)


# --- incremental reading -------------------------------------------------------------

_CHUNK_META: Final = ("id", "created", "model", "system_fingerprint")
_DONE: Final = b"data: [DONE]\n\n"


class OpenAIStreamReader:
    """One chat.completion.chunk stream, event by event (see `StreamReader`).

    A channel is named by the choice's own `index` (the position in one chunk's
    `choices` array may differ from chunk to chunk) and a tool call by its `index`;
    the path is where the text sits in this event. A text this reader cannot attribute
    raises BodyShapeError rather than pass uninspected.
    """

    def __init__(self) -> None:
        self._meta: dict[str, Any] = {}
        self._choices: dict[int, None] = {}  # the choice indices seen, in order
        self._calls: dict[tuple[str | int, ...], dict[str, Any]] = {}  # by channel

    @staticmethod
    def terminal(event: StreamEvent) -> bool:
        """`[DONE]`: the SDK stops reading there, so nothing after it would be seen."""
        return event.data == "[DONE]"

    def released(self, event: StreamEvent) -> None:
        """Nothing to track: a finish chunk for a choice the client has not seen is harmless."""

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        chunk = event.json
        if not isinstance(chunk, dict):
            return []  # [DONE], a comment, a keep-alive
        for key in _CHUNK_META:
            if key not in self._meta and chunk.get(key) is not None:
                self._meta[key] = chunk[key]
        choices = chunk.get("choices")
        if choices is None:
            return []  # an error event, or a usage-only chunk without the key
        if not isinstance(choices, list):
            raise _stream_shape(("choices",), "an array")
        out: list[StreamDelta] = []
        for k, choice in enumerate(choices):
            where: Path = ("choices", k)
            if not isinstance(choice, dict):
                raise _stream_shape(where, "an object")
            index = choice.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                raise _stream_shape((*where, "index"), "an integer")
            self._choices.setdefault(index, None)
            delta = choice.get("delta")
            if delta is None:
                continue
            if not isinstance(delta, dict):
                raise _stream_shape((*where, "delta"), "an object")
            for key in ("content", "refusal"):
                _text_delta(out, delta, key, ("choices", index, key), PartKind.TEXT, (*where, "delta"))
            calls = delta.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise _stream_shape((*where, "delta", "tool_calls"), "an array")
                for j, call in enumerate(calls):
                    self._tool_call(out, call, index, (*where, "delta", "tool_calls", j))
            legacy = delta.get("function_call")
            if legacy is not None:
                legacy_where: Path = (*where, "delta", "function_call")
                if not isinstance(legacy, dict):
                    raise _stream_shape(legacy_where, "an object")
                channel = ("choices", index, "function_call", "arguments")
                self._remember_call(channel, None, legacy.get("name"))
                _text_delta(out, legacy, "arguments", channel, PartKind.TOOL_ARGUMENTS, legacy_where)
        return out

    def _tool_call(self, out: list[StreamDelta], call: Any, index: int, where: Path) -> None:
        if not isinstance(call, dict):
            raise _stream_shape(where, "an object")
        position = call.get("index")
        if not isinstance(position, int) or isinstance(position, bool):
            raise _stream_shape((*where, "index"), "an integer")
        channel = ("choices", index, "tool_calls", position, "arguments")
        function = call.get("function")
        if function is not None and not isinstance(function, dict):
            raise _stream_shape((*where, "function"), "an object")
        # id and name arrive once, in the call's first fragment.
        self._remember_call(channel, call.get("id"), function.get("name") if function else None)
        if function:
            _text_delta(out, function, "arguments", channel, PartKind.TOOL_ARGUMENTS, (*where, "function"))

    def _remember_call(self, channel: tuple[str | int, ...], call_id: Any, name: Any) -> None:
        call = self._calls.get(channel)
        if call is None:
            call = self._calls[channel] = {"channel": channel, "id": None, "name": None}
        if isinstance(call_id, str) and call_id:
            call["id"] = call_id
        if isinstance(name, str) and name:
            call["name"] = name

    def render(self, event: StreamEvent, json: Any) -> bytes:
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def blocked(self, message: str, respond: str | None) -> bytes:
        if respond == "error":
            return _error_event(message, "permission_error", "firewall_blocked")
        if respond not in (None, "refusal"):
            raise ValueError(f"respond must be None, 'refusal' or 'error', not {respond!r}")
        head: dict[str, Any] = {
            "id": self._meta.get("id") or f"chatcmpl-fw-{secrets.token_hex(12)}",
            "object": "chat.completion.chunk",
            "created": self._meta.get("created") if isinstance(self._meta.get("created"), int) else int(time.time()),
            "model": self._meta.get("model") or "unknown",
        }
        if self._meta.get("system_fingerprint") is not None:
            head["system_fingerprint"] = self._meta["system_fingerprint"]
        out = [
            b"data: " + orjson.dumps({**head, "choices": [{"index": i, "delta": {}, "finish_reason": "content_filter"}]})
            + b"\n\n"
            for i in (self._choices or {0: None})
        ]
        out.append(_DONE)
        return b"".join(out)

    def failed(self, message: str) -> bytes:
        return _error_event(message, "api_error", "upstream_disconnected")

    def tool_calls(self) -> list[dict[str, Any]]:
        return [dict(call) for call in self._calls.values()]


def _text_delta(
    out: list[StreamDelta],
    holder: dict[str, Any],
    key: str,
    channel: tuple[str | int, ...],
    kind: PartKind,
    where: Path,
) -> None:
    text = holder.get(key)
    if text is None:
        return
    if not isinstance(text, str):
        raise _stream_shape((*where, key), "a string or null")
    if text:
        out.append(StreamDelta(channel=channel, kind=kind, text=text, path=(*where, key)))


def _stream_shape(where: Path, expected: str) -> BodyShapeError:
    return BodyShapeError(f"stream event: {format_path(where)}: expected {expected}")


def _error_event(message: str, error_type: str, code: str) -> bytes:
    # The SDK raises APIError on any event whose data has an "error" key.
    error = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return b"data: " + orjson.dumps(error) + b"\n\n"
