"""OpenAI Responses API (`POST /v1/responses`).

A request's texts: `instructions` (a system message), `input` (a string, one user
message, or a list of items) and the string values of `prompt.variables`. A response's:
its `output` items. The items are the same in both directions:

- `message`: a string content or content parts; `input_text`, `output_text` and
  `refusal` are text, images, files and audio are not and pass uninspected;
- `function_call` (arguments: a JSON document in a string, one part per string leaf),
  `custom_tool_call` (free-form input), and their `*_output` items (tool results);
- `reasoning`: summaries and reasoning text (encrypted reasoning is not readable);
- `item_reference` carries no text (it names an item stored upstream);
- any other item (the hosted tools: `mcp_call`, `mcp_list_tools`, `file_search_call`,
  `shell_call_output`... and whatever comes next) is read generically: every string in
  it except ids, enums and blobs, what came back from a tool (`output`, `results`,
  `*_output` items, MCP tool lists: where injected instructions enter) as tool results,
  the rest as tool arguments. An item type this module does not know is inspected, not
  waved through.

`previous_response_id` and `conversation` make a request continue earlier turns that are
not in its body: `continues` and `turn_ids` let the listener put them back in front
(firewall/agents/turns.py).

Streams are read by `ResponsesStreamReader`; `parse_stream` reassembles a buffered one
with the same reader, so both modes see the same texts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from firewall.model import EMBEDDED_JSON, Message, Part, PartKind, Path, Rewrite, ToolCall
from firewall.protocols import _paths
from firewall.protocols._memo import MessageMemo
from firewall.protocols._paths import (
    decode_embedded,
    expect_object as _object,
    expect_str as _required_str,
    format_path,
    get_at,
    optional_str as _optional_str,
    set_at,
    shape_error as _shape,
    string_leaves,
)
from firewall.protocols._sse import parse_events, render_event
from firewall.protocols.base import BodyShapeError, ExactRoute, ParsedRequest, StreamDelta, StreamEvent
from firewall.protocols.openai_chat import OpenAIChat

__all__ = ["OpenAIResponses", "ResponsesStreamReader"]

_MEMO: Final = MessageMemo()
_CHAT: Final = OpenAIChat()  # the same error body shape for every OpenAI route

_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_NOT_TEXT_PARTS: Final = frozenset({"input_image", "input_file", "input_audio"})
_MESSAGE_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
# Items with nothing readable in them: base64 images.
_OPAQUE_ITEMS: Final = frozenset({"image_generation_call"})
# Keys whose strings are ids, enums, references or blobs, never text a model reads.
_SKIP_KEYS: Final = frozenset({
    "type", "id", "call_id", "item_id", "status", "role", "name", "encrypted_content", "approval_request_id",
    "server_label", "container_id", "file_id", "image_url", "file_data", "file_url", "caller_id", "created_by",
    "partial_image_b64",
})
# In a generic item, what came back from the tool rather than what was sent to it.
_RESULT_KEYS: Final = frozenset({"output", "outputs", "results", "error", "logs"})
_CALL_ITEMS: Final = {"function_call": "arguments", "custom_tool_call": "input", "mcp_call": "arguments",
                      "mcp_approval_request": "arguments"}


class OpenAIResponses(ExactRoute):
    name = "openai_responses"
    provider = "openai"
    path = "/v1/responses"

    def parse_request(self, body: Any) -> ParsedRequest:
        obj = _object(body, ())
        messages: list[Message] = []
        instructions = obj.get("instructions")
        if instructions is not None:
            if not isinstance(instructions, str):
                raise _shape(("instructions",), "a string or null")
            messages.append(Message("system", (Part(instructions, ("instructions",)),)))
        messages.extend(_prompt_variables(obj.get("prompt")))
        given = obj.get("input")
        if isinstance(given, str):
            messages.append(Message("user", (Part(given, ("input",)),)))
        elif isinstance(given, list):
            for i, item in enumerate(given):
                messages.extend(_input_item(i, item))
        elif given is not None:
            raise _shape(("input",), "a string or an array of input items")
        _optional_str(obj, "previous_response_id", ())
        _conversation_id(obj.get("conversation"), ("conversation",))
        return ParsedRequest(messages=tuple(m for m in messages if m.parts or m.tool_calls),
                             model=_optional_str(obj, "model", ()), stream=_stream_flag(obj))

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        obj = _object(body, ())
        output = obj.get("output")
        if not isinstance(output, list):
            raise _shape(("output",), "an array")
        messages: list[Message] = []
        for i, item in enumerate(output):
            messages.extend(_item(item, ("output", i), default_role="assistant"))
        return tuple(m for m in messages if m.parts or m.tool_calls)

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        reader = ResponsesStreamReader()
        for n, sse in enumerate(parse_events(data)):
            if not sse.data or sse.data == "[DONE]":
                continue
            try:
                decoded = orjson.loads(sse.data)
            except orjson.JSONDecodeError as exc:
                raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
            event = StreamEvent(raw=b"", event=sse.event, data=sse.data, json=decoded)
            reader.deltas(event)
            reader.released(event)
        return reader.body()

    def stream_reader(self) -> ResponsesStreamReader:
        return ResponsesStreamReader()

    def render_stream(self, body: dict[str, Any]) -> bytes:
        return b"".join(render_event(orjson.dumps(data).decode("utf-8"), data["type"]) for data in _events_for(body))

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        out = _paths.apply_rewrites(body, rewrites)
        for rewrite in rewrites:
            out = _drop_logprobs(out, rewrite.path)
        return out

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        return _CHAT.error_body(status, message, code=code)

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        """A completed response whose one message is a refusal part, as the model's own
        refusals are. A response the upstream produced keeps its id, so that a client can
        still continue after it with `previous_response_id`."""
        given = request if isinstance(request, dict) else {}
        upstream = given.get("object") == "response" and isinstance(given.get("id"), str)
        if model is None and isinstance(given.get("model"), str):
            model = given["model"]
        response = _response_base(given["id"] if upstream else None, model)
        if not upstream and isinstance(given.get("previous_response_id"), str):
            response["previous_response_id"] = given["previous_response_id"]
        response["status"] = "completed"
        response["output"] = [_refusal_item(text)]
        return response

    # -- turns that are not in the body (firewall/agents/turns.py) -----------------------

    def continues(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return None
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            return previous
        return _conversation_id(body.get("conversation"), ("conversation",))

    def turn_ids(self, body: Any) -> tuple[str, ...]:
        return _turn_ids(body)

    def resumed(self, body: Any, turn_id: str | None) -> Any:
        out = dict(body)
        if turn_id is None:
            out.pop("previous_response_id", None)
        else:
            out["previous_response_id"] = turn_id
        return out


# --- reading items -------------------------------------------------------------------


def _input_item(index: int, item: Any) -> tuple[Message, ...]:
    where: Path = ("input", index)
    if isinstance(item, dict) and _item_type(item, where) == "message":
        # History is resent on every turn by clients that do not store it upstream.
        return (_MEMO.parse(index, item, lambda: _message(item, where, default_role=None)),)
    return _item(item, where, default_role=None)


def _item(value: Any, where: Path, *, default_role: str | None) -> tuple[Message, ...]:
    item = _object(value, where)
    kind = _item_type(item, where)
    if kind == "message":
        return (_message(item, where, default_role=default_role),)
    if kind == "function_call":
        name = _required_str(item, "name", where)
        decoded, parts = _json_arguments(_required_str(item, "arguments", where), (*where, "arguments"))
        call = ToolCall(_optional_str(item, "call_id", where) or "", name, decoded)
        return (Message("assistant", tuple(parts), (call,)),)
    if kind == "custom_tool_call":
        text = _required_str(item, "input", where)
        call = ToolCall(_optional_str(item, "call_id", where) or "", _required_str(item, "name", where), text)
        return (Message("assistant", (Part(text, (*where, "input"), PartKind.TOOL_ARGUMENTS),), (call,)),)
    if kind in ("function_call_output", "custom_tool_call_output"):
        call_id = _required_str(item, "call_id", where)
        parts = _content(item.get("output"), (*where, "output"), PartKind.TOOL_RESULT, required=True)
        return (Message("tool", tuple(parts), tool_call_id=call_id),)
    if kind == "reasoning":
        parts = _text_list(item, "summary", where) + _text_list(item, "content", where)
        return (Message("assistant", tuple(parts)),)
    if kind in _OPAQUE_ITEMS:
        return ()
    return _generic_item(item, where, kind)


def _item_type(item: dict[str, Any], where: Path) -> str:
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"  # an "easy" input message: {"role", "content"} without a type
    if not isinstance(kind, str):
        raise _shape((*where, "type"), "a string")
    return kind


def _message(item: dict[str, Any], where: Path, *, default_role: str | None) -> Message:
    role = item.get("role", default_role)
    if role not in _MESSAGE_ROLES:
        raise _shape((*where, "role"), "one of user, assistant, system, developer")
    parts = _content(item.get("content"), (*where, "content"), PartKind.TEXT, required=True)
    return Message(role, tuple(part for part in parts if part.text))


def _content(content: Any, where: Path, kind: PartKind, *, required: bool) -> list[Part]:
    """A string, or an array of content parts (text parts read, images and files not)."""
    if isinstance(content, str):
        return [Part(content, where, kind)]
    if content is None and not required:
        return []
    if not isinstance(content, list):
        raise _shape(where, "a string or an array of content parts")
    parts: list[Part] = []
    for j, value in enumerate(content):
        part_where: Path = (*where, j)
        part = _object(value, part_where)
        part_type = part.get("type")
        if not isinstance(part_type, str):
            raise _shape((*part_where, "type"), "a string")
        if part_type in _TEXT_PARTS:
            parts.append(Part(_required_str(part, "text", part_where), (*part_where, "text"), kind))
        elif part_type == "refusal":
            parts.append(Part(_required_str(part, "refusal", part_where), (*part_where, "refusal"), kind))
        elif part_type not in _NOT_TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append(Part(part["text"], (*part_where, "text"), kind))  # a part type yet to come
    return parts


def _text_list(item: dict[str, Any], key: str, where: Path) -> list[Part]:
    entries = item.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _shape((*where, key), "an array")
    parts = []
    for j, entry in enumerate(entries):
        entry_where: Path = (*where, key, j)
        parts.append(Part(_required_str(_object(entry, entry_where), "text", entry_where), (*entry_where, "text")))
    return parts


def _json_arguments(raw: str, path: Path) -> tuple[Any, list[Part]]:
    try:
        decoded = decode_embedded(raw)
    except ValueError:
        # Not JSON (a model can emit anything): inspect the string as it is.
        return raw, [Part(raw, path, PartKind.TOOL_ARGUMENTS)]
    leaves = string_leaves(decoded, (*path, EMBEDDED_JSON))
    return decoded, [Part(text, leaf, PartKind.TOOL_ARGUMENTS) for text, leaf in leaves if text]


def _generic_item(item: dict[str, Any], where: Path, kind: str) -> tuple[Message, ...]:
    all_results = kind.endswith("_output") or kind == "mcp_list_tools"
    sent: list[Part] = []
    returned: list[Part] = []
    decoded: Any = None
    for key, value in item.items():
        if key in _SKIP_KEYS:
            continue
        if all_results or key in _RESULT_KEYS:
            returned.extend(Part(text, path, PartKind.TOOL_RESULT) for path, text in _leaves(value, (*where, key)))
        elif key == "arguments" and isinstance(value, str):
            decoded, parts = _json_arguments(value, (*where, key))
            sent.extend(parts)
        else:
            sent.extend(Part(text, path, PartKind.TOOL_ARGUMENTS) for path, text in _leaves(value, (*where, key)))
    call_id = item.get("call_id") if isinstance(item.get("call_id"), str) else item.get("id")
    name = item.get("name")
    messages = []
    if sent or isinstance(name, str):
        calls = (ToolCall(call_id if isinstance(call_id, str) else "", name, decoded),) if isinstance(name, str) else ()
        messages.append(Message("assistant", tuple(sent), calls))
    if returned:
        messages.append(Message("tool", tuple(returned), tool_call_id=call_id if isinstance(call_id, str) else None))
    return tuple(messages)


def _leaves(value: Any, where: Path) -> Iterator[tuple[Path, str]]:
    """Every non-empty string inside `value` with its path, except under `_SKIP_KEYS`."""
    stack: list[tuple[Any, Path]] = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if node:
                yield path, node
        elif isinstance(node, dict):
            stack.extend((child, (*path, key)) for key, child in reversed(node.items()) if key not in _SKIP_KEYS)
        elif isinstance(node, list):
            stack.extend((node[i], (*path, i)) for i in range(len(node) - 1, -1, -1))


def _prompt_variables(prompt: Any) -> list[Message]:
    """A stored prompt's variables are text the model reads (the template is upstream)."""
    if prompt is None:
        return []
    variables = _object(prompt, ("prompt",)).get("variables")
    if variables is None:
        return []
    where: Path = ("prompt", "variables")
    parts: list[Part] = []
    for name, value in _object(variables, where).items():
        at: Path = (*where, name)
        if isinstance(value, str):
            parts.append(Part(value, at))
            continue
        variable_type = _object(value, at).get("type")
        if variable_type in _TEXT_PARTS:
            parts.append(Part(_required_str(value, "text", at), (*at, "text")))
        elif variable_type not in _NOT_TEXT_PARTS:
            raise _shape((*at, "type"), "input_text, input_image or input_file")
    return [Message("user", tuple(parts))] if parts else []


