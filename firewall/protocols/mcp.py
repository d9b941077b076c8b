"""MCP over streamable HTTP (`POST /mcp`): JSON-RPC 2.0 between an agent (the MCP
client) and an MCP server, answered as JSON or as SSE (one JSON-RPC message per event).

What is inspected, agent to server (role `assistant`, kind `tool_arguments`):
- `tools/call`: every string in `arguments`; the tool's name reaches the agent guard as
  a tool call, so `agents.<a>.tools` allows tools per agent;
- `resources/read`: the `uri`; `prompts/get`: every argument value;
- the content of a result the agent returns to a server's request (sampling, elicitation).

Server to agent (role `tool`, except prompt and sampling messages, which keep their own):
- `tools/call` results: `content[]` text (and embedded resources' text) and every string
  of `structuredContent` (kind `tool_result`): where indirect prompt injection enters;
- `tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`: every title
  and description, those inside the tools' input and output schemas too: tool poisoning;
- `resources/read` contents (kind `tool_result`), `prompts/get` messages, `initialize`'s
  `instructions`, an error's message;
- requests the server sends inside an SSE answer: `sampling/createMessage` (messages and
  system prompt) and `elicitation/create` (its message), and the same requests carried by
  a 2026-07-28 `input_required` result.

Every other method (initialize, ping, notifications, ...) passes, recorded. A known method
whose params or result have the wrong shape is refused, never forwarded uninspected.

An instance is bound to one call: `for_route` returns a fresh one, which remembers the
ids and methods the request asked, because a JSON-RPC response does not name its method:
an answer is read as what was asked, and an error or a refusal answers exactly the ids
asked (a batch with an array, as JSON-RPC says).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from firewall.model import Message, Part, PartKind, Path, Rewrite, ToolCall
from firewall.protocols import _paths
from firewall.protocols._paths import expect_object, expect_str, format_path, optional_str, shape_error, string_leaves
from firewall.protocols._sse import parse_events, render_event
from firewall.protocols.base import BodyShapeError, ParsedRequest, StreamEvent
from firewall.protocols.messages import MessageStreamReader

__all__ = [
    "FIREWALL_BLOCKED",
    "FIREWALL_RATE_LIMITED",
    "FIREWALL_UNIDENTIFIED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "PARSE_ERROR",
    "McpStreamReader",
    "McpStreamableHttp",
]

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# JSON-RPC leaves -32000..-32099 to implementations; the MCP SDKs use -32000..-32042.
FIREWALL_BLOCKED: Final = -32050  # a rule or the agent guard refused (HTTP 403)
FIREWALL_UNIDENTIFIED: Final = -32051  # the request does not say which agent sent it (401)
FIREWALL_RATE_LIMITED: Final = -32052  # 429

_STATUS_CODES: Final = {401: FIREWALL_UNIDENTIFIED, 403: FIREWALL_BLOCKED, 404: METHOD_NOT_FOUND, 429: FIREWALL_RATE_LIMITED}

SERVER_ROLE: Final = "tool"
CLIENT_ROLE: Final = "assistant"
_VERSION: Final = "2.0"
_SSE_EVENT: Final = "message"  # the MCP SDK's client reads only events of this name

# Values of these schema keywords name types and structure, not text for a model.
_SCHEMA_KEYWORDS: Final = frozenset({"type", "$schema", "$ref", "$id", "$anchor", "format", "required"})

RequestId = str | int | float
_Key = tuple[str, RequestId]  # "1" and 1 are different ids


@dataclass(slots=True)
class _Asked:
    """One request of the call: what the answer with its id will be."""

    id: RequestId
    method: str
    name: str | None = None  # tools/call: the tool; prompts/get: the prompt; resources/read: the uri


class McpStreamableHttp:
    name = "mcp"
    provider = "mcp"
    path = "/mcp"
    # DELETE ends a session and carries no body: forwarded, recorded. GET would open a
    # server-to-client stream outside any request; the listener answers it 405, which the
    # spec allows ("no stream here"), and servers send what belongs to a request on the
    # answer to its POST, which is inspected.
    forwarded_methods: frozenset[str] = frozenset({"DELETE"})
    # Answers are the tool server's (results, listings), not the calling agent's words.
    answers_from_tools = True

    def __init__(self) -> None:
        self._asked: dict[_Key, _Asked] = {}
        self._batch = False
        self._parsed = False  # the body was read as JSON-RPC
        self._failure: int | None = None  # else: the JSON-RPC code of why not

    def for_route(self, route: str) -> McpStreamableHttp | None:
        return McpStreamableHttp() if route == self.path else None

    # -- requests ---------------------------------------------------------------------

    def parse_request(self, body: Any) -> ParsedRequest:
        self._asked, self._batch, self._parsed, self._failure = {}, isinstance(body, list), False, None
        try:
            envelopes = _envelopes(body)
            for where, message in envelopes:
                if "method" in message and "id" in message:
                    self._ask(message, where)
        except BodyShapeError:
            self._failure = INVALID_REQUEST
            raise
        messages: list[Message] = []
        try:
            for where, message in envelopes:
                messages.extend(self._client_message(message, where))
        except BodyShapeError:
            self._failure = INVALID_PARAMS
            raise
        self._parsed = True
        return ParsedRequest(messages=tuple(messages), model=None, stream=False)

    def _ask(self, message: dict[str, Any], where: Path) -> None:
        key = _key(message["id"])
        if key in self._asked:
            raise shape_error((*where, "id"), f"an id not used before in the batch ({message['id']!r} is)")
        self._asked[key] = _Asked(message["id"], message["method"])

    def _client_message(self, message: dict[str, Any], where: Path) -> list[Message]:
        method = message.get("method")
        if method is None:
            return _client_result(message, where)
        read = _REQUEST_READERS.get(method)
        if read is None:
            return []
        parsed, name = read(message.get("params") or {}, (*where, "params"), message.get("id"))
        asked = self._asked.get(_key(message["id"])) if "id" in message else None
        if asked is not None:
            asked.name = name
        return [parsed] if parsed is not None else []

    # -- responses --------------------------------------------------------------------

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        if isinstance(body, list) and not body:
            return ()  # a stream that carried no message
        messages: list[Message] = []
        for where, message in _envelopes(body):
            messages.extend(self._server_message(message, where))
        return tuple(messages)

    def _server_message(self, message: dict[str, Any], where: Path) -> list[Message]:
        if "method" in message:
            return _server_request(message, where)
        rpc_id = message["id"]
        asked = self._asked.get(_key(rpc_id)) if rpc_id is not None else None
        if asked is None and rpc_id is not None:
            raise BodyShapeError(f"{format_path((*where, 'id'))}: the answer names id {rpc_id!r}, which the request did not ask")
        if "error" in message:  # its id may be null: the server could not read the request's
            text = message["error"]["message"]
            part = Part(text, (*where, "error", "message"))
            return [Message(SERVER_ROLE, (part,), name=asked.name if asked else None)] if text else []
        if asked is None:  # unreachable: _envelope refuses a result with a null id
            raise shape_error((*where, "id"), "the id of a request")
        result_where: Path = (*where, "result")
        result = expect_object(message["result"], result_where)
        read = _RESULT_READERS.get(asked.method)
        return read(result, result_where, asked) if read is not None else []

    def parse_stream(self, data: bytes) -> Any:
        """A buffered SSE answer: its JSON-RPC messages in order (an array, read like a batch)."""
        messages: list[Any] = []
        for n, event in enumerate(parse_events(data)):
            if not event.data:
                continue  # a priming event (an id for resumption) or a keep-alive
            try:
                messages.append(orjson.loads(event.data))
            except orjson.JSONDecodeError as exc:
                raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
        return messages

    def stream_reader(self) -> McpStreamReader:
        return McpStreamReader(self)

    def render_stream(self, body: Any) -> bytes:
        messages = body if isinstance(body, list) else [body]
        return b"".join(render_event(orjson.dumps(message).decode("utf-8"), _SSE_EVENT) for message in messages)

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        return _paths.apply_rewrites(body, rewrites)

    # -- answers of the firewall's own ------------------------------------------------

    def error_body(self, status: int, message: str, *, code: str | None = None) -> Any:
        """A JSON-RPC error for each id asked (an array for a batch; id null when none is
        known). The MCP SDK's client reads a JSON-RPC error at any HTTP status."""
        return self._answer(self._pending(), lambda asked: _error(asked, self._rpc_code(status), message, status, code))

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> Any:
        """A blocked `tools/call` is answered as a tool result with `isError: true`, so an
        agent loop goes on; any other method has no such answer and gets an error."""
        return self._answer(self._pending(), lambda asked: _refusal(asked, text))

    def _rpc_code(self, status: int) -> int:
        if status == 400:
            if self._failure is not None:
                return self._failure
            return INVALID_REQUEST if self._parsed else PARSE_ERROR
        if status >= 500:
            return INTERNAL_ERROR
        return _STATUS_CODES.get(status, INVALID_REQUEST)

    def _pending(self, answered: set[_Key] | None = None) -> list[_Asked]:
        return [asked for key, asked in self._asked.items() if not answered or key not in answered]

    def _answer(self, pending: list[_Asked], make: Callable[[_Asked | None], dict[str, Any]]) -> Any:
        if not pending:
            return make(None)
        answers = [make(asked) for asked in pending]
        return answers if self._batch else answers[0]