def _conversation_id(value: Any, where: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    conversation = _object(value, where)
    return _required_str(conversation, "id", where)


def _stream_flag(obj: dict[str, Any]) -> bool:
    stream = obj.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise _shape(("stream",), "a boolean")
    return stream


def _turn_ids(response: Any) -> tuple[str, ...]:
    if not isinstance(response, dict):
        return ()
    ids = [response["id"]] if isinstance(response.get("id"), str) else []
    conversation = response.get("conversation")
    if isinstance(conversation, dict) and isinstance(conversation.get("id"), str):
        ids.append(conversation["id"])
    elif isinstance(conversation, str):
        ids.append(conversation)
    return tuple(ids)


def _drop_logprobs(body: Any, path: Path) -> Any:
    """A rewritten text's log probabilities list the original tokens: they go too. (Not
    inside tool arguments: a `logprobs` key there is the tool's own.)"""
    if EMBEDDED_JSON in path:
        return body
    try:
        parent = get_at(body, path[:-1])
    except LookupError:
        return body
    if isinstance(parent, dict) and parent.get("logprobs"):
        return set_at(body, (*path[:-1], "logprobs"), [])
    return body


# --- answers the firewall makes ------------------------------------------------------


def _response_base(response_id: str | None, model: str | None) -> dict[str, Any]:
    return {
        "id": response_id or f"resp_fw_{secrets.token_hex(12)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model or "unknown",
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0},
    }