class McpStreamReader(MessageStreamReader):
    """One SSE answer of one call, event by event: each event one whole JSON-RPC message."""

    def __init__(self, wire: McpStreamableHttp) -> None:
        self._wire = wire
        self._answered: set[_Key] = set()

    def messages(self, event: StreamEvent) -> tuple[Message, ...]:
        if event.json is None:
            if event.data.strip():
                raise BodyShapeError("stream event: data is not a JSON-RPC message (not JSON)")
            return ()  # a priming event (an id for resumption), a comment, a keep-alive
        messages: list[Message] = []
        for where, message in _envelopes(event.json):
            messages.extend(self._wire._server_message(message, where))
        return tuple(messages)

    def released(self, event: StreamEvent) -> None:
        messages = event.json if isinstance(event.json, list) else [event.json]
        for message in messages:
            if isinstance(message, dict) and "method" not in message and message.get("id") is not None:
                self._answered.add(_key(message["id"]))

    def render(self, event: StreamEvent, json: Any) -> bytes:
        # The event's other fields stay: its id is what a client resumes from.
        kept = [line for line in _lines(event.raw) if line.startswith(("event:", "id:", "retry:"))]
        return ("\n".join([*kept, "data: " + orjson.dumps(json).decode("utf-8")]) + "\n\n").encode("utf-8")

    def blocked(self, message: str, respond: str | None) -> bytes:
        pending = self._wire._pending(self._answered)
        if respond == "refusal":
            return self._events(_refusal(asked, message) for asked in pending)
        return self._events(_error(asked, FIREWALL_BLOCKED, message, 403, "firewall_blocked") for asked in pending)

    def failed(self, message: str) -> bytes:
        pending = self._wire._pending(self._answered)
        return self._events(_error(asked, INTERNAL_ERROR, message, 502, "upstream_stream") for asked in pending)

    @staticmethod
    def _events(answers: Any) -> bytes:
        return b"".join(render_event(orjson.dumps(answer).decode("utf-8"), _SSE_EVENT) for answer in answers)