def _refusal_item(text: str) -> dict[str, Any]:
    return {"id": f"msg_fw_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "refusal", "refusal": text}]}


_TERMINAL: Final = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def _events_for(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A response body as the stream of events the API would have sent for it (without
    `sequence_number`s, added by the caller)."""
    counter = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(counter), **fields}

    opening = {**body, "status": "in_progress", "output": [], "completed_at": None}
    yield event("response.created", response=opening)
    yield event("response.in_progress", response=opening)
    for i, item in enumerate(body.get("output") or ()):
        yield from _item_events(event, i, item)
    terminal = _TERMINAL.get(body.get("status") or "completed", "response.completed")
    yield event(terminal, response=body)


def _item_events(event: Any, i: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = item.get("type")
    item_id = item.get("id") or ""
    at = {"item_id": item_id, "output_index": i}
    if kind == "message" and isinstance(item.get("content"), list):
        yield event("response.output_item.added", output_index=i, item={**item, "status": "in_progress", "content": []})
        for j, part in enumerate(item["content"]):
            key = "refusal" if part.get("type") == "refusal" else "text"
            text = part.get(key)
            if not isinstance(text, str):
                yield event("response.content_part.added", **at, content_index=j, part=part)
                yield event("response.content_part.done", **at, content_index=j, part=part)
                continue
            yield event("response.content_part.added", **at, content_index=j, part={**part, key: ""})
            if key == "refusal":
                yield event("response.refusal.delta", **at, content_index=j, delta=text)
                yield event("response.refusal.done", **at, content_index=j, refusal=text)
            else:
                logprobs = part.get("logprobs") or []
                yield event("response.output_text.delta", **at, content_index=j, delta=text, logprobs=logprobs)
                yield event("response.output_text.done", **at, content_index=j, text=text, logprobs=logprobs)
            yield event("response.content_part.done", **at, content_index=j, part=part)
    elif kind in ("function_call", "custom_tool_call") and isinstance(item.get(_CALL_ITEMS[kind]), str):
        key = _CALL_ITEMS[kind]
        stem = "function_call_arguments" if kind == "function_call" else "custom_tool_call_input"
        yield event("response.output_item.added", output_index=i, item={**item, "status": "in_progress", key: ""})
        yield event(f"response.{stem}.delta", **at, delta=item[key])
        yield event(f"response.{stem}.done", **at, **{key: item[key]})
    else:
        yield event("response.output_item.added", output_index=i, item=item)
    yield event("response.output_item.done", output_index=i, item=item)


# --- streaming -----------------------------------------------------------------------

_DELTAS: Final[dict[str, tuple[tuple[str, ...], PartKind]]] = {
    # event type -> (where the text goes inside its output item, "*_index" names read from the event), kind
    "response.output_text.delta": (("content", "content_index", "text"), PartKind.TEXT),
    "response.refusal.delta": (("content", "content_index", "refusal"), PartKind.TEXT),
    "response.reasoning_text.delta": (("content", "content_index", "text"), PartKind.TEXT),
    "response.reasoning_summary_text.delta": (("summary", "summary_index", "text"), PartKind.TEXT),
    "response.function_call_arguments.delta": (("arguments",), PartKind.TOOL_ARGUMENTS),
    "response.mcp_call_arguments.delta": (("arguments",), PartKind.TOOL_ARGUMENTS),
    "response.custom_tool_call_input.delta": (("input",), PartKind.TOOL_ARGUMENTS),
    "response.code_interpreter_call_code.delta": (("code",), PartKind.TOOL_ARGUMENTS),
    "response.shell_call_command.delta": (("action", "commands", "command_index"), PartKind.TOOL_ARGUMENTS),
}
_DONES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
    # event type -> (where the text goes inside its output item, the event's field holding all of it)
    "response.output_text.done": (("content", "content_index", "text"), "text"),
    "response.refusal.done": (("content", "content_index", "refusal"), "refusal"),
    "response.reasoning_text.done": (("content", "content_index", "text"), "text"),
    "response.reasoning_summary_text.done": (("summary", "summary_index", "text"), "text"),
    "response.function_call_arguments.done": (("arguments",), "arguments"),
    "response.mcp_call_arguments.done": (("arguments",), "arguments"),
    "response.custom_tool_call_input.done": (("input",), "input"),
    "response.code_interpreter_call_code.done": (("code",), "code"),
    "response.shell_call_command.added": (("action", "commands", "command_index"), "command"),
    "response.shell_call_command.done": (("action", "commands", "command_index"), "command"),
}
_PART_EVENTS: Final = {
    "response.content_part.added": ("content", "content_index"),
    "response.content_part.done": ("content", "content_index"),
    "response.reasoning_summary_part.added": ("summary", "summary_index"),
    "response.reasoning_summary_part.done": ("summary", "summary_index"),
}
_RESPONSE_EVENTS: Final = frozenset({
    "response.created", "response.in_progress", "response.queued", "response.completed", "response.incomplete",
    "response.failed",
})
_FINAL_EVENTS: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})
_OPAQUE_EVENTS: Final = frozenset({"response.audio.delta", "response.image_generation_call.partial_image"})


@dataclass(frozen=True, slots=True)
class _Field:
    """One text an event carries: new text for its channel (`new`), or all of the channel's
    text stated again (a `.done` event, a finished item, the final response)."""

    channel: tuple[str | int, ...]
    path: Path  # inside the event's data
    kind: PartKind
    new: bool


class ResponsesStreamReader:
    """One Responses stream, event by event (see `StreamReader`).

    A channel is named by where its text ends up in the final response
    (`("output", 0, "content", 0, "text")`). Deltas add to a channel. The API also states
    every text again when it is finished (`response.output_text.done`, the part and the
    item when done, the whole response in `response.completed`): such a statement must
    equal what the deltas added (else BodyShapeError: what the client reads would differ
    from what was inspected), and is re-rendered with the channel's text as the client
    received it (redactions applied) by `restate`/`render`. A text stated only whole (an
    MCP tool list, a tool's output in a finished item) is new text for its channel.
    """

    def __init__(self) -> None:
        self._accepted: dict[tuple[str | int, ...], list[str]] = {}  # every text inspected, per channel
        self._released: dict[tuple[str | int, ...], list[str]] = {}  # as sent to the client, per channel
        self._plans: dict[int, list[_Field]] = {}  # by id(event), from deltas() to released()
        self._rendered: tuple[StreamEvent, Any] | None = None
        self._calls: dict[tuple[str | int, ...], dict[str, Any]] = {}
        self._turn_ids: tuple[str, ...] = ()
        # What the client has been sent, to end the stream cleanly after a block.
        self._response: dict[str, Any] | None = None
        self._items: dict[int, dict[str, Any]] = {}
        self._open_items: dict[int, None] = {}
        self._open_parts: dict[tuple[int, str, int], None] = {}
        self._error: Any = None
        self._sequence = -1

    # -- reading ----------------------------------------------------------------------

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        data = event.json
        if not isinstance(data, dict):
            return []  # a comment, a keep-alive
        kind = data.get("type")
        if not isinstance(kind, str):
            if event.data and "error" not in data:
                raise BodyShapeError("stream event: type: expected a string")
            return []
        self._note(kind, data)
        out: list[StreamDelta] = []
        plan: list[_Field] = []
        for field in _fields(kind, data):
            text = get_at(data, field.path)
            if not isinstance(text, str):
                raise BodyShapeError(f"stream event {kind}: {format_path(field.path)}: expected a string")
            accepted = self._accepted.get(field.channel)
            if field.new:
                if accepted is None:
                    accepted = self._accepted[field.channel] = []
                accepted.append(text)
            elif not accepted or not any(accepted):
                if not text:
                    continue  # an empty part or item, before its deltas
                self._accepted[field.channel] = [text]
                field = _Field(field.channel, field.path, field.kind, new=True)
            elif text != "".join(accepted):
                raise BodyShapeError(f"stream event {kind}: {format_path(field.path)} states "
                                     f"{'.'.join(map(str, field.channel))} differently from its deltas")
            plan.append(field)
            if field.new and text:
                out.append(StreamDelta(channel=field.channel, kind=field.kind, text=text, path=field.path))
        if plan:
            self._plans[id(event)] = plan
        else:  # an id outlives its event: never let an older plan stand for this one
            self._plans.pop(id(event), None)
        return out

    def _note(self, kind: str, data: dict[str, Any]) -> None:
        """Tool calls and the response's ids, as the upstream announces them."""
        if kind in _RESPONSE_EVENTS and not self._turn_ids:
            self._turn_ids = _turn_ids(data.get("response"))
        if kind in ("response.output_item.added", "response.output_item.done"):
            item, index = data.get("item"), data.get("output_index")
            if isinstance(item, dict) and isinstance(index, int) and item.get("type") in _CALL_ITEMS:
                channel = ("output", index, _CALL_ITEMS[item["type"]])
                call = self._calls.setdefault(channel, {"channel": channel, "id": None, "name": None})
                call_id = item.get("call_id") or item.get("id")
                if isinstance(call_id, str) and call_id:
                    call["id"] = call_id
                if isinstance(item.get("name"), str):
                    call["name"] = item["name"]

    # -- writing ----------------------------------------------------------------------

    def render(self, event: StreamEvent, json: Any) -> bytes:
        json = self._restated(event, json)
        self._rendered = (event, json)
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def restate(self, event: StreamEvent) -> bytes | None:
        """The event re-rendered when it states again a text the client received changed
        (redacted, cut), else None: pass it as it came."""
        if not any(not field.new for field in self._plans.get(id(event), ())):
            return None
        json = self._restated(event, event.json)
        if json is event.json:
            return None
        self._rendered = (event, json)
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def _restated(self, event: StreamEvent, json: Any) -> Any:
        for field in self._plans.get(id(event), ()):
            if field.new:
                if get_at(json, field.path) != get_at(event.json, field.path):
                    json = _drop_logprobs(json, field.path)
                continue
            text = "".join(self._released.get(field.channel, ()))
            if get_at(json, field.path) != text:
                json = _drop_logprobs(set_at(json, field.path, text), field.path)
        return json

    @staticmethod
    def terminal(event: StreamEvent) -> bool:
        return event.event in ("response.completed", "response.failed", "response.incomplete")

    def released(self, event: StreamEvent) -> None:
        json = event.json
        if self._rendered is not None and self._rendered[0] is event:
            json = self._rendered[1]
        self._rendered = None
        for field in self._plans.pop(id(event), ()):
            if field.new:
                self._released.setdefault(field.channel, []).append(get_at(json, field.path))
        if isinstance(json, dict):
            self._track(json)

    def _track(self, data: dict[str, Any]) -> None:
        """The shape of what the client has received: the response, its items and parts."""
        kind = data.get("type")
        if isinstance(data.get("sequence_number"), int):
            self._sequence = max(self._sequence, data["sequence_number"])
        if kind in _RESPONSE_EVENTS and isinstance(data.get("response"), dict):
            response = data["response"]
            self._response = {key: value for key, value in response.items() if key != "output"}
            if kind in _FINAL_EVENTS:
                for i, item in enumerate(response.get("output") or ()):
                    if isinstance(item, dict):
                        self._items[i] = item
        elif kind in ("response.output_item.added", "response.output_item.done"):
            index, item = data.get("output_index"), data.get("item")
            if isinstance(index, int) and isinstance(item, dict):
                self._items[index] = item
                if kind.endswith("added"):
                    self._open_items[index] = None
                else:
                    self._open_items.pop(index, None)
        elif kind in _PART_EVENTS:
            key, index_name = _PART_EVENTS[kind]
            index, at, part = data.get("output_index"), data.get(index_name), data.get("part")
            if isinstance(index, int) and isinstance(at, int) and isinstance(part, dict) and index in self._items:
                item = self._items[index] = dict(self._items[index])
                parts = list(item.get(key) or ())
                parts.extend({} for _ in range(at + 1 - len(parts)))
                parts[at] = part
                item[key] = parts
                if kind.endswith("added"):
                    self._open_parts[(index, key, at)] = None
                else:
                    self._open_parts.pop((index, key, at), None)
        elif kind == "error":
            self._error = data

    # -- the whole response -----------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The response as the client has received it: its items, each text as released.
        Raises BodyShapeError for text that has no place in a response body."""
        if self._response is None and self._error is not None:
            error = self._error.get("error") if isinstance(self._error.get("error"), dict) else self._error
            return {"error": error}
        stray = [channel for channel, pieces in self._released.items() if channel[0] != "output" and any(pieces)]
        if stray:
            names = ", ".join(".".join(map(str, channel)) for channel in stray)
            raise BodyShapeError(f"stream: text in events that have no place in a response body ({names}); "
                                 "inspect such streams incrementally (stream.mode: incremental)")
        items = self._output()
        body = dict(self._response or _response_base(None, None))
        body["output"] = [items[index] for index in sorted(items)]
        return body

    def _output(self) -> dict[int, Any]:
        """The output items by index, each text as released."""
        items: dict[int, Any] = dict(self._items)
        for channel, pieces in self._released.items():
            if channel[0] == "output" and isinstance(channel[1], int):
                items[channel[1]] = _with_text(items.get(channel[1]), channel[2:], "".join(pieces))
        return items

    def turn_ids(self) -> tuple[str, ...]:
        return self._turn_ids

    def tool_calls(self) -> list[dict[str, Any]]:
        return [dict(call) for call in self._calls.values()]

    # -- ending -----------------------------------------------------------------------

    def blocked(self, message: str, respond: str | None) -> bytes:
        if respond == "error":
            return self._error_event(message, "permission_error", "firewall_blocked")
        if respond not in (None, "refusal"):
            raise ValueError(f"respond must be None, 'refusal' or 'error', not {respond!r}")
        out: list[dict[str, Any]] = []
        if self._response is None:
            # Nothing reached the client yet: the SDK needs a response.created first.
            self._response = {k: v for k, v in _response_base(None, None).items() if k != "output"}
            out.append({"type": "response.created", "response": {**self._response, "output": []}})
        items = self._output()
        for index, key, at in list(self._open_parts):
            parts = (items.get(index) or {}).get(key) or ()
            part = parts[at] if at < len(parts) else {}
            kind, at_name = (("response.content_part.done", "content_index") if key == "content"
                             else ("response.reasoning_summary_part.done", "summary_index"))
            out.append({"type": kind, "item_id": _item_id(items.get(index)), "output_index": index, at_name: at,
                        "part": part})
        for index in list(self._open_items):
            item = items[index] = {**(items.get(index) or {}), "status": "incomplete"}
            out.append({"type": "response.output_item.done", "output_index": index, "item": item})
        refusal = _refusal_item(message)
        index = max(items, default=-1) + 1
        at = {"item_id": refusal["id"], "output_index": index, "content_index": 0}
        out += [
            {"type": "response.output_item.added", "output_index": index,
             "item": {**refusal, "status": "in_progress", "content": []}},
            {"type": "response.content_part.added", **at, "part": {"type": "refusal", "refusal": ""}},
            {"type": "response.refusal.delta", **at, "delta": message},
            {"type": "response.refusal.done", **at, "refusal": message},
            {"type": "response.content_part.done", **at, "part": refusal["content"][0]},
            {"type": "response.output_item.done", "output_index": index, "item": refusal},
        ]
        items[index] = refusal
        response = {**self._response, "status": "completed", "output": [items[i] for i in sorted(items)]}
        out.append({"type": "response.completed", "response": response})
        return b"".join(self._emit(data) for data in out)

    def failed(self, message: str) -> bytes:
        return self._error_event(message, "api_error", "upstream_disconnected")

    def _error_event(self, message: str, error_type: str, code: str) -> bytes:
        # The API's own `error` event, plus an `error` object: the SDK raises APIError on
        # any event whose data has one, so the agent sees an exception, not a silent end.
        return self._emit({"type": "error", "code": code, "message": message, "param": None,
                           "error": {"message": message, "type": error_type, "param": None, "code": code}})

    def _emit(self, data: dict[str, Any]) -> bytes:
        self._sequence += 1
        data = {"type": data["type"], "sequence_number": self._sequence,
                **{k: v for k, v in data.items() if k != "type"}}
        return render_event(orjson.dumps(data).decode("utf-8"), data["type"])


def _fields(kind: str, data: dict[str, Any]) -> list[_Field]:
    """The texts an event carries, each with its channel."""
    if kind in _DELTAS:
        where, part_kind = _DELTAS[kind]
        return [_Field(("output", _int(data, "output_index"), *_resolve(where, data)), ("delta",), part_kind, True)]
    if kind in _DONES:
        where, key = _DONES[kind]
        return [_Field(("output", _int(data, "output_index"), *_resolve(where, data)), (key,), _kind_of(where), False)]
    if kind in _PART_EVENTS:
        key, index_name = _PART_EVENTS[kind]
        part = data.get("part")
        base = ("output", _int(data, "output_index"), key, _int(data, index_name))
        if not isinstance(part, dict):
            raise BodyShapeError(f"stream event {kind}: part: expected an object")
        return [_Field((*base, name), ("part", name), PartKind.TEXT, False)
                for name in ("text", "refusal") if isinstance(part.get(name), str)]
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = data.get("item")
        if not isinstance(item, dict):
            raise BodyShapeError(f"stream event {kind}: item: expected an object")
        return [_Field(("output", _int(data, "output_index"), *path), ("item", *path), part_kind, False)
                for path, part_kind in _item_texts(item)]
    if kind in _RESPONSE_EVENTS:
        response = data.get("response")
        if not isinstance(response, dict):
            raise BodyShapeError(f"stream event {kind}: response: expected an object")
        output = response.get("output")
        if output is None:
            return []
        if not isinstance(output, list):
            raise BodyShapeError(f"stream event {kind}: response.output: expected an array")
        return [_Field(("output", i, *path), ("response", "output", i, *path), part_kind, False)
                for i, item in enumerate(output) if isinstance(item, dict) for path, part_kind in _item_texts(item)]
    if kind == "response.shell_call_output_content.delta":
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise BodyShapeError(f"stream event {kind}: delta: expected an object")
        base = ("output", _int(data, "output_index"), "shell_output", _int(data, "command_index"))
        return [_Field((*base, name), ("delta", name), PartKind.TOOL_RESULT, True)
                for name in ("stdout", "stderr") if isinstance(delta.get(name), str)]
    if kind == "response.shell_call_output_content.done":
        # Whether `output` holds this command's chunks or every command's is not settled
        # in the spec: each is inspected as a text of its own rather than checked.
        base = ("output", _int(data, "output_index"), "shell_output_done", _int(data, "command_index"))
        return [_Field((*base, k, name), ("output", k, name), PartKind.TOOL_RESULT, True)
                for k, chunk in enumerate(data.get("output") or ()) if isinstance(chunk, dict)
                for name in ("stdout", "stderr") if isinstance(chunk.get(name), str)]
    if kind.endswith(".delta") and kind not in _OPAQUE_EVENTS and isinstance(data.get("delta"), str):
        # A text event this reader does not know yet: inspected on a channel of its own.
        indices = tuple(data[key] for key in sorted(data) if key.endswith("_index") and isinstance(data[key], int))
        return [_Field(("event", kind.removesuffix(".delta"), *indices), ("delta",), PartKind.TEXT, True)]
    return []


def _item_texts(item: dict[str, Any]) -> list[tuple[Path, PartKind]]:
    """Where an output item holds text, as it streams (tool arguments as one raw string)."""
    kind = item.get("type")
    if kind in _OPAQUE_ITEMS:
        return []
    if kind == "message" or kind == "reasoning":
        out: list[tuple[Path, PartKind]] = []
        for key in ("content", "summary"):
            for j, part in enumerate(item.get(key) or ()):
                if isinstance(part, dict):
                    out.extend(((key, j, name), PartKind.TEXT) for name in ("text", "refusal")
                               if isinstance(part.get(name), str))
        return out
    if kind in ("function_call", "custom_tool_call"):
        key = _CALL_ITEMS[kind]
        return [((key,), PartKind.TOOL_ARGUMENTS)] if isinstance(item.get(key), str) else []
    results = isinstance(kind, str) and (kind.endswith("_output") or kind == "mcp_list_tools")
    out = []
    for key, value in item.items():
        if key in _SKIP_KEYS:
            continue
        part_kind = PartKind.TOOL_RESULT if results or key in _RESULT_KEYS else PartKind.TOOL_ARGUMENTS
        out.extend((path, part_kind) for path, _ in _leaves(value, (key,)))
    return out


def _kind_of(where: tuple[str, ...]) -> PartKind:
    return PartKind.TEXT if where[0] in ("content", "summary") else PartKind.TOOL_ARGUMENTS


def _resolve(where: tuple[str, ...], data: dict[str, Any]) -> tuple[str | int, ...]:
    return tuple(_int(data, name) if name.endswith("_index") else name for name in where)


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BodyShapeError(f"stream event {data.get('type')}: {key}: expected an integer")
    return value


def _item_id(item: Any) -> str:
    return item.get("id") or "" if isinstance(item, dict) else ""


def _with_text(item: Any, path: tuple[str | int, ...], text: str) -> dict[str, Any]:
    """`item` with `text` at `path`, creating what is missing (a part whose
    `content_part.added` never came gets the type its text implies)."""
    root: dict[str, Any] = dict(item) if isinstance(item, dict) else {}
    node: Any = root
    for depth, key in enumerate(path[:-1]):
        blank: Any = [] if isinstance(path[depth + 1], int) else {}
        if isinstance(key, int):
            if not isinstance(node, list):
                raise BodyShapeError(f"stream: {'.'.join(map(str, path))}: expected an array at [{key}]")
            node.extend({} for _ in range(key + 1 - len(node)))
        elif not isinstance(node, dict):
            raise BodyShapeError(f"stream: {'.'.join(map(str, path))}: expected an object at {key}")
        child = node[key] if isinstance(key, int) else node.get(key)
        # Copied on the way down: the items are what the client was sent, kept as they are.
        node[key] = child = type(child)(child) if isinstance(child, list | dict) and child else blank
        node = child
    node[path[-1]] = text
    if isinstance(node, dict) and "type" not in node and len(path) >= 3 and path[0] in ("content", "summary"):
        node["type"] = ("refusal" if path[-1] == "refusal" else "summary_text" if path[0] == "summary"
                        else "reasoning_text" if root.get("type") == "reasoning" else "output_text")
    return root