# --- the JSON-RPC envelope --------------------------------------------------------------


def _envelopes(body: Any) -> list[tuple[Path, dict[str, Any]]]:
    if isinstance(body, list):
        if not body:
            raise BodyShapeError("<root>: expected a JSON-RPC message or a non-empty batch (an empty array)")
        return [((i,), _envelope(item, (i,))) for i, item in enumerate(body)]
    return [((), _envelope(body, ()))]


def _envelope(value: Any, where: Path) -> dict[str, Any]:
    message = expect_object(value, where)
    if message.get("jsonrpc") != _VERSION:
        raise shape_error((*where, "jsonrpc"), '"2.0"')
    if "method" in message:
        if not isinstance(message["method"], str):
            raise shape_error((*where, "method"), "a string")
        if "id" in message:
            _check_id(message["id"], (*where, "id"))
        if message.get("params") is not None and not isinstance(message["params"], dict):
            raise shape_error((*where, "params"), "an object")
        return message
    if "id" not in message:
        raise shape_error(where, "a JSON-RPC message: a request or notification (with a method) or a response (with an id)")
    if ("result" in message) == ("error" in message):
        raise shape_error(where, "a response with exactly one of result and error")
    if "error" in message:
        if message["id"] is not None:  # null: the peer could not read the request's id
            _check_id(message["id"], (*where, "id"))
        error = expect_object(message["error"], (*where, "error"))
        if not isinstance(error.get("code"), int) or isinstance(error.get("code"), bool):
            raise shape_error((*where, "error", "code"), "an integer")
        expect_str(error, "message", (*where, "error"))
    else:
        _check_id(message["id"], (*where, "id"))
    return message


def _check_id(value: Any, where: Path) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise shape_error(where, "a string or a number (MCP ids are never null)")


def _key(rpc_id: RequestId) -> _Key:
    return (type(rpc_id).__name__, rpc_id)


def _id_text(rpc_id: Any) -> str:
    return "" if rpc_id is None else str(rpc_id)


def _error(asked: _Asked | None, code: int, message: str, status: int, reason: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": status}
    if reason:
        data["reason"] = reason
    return {"jsonrpc": _VERSION, "id": asked.id if asked else None, "error": {"code": code, "message": message, "data": data}}


def _refusal(asked: _Asked | None, text: str) -> dict[str, Any]:
    if asked is None or asked.method != "tools/call":
        return _error(asked, FIREWALL_BLOCKED, text, 403, "firewall_blocked")
    return {"jsonrpc": _VERSION, "id": asked.id, "result": {"content": [{"type": "text", "text": text}], "isError": True}}


def _lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --- what the agent sends ---------------------------------------------------------------

_RequestReader = Callable[[dict[str, Any], Path, Any], tuple[Message | None, str | None]]


def _tool_call(params: dict[str, Any], where: Path, rpc_id: Any) -> tuple[Message | None, str | None]:
    name = expect_str(params, "name", where)
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise shape_error((*where, "arguments"), "an object")
    parts = _leaves(arguments, (*where, "arguments"), PartKind.TOOL_ARGUMENTS) if arguments else []
    call = ToolCall(id=_id_text(rpc_id), name=name, arguments=arguments or {})
    return Message(CLIENT_ROLE, tuple(parts), tool_calls=(call,), name=name), name


def _resource_read(params: dict[str, Any], where: Path, rpc_id: Any) -> tuple[Message | None, str | None]:
    uri = expect_str(params, "uri", where)
    return Message(CLIENT_ROLE, (Part(uri, (*where, "uri"), PartKind.TOOL_ARGUMENTS),), name=uri), uri


def _prompt_get(params: dict[str, Any], where: Path, rpc_id: Any) -> tuple[Message | None, str | None]:
    name = expect_str(params, "name", where)
    arguments = params.get("arguments")
    parts: list[Part] = []
    if arguments is not None:
        for key, value in expect_object(arguments, (*where, "arguments")).items():
            if not isinstance(value, str):
                raise shape_error((*where, "arguments", key), "a string (prompt arguments are strings)")
            if value:
                parts.append(Part(value, (*where, "arguments", key), PartKind.TOOL_ARGUMENTS))
    return Message(CLIENT_ROLE, tuple(parts), name=name), name


def _listing_request(params: dict[str, Any], where: Path, rpc_id: Any) -> tuple[Message | None, str | None]:
    optional_str(params, "cursor", where)
    return None, None


_REQUEST_READERS: Final[dict[str, _RequestReader]] = {
    "tools/call": _tool_call,
    "resources/read": _resource_read,
    "prompts/get": _prompt_get,
    "tools/list": _listing_request,
    "resources/list": _listing_request,
    "resources/templates/list": _listing_request,
    "prompts/list": _listing_request,
}


def _client_result(message: dict[str, Any], where: Path) -> list[Message]:
    """The agent's answer to a server's request: a sampling result comes from the agent's
    model, an elicitation result from its user; roots and pings carry no content."""
    result = message.get("result")
    if not isinstance(result, dict) or result.get("content") is None:
        return []
    content, content_where = result["content"], (*where, "result", "content")
    if isinstance(content, list):
        parts = _blocks(content, content_where, PartKind.TEXT)
    elif isinstance(content, dict) and isinstance(content.get("type"), str):
        parts = _block(content, content_where, PartKind.TEXT)
    elif isinstance(content, dict):
        parts = _leaves(content, content_where, PartKind.TEXT)  # an elicitation form's values
    else:
        raise shape_error(content_where, "an object or an array of content blocks")
    role = CLIENT_ROLE if "model" in result else "user"
    return [Message(role, tuple(parts), name="sampling" if role == CLIENT_ROLE else "elicitation")]


# --- what the server sends --------------------------------------------------------------

_ResultReader = Callable[[dict[str, Any], Path, _Asked], list[Message]]


def _initialize_result(result: dict[str, Any], where: Path, asked: _Asked) -> list[Message]:
    # The server's instructions usually go into the agent's system prompt.
    text = optional_str(result, "instructions", where)
    return [Message(SERVER_ROLE, (Part(text, (*where, "instructions")),), name="instructions")] if text else []


def _call_result(result: dict[str, Any], where: Path, asked: _Asked) -> list[Message]:
    if result.get("resultType") == "input_required":
        return _input_requests(result, where)
    content = result.get("content")
    if not isinstance(content, list):
        raise shape_error((*where, "content"), "an array" if "content" in result else "an array (it is missing)")
    parts = _blocks(content, (*where, "content"), PartKind.TOOL_RESULT)
    if result.get("structuredContent") is not None:
        parts += _leaves(result["structuredContent"], (*where, "structuredContent"), PartKind.TOOL_RESULT)
    if result.get("isError") is not None and not isinstance(result["isError"], bool):
        raise shape_error((*where, "isError"), "a boolean")
    return [Message(SERVER_ROLE, tuple(parts), tool_call_id=_id_text(asked.id), name=asked.name)]


def _input_requests(result: dict[str, Any], where: Path) -> list[Message]:
    """A 2026-07-28 `input_required` result: the server's requests travel inside it."""
    requests = result.get("inputRequests")
    if requests is None:
        return []
    messages: list[Message] = []
    for key, request in expect_object(requests, (*where, "inputRequests")).items():
        request_where: Path = (*where, "inputRequests", key)
        request = expect_object(request, request_where)
        expect_str(request, "method", request_where)
        if request.get("params") is not None:
            expect_object(request["params"], (*request_where, "params"))
        messages.extend(_server_request(request, request_where))
    return messages


def _listing(key: str) -> _ResultReader:
    """tools/list and its kin: one message per item, holding every title and description."""

    def read(result: dict[str, Any], where: Path, asked: _Asked) -> list[Message]:
        items = result.get(key)
        if not isinstance(items, list):
            raise shape_error((*where, key), "an array" if key in result else "an array (it is missing)")
        messages: list[Message] = []
        for i, item in enumerate(items):
            item_where: Path = (*where, key, i)
            obj = expect_object(item, item_where)
            name = expect_str(obj, "name", item_where) if key == "tools" else optional_str(obj, "name", item_where)
            parts = _described(obj, item_where)
            annotations = obj.get("annotations")
            if isinstance(annotations, dict) and isinstance(annotations.get("title"), str) and annotations["title"]:
                parts.append(Part(annotations["title"], (*item_where, "annotations", "title")))
            if key == "tools":
                expect_object(obj.get("inputSchema"), (*item_where, "inputSchema"))
            for schema in ("inputSchema", "outputSchema"):
                if obj.get(schema) is not None:
                    parts += _schema_texts(obj[schema], (*item_where, schema))
            arguments = obj.get("arguments")  # a prompt's
            if arguments is not None:
                if not isinstance(arguments, list):
                    raise shape_error((*item_where, "arguments"), "an array")
                for j, argument in enumerate(arguments):
                    parts += _described(expect_object(argument, (*item_where, "arguments", j)), (*item_where, "arguments", j))
            messages.append(Message(SERVER_ROLE, tuple(parts), name=name))
        return messages

    return read


def _read_result(result: dict[str, Any], where: Path, asked: _Asked) -> list[Message]:
    contents = result.get("contents")
    if not isinstance(contents, list):
        raise shape_error((*where, "contents"), "an array" if "contents" in result else "an array (it is missing)")
    parts: list[Part] = []
    for i, item in enumerate(contents):
        item_where: Path = (*where, "contents", i)
        text = optional_str(expect_object(item, item_where), "text", item_where)  # or a blob: not text
        if text:
            parts.append(Part(text, (*item_where, "text"), PartKind.TOOL_RESULT))
    return [Message(SERVER_ROLE, tuple(parts), name=asked.name)]


def _prompt_result(result: dict[str, Any], where: Path, asked: _Asked) -> list[Message]:
    out: list[Message] = []
    description = optional_str(result, "description", where)
    if description:
        out.append(Message(SERVER_ROLE, (Part(description, (*where, "description")),), name=asked.name))
    messages = result.get("messages")
    if not isinstance(messages, list):
        raise shape_error((*where, "messages"), "an array" if "messages" in result else "an array (it is missing)")
    for i, message in enumerate(messages):
        message_where: Path = (*where, "messages", i)
        obj = expect_object(message, message_where)
        role = expect_str(obj, "role", message_where)
        out.append(Message(role, tuple(_content(obj.get("content"), (*message_where, "content"), PartKind.TEXT)),
                           name=asked.name))
    return out


_RESULT_READERS: Final[dict[str, _ResultReader]] = {
    "initialize": _initialize_result,
    "tools/call": _call_result,
    "tools/list": _listing("tools"),
    "resources/list": _listing("resources"),
    "resources/templates/list": _listing("resourceTemplates"),
    "prompts/list": _listing("prompts"),
    "resources/read": _read_result,
    "prompts/get": _prompt_result,
}


def _server_request(message: dict[str, Any], where: Path) -> list[Message]:
    """A request or notification from the server. Sampling asks the agent's model to read
    the server's messages, elicitation shows the server's message to the agent's user:
    both are inspected. Notifications (progress, logs, list changes) pass."""
    method = message["method"]
    params_where: Path = (*where, "params")
    params = message.get("params") or {}
    if method == "elicitation/create":
        text = expect_str(params, "message", params_where)
        return [Message(SERVER_ROLE, (Part(text, (*params_where, "message")),), name=method)] if text else []
    if method != "sampling/createMessage":
        return []
    out: list[Message] = []
    system = optional_str(params, "systemPrompt", params_where)
    if system:
        out.append(Message("system", (Part(system, (*params_where, "systemPrompt")),), name=method))
    messages = params.get("messages")
    if not isinstance(messages, list):
        raise shape_error((*params_where, "messages"), "an array")
    for i, sampled in enumerate(messages):
        sampled_where: Path = (*params_where, "messages", i)
        obj = expect_object(sampled, sampled_where)
        role = expect_str(obj, "role", sampled_where)
        out.append(Message(role, tuple(_content(obj.get("content"), (*sampled_where, "content"), PartKind.TEXT)), name=method))
    return out


# --- content blocks and schemas ---------------------------------------------------------


def _content(value: Any, where: Path, kind: PartKind) -> list[Part]:
    """One content block, or (sampling, 2025-11-25 on) an array of them."""
    return _blocks(value, where, kind) if isinstance(value, list) else _block(value, where, kind)


def _blocks(blocks: list[Any], where: Path, kind: PartKind) -> list[Part]:
    parts: list[Part] = []
    for j, block in enumerate(blocks):
        parts += _block(block, (*where, j), kind)
    return parts


def _block(value: Any, where: Path, kind: PartKind) -> list[Part]:
    block = expect_object(value, where)
    block_type = expect_str(block, "type", where)
    if block_type == "text":
        text = expect_str(block, "text", where)
        return [Part(text, (*where, "text"), kind)] if text else []
    if block_type in ("image", "audio"):
        return []  # not text
    if block_type == "resource":  # an embedded resource: its text, or a blob
        resource_where: Path = (*where, "resource")
        text = optional_str(expect_object(block.get("resource"), resource_where), "text", resource_where)
        return [Part(text, (*resource_where, "text"), kind)] if text else []
    if block_type == "resource_link":
        return _described(block, where, kind)
    # A block of a type this module does not know (tool_use, tool_result, a newer one):
    # every string in it is inspected, so nothing new passes unread.
    return [part for part in _leaves(block, where, kind) if part.path[len(where):] != ("type",)]


def _described(obj: dict[str, Any], where: Path, kind: PartKind = PartKind.TEXT) -> list[Part]:
    parts: list[Part] = []
    for key in ("title", "description"):
        text = optional_str(obj, key, where)
        if text:
            parts.append(Part(text, (*where, key), kind))
    return parts


def _schema_texts(schema: Any, where: Path) -> list[Part]:
    """Every string in a JSON schema a model reads (descriptions, titles, defaults, enum
    values, examples), not the keywords that name types and structure."""
    if not isinstance(schema, dict):
        raise shape_error(where, "an object (a JSON schema)")
    parts: list[Part] = []
    for text, path in string_leaves(schema, where):
        keys = [item for item in path[len(where):] if isinstance(item, str)]
        if text and not (keys and keys[-1] in _SCHEMA_KEYWORDS):
            parts.append(Part(text, path))
    return parts


def _leaves(value: Any, where: Path, kind: PartKind) -> list[Part]:
    return [Part(text, path, kind) for text, path in string_leaves(value, where) if text]
