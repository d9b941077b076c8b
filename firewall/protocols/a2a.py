"""A2A, Agent2Agent (JSON-RPC 2.0 over HTTP): the firewall in front of another agent.

The firewall fronts an A2A agent server at `/a2a/<agent>`: `POST /a2a/researcher` is
inspected and forwarded to the upstream named `a2a-researcher` (`--upstream
a2a-researcher=http://host:port`), a path after the agent's name kept (`/a2a/researcher/rpc`
goes to the upstream's `/rpc`). The name in the route is the fronted agent's name in the
policy: the agent that hears the request and says the answer. `GET
/a2a/<agent>/.well-known/agent-card.json` passes the Agent Card through, its JSON-RPC
endpoint pointed at the firewall (see `A2A.rewrite_passed`).

Both protocol versions the a2a-sdk speaks are read: 1.0 (`SendMessage`,
`SendStreamingMessage`, `GetTask`..., parts told apart by their member: `text`, `data`,
`url`, `raw`) and 0.3 (`message/send`, `message/stream`, `tasks/get`..., parts with a
`kind`). A response is read the same way in both: whatever Task, Message, status or
artifact update it holds, wrapped (1.0) or not (0.3), every text of every part (and every
string in a `data` part or a `metadata` map) becomes a `Part` at its exact path. A text
file sent inline (`raw`, or 0.3's `file.bytes`, of a text media type) is read as its
decoded text, and a redaction is written back in base64; other files (by `url`, or
binary) are not text and are not inspected.

What the caller sends is what it says to the fronted agent, whatever role the message
claims: every request message is read with role `user`, so lineage looks all of it up. In
an answer, every message and artifact is the fronted agent's (role `assistant`, and
fingerprinted as its words), except the callers' messages that a task's history echoes
(role `user` there): they were inspected as the requests that carried them, and they are
not the fronted agent's words.

JSON-RPC errors travel with HTTP 200 and the request's `id`, as the SDK's own server
sends them, so the client raises them with the firewall's message (`error_status`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from firewall.agents.identity import valid_agent_id
from firewall.model import EMBEDDED_TEXT, Message, Part, PartKind, Path, Rewrite
from firewall.protocols import _paths
from firewall.protocols._paths import (
    decode_text_file,
    expect_object as _object,
    format_path,
    is_text_media,
    shape_error as _shape,
    string_leaves,
)
from firewall.protocols._sse import parse_events, render_event
from firewall.protocols.base import BodyShapeError, ParsedRequest, StreamDelta, StreamEvent

__all__ = ["A2A", "A2AStreamReader", "CARD_PATHS", "FIREWALL_REFUSED", "ROUTE_PREFIX"]

ROUTE_PREFIX: Final = "/a2a/"
# The Agent Card's well-known path (1.0 and 0.3), and the name it had before 0.3.
CARD_PATHS: Final = ("/.well-known/agent-card.json", "/.well-known/agent.json")
# The JSON-RPC error code of a refusal by policy (a block, an unidentified caller, a
# quarantine, a rate limit): outside A2A's own -32001..-32009, which the SDK maps to
# task errors, so the client shows the firewall's message as it is.
FIREWALL_REFUSED: Final = -32050
_INVALID_REQUEST: Final = -32600
_METHOD_NOT_FOUND: Final = -32601
_INTERNAL_ERROR: Final = -32603
_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_STREAM_KEY: Final = "events"  # parse_stream's body: the stream's JSON-RPC responses, in order


@dataclass(frozen=True, slots=True)
class _Method:
    version: str  # "1.0" | "0.3"
    sends: bool  # params.message carries a message to the agent
    streams: bool  # answered with server-sent events
    card: bool = False  # answered with an Agent Card


_SEND: Final = _Method("1.0", sends=True, streams=False)
_STREAM: Final = _Method("1.0", sends=True, streams=True)
_READ: Final = _Method("1.0", sends=False, streams=False)
_SEND_03: Final = _Method("0.3", sends=True, streams=False)
_STREAM_03: Final = _Method("0.3", sends=True, streams=True)
_READ_03: Final = _Method("0.3", sends=False, streams=False)
_METHODS: Final[dict[str, _Method]] = {
    "SendMessage": _SEND,
    "SendStreamingMessage": _STREAM,
    "GetTask": _READ,
    "ListTasks": _READ,
    "CancelTask": _READ,
    "SubscribeToTask": _Method("1.0", sends=False, streams=True),
    "CreateTaskPushNotificationConfig": _READ,
    "GetTaskPushNotificationConfig": _READ,
    "ListTaskPushNotificationConfigs": _READ,
    "DeleteTaskPushNotificationConfig": _READ,
    "GetExtendedAgentCard": _Method("1.0", sends=False, streams=False, card=True),
    "message/send": _SEND_03,
    "message/stream": _STREAM_03,
    "tasks/get": _READ_03,
    "tasks/cancel": _READ_03,
    "tasks/resubscribe": _Method("0.3", sends=False, streams=True),
    "tasks/pushNotificationConfig/set": _READ_03,
    "tasks/pushNotificationConfig/get": _READ_03,
    "tasks/pushNotificationConfig/list": _READ_03,
    "tasks/pushNotificationConfig/delete": _READ_03,
    "agent/getAuthenticatedExtendedCard": _Method("0.3", sends=False, streams=False, card=True),
}
_TASK_METHODS: Final = frozenset({"GetTask", "CancelTask", "tasks/get", "tasks/cancel"})  # answered with a task
_USER_ROLES: Final = frozenset({"ROLE_USER", "user", 1})
_ROLES: Final = frozenset({"ROLE_USER", "ROLE_AGENT", "ROLE_UNSPECIFIED", "user", "agent", 0, 1, 2})
# The 1.0 results that wrap what they carry: SendMessageResponse and StreamResponse.
_WRAPPERS: Final = ("task", "message", "statusUpdate", "artifactUpdate")


class A2A:
    """The A2A wire format. The registry's instance is unbound; `for_route` returns a fresh
    one for each call, bound to the fronted agent (and to the Agent Card, for its GET),
    which `parse_request` tells the request's JSON-RPC id and method, so that the answer
    is read as what was asked and errors and stream endings carry the id (as the MCP
    format does: a JSON-RPC response does not name its method)."""

    name = "a2a"
    path = ROUTE_PREFIX + "{agent}"

    def __init__(self, agent: str | None = None, *, rest: str = "", card: bool = False) -> None:
        self.agent = agent  # the fronted agent (None: the registry's unbound instance)
        self.rest = rest  # the route's path after /a2a/<agent>, as it goes to the upstream
        self.card = card  # the route is the Agent Card's
        self.request_id: str | int | None = None  # the call's JSON-RPC id, once parse_request read it
        self.method: str | None = None  # its method, once known to be an A2A method

    @property
    def provider(self) -> str:
        """The upstream: `a2a-<agent>`."""
        return f"a2a-{self.agent}" if self.agent else "a2a"

    @property
    def peer(self) -> str | None:
        """The agent this route fronts: it hears the request and says the answer; the
        caller is the source of the request's words and the one the answer is for."""
        return self.agent

    @property
    def forwarded_methods(self) -> frozenset[str]:
        """Methods other than POST this route forwards uninspected: the Agent Card's GET (it
        describes the agent; the agent's words go through POST). Any other is refused."""
        return frozenset({"GET"}) if self.card else frozenset()

    # -- binding ----------------------------------------------------------------------

    def for_route(self, route: str) -> A2A | None:
        if not route.startswith(ROUTE_PREFIX):
            return None
        agent, slash, rest = route[len(ROUTE_PREFIX):].partition("/")
        if not valid_agent_id(agent):
            return None
        rest = slash + rest
        return A2A(agent, rest=rest, card=rest in CARD_PATHS)

    def upstream_path(self, route: str) -> str:
        """Where on the upstream the route's requests go: the path after the agent's name."""
        return self.rest

    def error_status(self, status: int) -> int:
        """The HTTP status of an error the firewall answers: JSON-RPC errors travel with 200
        (the client raises them with their message; on a 4xx it would show the status
        alone). The Agent Card's GET keeps its status, so a client sees no card."""
        return status if self.card else 200

    # -- requests ---------------------------------------------------------------------

    def parse_request(self, body: Any) -> ParsedRequest:
        if self.card:
            raise BodyShapeError("the Agent Card is read with GET; an A2A request is POSTed to the agent's route "
                                 f"({ROUTE_PREFIX}{self.agent})")
        if isinstance(body, list):
            raise BodyShapeError("a JSON-RPC batch (an array) is not part of A2A: send one request per call")
        obj = _object(body, ())
        # First, so that even a refusal of this body answers its id.
        raw_id = obj.get("id")
        self.request_id = raw_id if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None
        if obj.get("jsonrpc") != "2.0":
            raise _shape(("jsonrpc",), '"2.0"')
        method = obj.get("method")
        if not isinstance(method, str):
            raise _shape(("method",), "a string")
        spec = _METHODS.get(method)
        if spec is None:
            raise BodyShapeError(f"method: {method[:80]!r} is not an A2A method the firewall knows "
                                 f"({', '.join(_METHODS)})")
        self.method = method
        params = obj.get("params", {})
        if not isinstance(params, dict):
            raise _shape(("params",), "an object")
        found: list[_Text] = []
        if spec.sends:
            where: Path = ("params", "message")
            _message(params.get("message"), where, found)
        _metadata(params, ("params",), found)
        # One message per A2A message, every one the caller's words to the agent.
        messages = tuple(Message(role="user", parts=parts) for parts in _grouped(found))
        return ParsedRequest(messages=messages, model=None, stream=spec.streams)

    # -- responses --------------------------------------------------------------------

    def parse_response(self, body: Any) -> tuple[Message, ...]:
        if isinstance(body, dict) and _STREAM_KEY in body and "jsonrpc" not in body:
            events = body[_STREAM_KEY]
            if not isinstance(events, list):
                raise _shape((_STREAM_KEY,), "an array")
            found: list[_Text] = []
            for n, event in enumerate(events):
                _response(event, (_STREAM_KEY, n), found, self._spec)
            return _messages(found)
        found = []
        _response(body, (), found, self._spec)
        return _messages(found)

    def parse_stream(self, data: bytes) -> dict[str, Any]:
        events = []
        for n, event in enumerate(parse_events(data)):
            if not event.data:
                continue
            try:
                events.append(orjson.loads(event.data))
            except orjson.JSONDecodeError as exc:
                raise BodyShapeError(f"stream event {n}: data is not JSON ({exc})") from None
        return {_STREAM_KEY: events}

    def stream_reader(self) -> A2AStreamReader:
        return A2AStreamReader(self.request_id, self._spec)

    def render_stream(self, body: dict[str, Any]) -> bytes:
        events = body[_STREAM_KEY] if _STREAM_KEY in body and "jsonrpc" not in body else [body]
        return b"".join(_render(event) for event in events)

    def apply_rewrites(self, body: Any, rewrites: tuple[Rewrite, ...]) -> Any:
        return _paths.apply_rewrites(body, rewrites)

    # -- answers of the firewall's own ------------------------------------------------

    def error_body(self, status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
        return _error(self.request_id, status, message, code)

    def refusal_body(self, text: str, *, model: str | None, request: Any | None = None) -> dict[str, Any]:
        """A well-formed answer that says the exchange was blocked, so the caller's loop goes
        on: a task in state failed whose status message says why (the task the request
        continues, or the one the blocked answer was about), or, where there is no task, a
        reply message. Methods that answer neither (ListTasks, push settings, the card)
        get a JSON-RPC error."""
        spec = self._spec
        if spec is None or not (spec.sends or self.method in _TASK_METHODS):
            return _error(self.request_id, 403, text, "firewall_blocked")
        legacy = spec.version == "0.3"
        task = _refused_task(request)
        if task is None and not spec.sends:  # GetTask and CancelTask answer a task
            return _error(self.request_id, 403, text, "firewall_blocked")
        result = _refusal(text, legacy, task)
        if spec.sends and not legacy:
            result = {"task" if "status" in result else "message": result}
        return {"jsonrpc": "2.0", "id": self.request_id, "result": result}

    # -- what passes through ----------------------------------------------------------

    def rewrite_passed(self, status: int, data: bytes, url: str, upstream: str) -> bytes:
        """The Agent Card as the caller gets it: each JSON-RPC interface's URL points at the
        firewall (`url`: this request's URL), keeping the interface's path below the upstream
        (`upstream`: its base URL). Interfaces the firewall cannot inspect (HTTP+JSON, gRPC)
        are removed, so no client goes around it; so are signatures, which a rewritten card
        would fail. A card without a JSON-RPC interface raises BodyShapeError."""
        if not self.card or status != 200:
            return data
        try:
            card = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BodyShapeError(f"the agent card is not JSON ({exc})") from None
        card = dict(_object(card, ()))
        base = url.split("?", 1)[0].rstrip("/")
        base = base.removesuffix(self.rest)
        upstream_root = urlsplit(upstream).path.rstrip("/")
        endpoint = _Endpoint(base, upstream_root)
        fronted = False
        interfaces = card.get("supportedInterfaces")
        if interfaces is not None:
            if not isinstance(interfaces, list):
                raise _shape(("supportedInterfaces",), "an array")
            kept = [endpoint.rewrite(item, ("supportedInterfaces", n), "protocolBinding")
                    for n, item in enumerate(interfaces)]
            card["supportedInterfaces"] = [item for item in kept if item is not None]
            fronted = bool(card["supportedInterfaces"])
        if isinstance(card.get("url"), str):  # 0.3: the preferred transport's URL, the others beside it
            extra = card.get("additionalInterfaces") or []
            if not isinstance(extra, list):
                raise _shape(("additionalInterfaces",), "an array")
            main = {"url": card["url"], "transport": card.get("preferredTransport") or "JSONRPC"}
            kept = [endpoint.rewrite(item, ("additionalInterfaces", n), "transport")
                    for n, item in enumerate([main, *extra])]
            jsonrpc = [item for item in kept if item is not None]
            if jsonrpc:
                card.update(url=jsonrpc[0]["url"], preferredTransport="JSONRPC", additionalInterfaces=jsonrpc)
                fronted = True
            else:  # nothing in the 0.3 fields the firewall can front: none of them is kept
                for key in ("url", "preferredTransport", "additionalInterfaces"):
                    card.pop(key, None)
        if not fronted:
            raise BodyShapeError("the agent card offers no JSON-RPC interface; the firewall fronts A2A over "
                                 "JSON-RPC only")
        card.pop("signatures", None)
        return orjson.dumps(card)

    @property
    def _spec(self) -> _Method | None:
        return _METHODS.get(self.method) if self.method is not None else None


@dataclass(frozen=True, slots=True)
class _Endpoint:
    base: str  # the fronted agent's route on the firewall, as the caller reached it
    upstream_root: str  # the upstream's own path, which the card's URLs start with

    def rewrite(self, item: Any, where: Path, binding_key: str) -> dict[str, Any] | None:
        """A JSON-RPC interface pointed at the firewall; None for any other binding."""
        obj = _object(item, where)
        if obj.get(binding_key) != "JSONRPC":
            return None
        url = obj.get("url")
        if not isinstance(url, str):
            raise _shape((*where, "url"), "a string")
        path = urlsplit(url).path
        if self.upstream_root and (path == self.upstream_root or path.startswith(self.upstream_root + "/")):
            path = path[len(self.upstream_root):]
        return {**obj, "url": self.base + (path if path.strip("/") else "")}


# --- reading parts ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    """One text found in a body: the A2A message or artifact that holds it (None when the
    holder has no id), and whether it is a whole value (a `data` or `metadata` string)
    rather than text that a stream may continue in a later event."""

    holder: tuple[str, str | None]
    part: Part
    whole: bool = False


def _message(value: Any, where: Path, out: list[_Text], *, echo: bool = False) -> None:
    """`echo`: a message of a task's history, where the callers' messages are skipped.
    Anywhere else a message is read whatever role it claims: an agent labelling its own
    reply `user` is not let past."""
    message = _object(value, where)
    role = message.get("role")
    if isinstance(role, bool) or (role is not None and role not in _ROLES):
        raise _shape((*where, "role"), "ROLE_USER or ROLE_AGENT (0.3: user or agent)")
    if echo and role in _USER_ROLES:
        return
    holder = ("message", _id(message, "messageId"))
    _parts(message.get("parts"), (*where, "parts"), holder, out)
    _metadata(message, where, out, holder)


def _parts(value: Any, where: Path, holder: tuple[str, str | None], out: list[_Text]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise _shape(where, "an array")
    for n, item in enumerate(value):
        item_where: Path = (*where, n)
        part = _object(item, item_where)
        text = part.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise _shape((*item_where, "text"), "a string")
            out.append(_Text(holder, Part(text, (*item_where, "text"))))
        if "data" in part:
            _leaves(part["data"], (*item_where, "data"), holder, out)
        _metadata(part, item_where, out, holder)
        _text_file(part, item_where, holder, out)


def _text_file(part: dict[str, Any], where: Path, holder: tuple[str, str | None], out: list[_Text]) -> None:
    """A text file sent inline (1.0: `raw` with a text `mediaType`; 0.3: a `file` with
    `bytes` and a text `mimeType`) is read as text: otherwise it would carry words past
    every rule. Such bytes that are not base64 of UTF-8 are refused, never passed on
    unread. A file by `url`/`uri`, or of another media type, is not text."""
    if isinstance(part.get("raw"), str):
        media, data_where = part.get("mediaType"), (*where, "raw")
        data = part["raw"]
    elif isinstance(part.get("file"), dict) and isinstance(part["file"].get("bytes"), str):
        media, data_where = part["file"].get("mimeType"), (*where, "file", "bytes")
        data = part["file"]["bytes"]
    else:
        return
    if not is_text_media(media):
        return
    text = decode_text_file(data)
    if text is None:
        raise _shape(data_where, f"base64 of UTF-8 text (the media type is {media})")
    out.append(_Text(holder, Part(text, (*data_where, EMBEDDED_TEXT))))


def _metadata(obj: dict[str, Any], where: Path, out: list[_Text], holder: tuple[str, str | None] = ("metadata", None),
              ) -> None:
    value = obj.get("metadata")
    if value is not None:
        _leaves(_object(value, (*where, "metadata")), (*where, "metadata"), holder, out)


def _leaves(value: Any, where: Path, holder: tuple[str, str | None], out: list[_Text]) -> None:
    out.extend(_Text(holder, Part(text, path), whole=True) for text, path in string_leaves(value, where))


def _result(value: Any, where: Path, out: list[_Text]) -> None:
    """A result: a Task, Message, status or artifact update (0.3), the 1.0 wrapper of one,
    or a ListTasks page: every part of every agent message and artifact in it."""
    obj = _object(value, where)
    for key in _WRAPPERS:
        if key in obj:
            _carried(obj[key], (*where, key), out)
    tasks = obj.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, list):
            raise _shape((*where, "tasks"), "an array")
        for n, task in enumerate(tasks):
            _carried(task, (*where, "tasks", n), out)
    _carried(obj, where, out)


def _carried(value: Any, where: Path, out: list[_Text]) -> None:
    """A Task, Message, status or artifact update, in either version: read by the members
    it has, whichever kind it claims to be, so that nothing it carries passes unread."""
    obj = _object(value, where)
    if "parts" in obj:
        _message(obj, where, out)
    status = obj.get("status")
    if isinstance(status, dict) and status.get("message") is not None:
        _message(status["message"], (*where, "status", "message"), out)
    elif status is not None and not isinstance(status, dict):
        raise _shape((*where, "status"), "an object")
    if obj.get("artifact") is not None:
        _artifact(obj["artifact"], (*where, "artifact"), out)
    for key, read in (("artifacts", _artifact), ("history", _history)):
        items = obj.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise _shape((*where, key), "an array")
        for n, item in enumerate(items):
            read(item, (*where, key, n), out)
    if "parts" not in obj:
        _metadata(obj, where, out)


def _history(value: Any, where: Path, out: list[_Text]) -> None:
    _message(value, where, out, echo=True)


def _artifact(value: Any, where: Path, out: list[_Text]) -> None:
    artifact = _object(value, where)
    holder = ("artifact", _id(artifact, "artifactId"))
    for key in ("name", "description"):
        text = artifact.get(key)
        if isinstance(text, str):
            out.append(_Text(holder, Part(text, (*where, key)), whole=True))
    _parts(artifact.get("parts"), (*where, "parts"), holder, out)
    _metadata(artifact, where, out, holder)


def _card(value: Any, where: Path, out: list[_Text]) -> None:
    """An Agent Card's prose (GetExtendedAgentCard): what a caller's model may read about
    the agent, where instructions can hide as in a tool's description."""
    card = _object(value, where)
    holder = ("card", None)
    for key in ("name", "description"):
        if isinstance(card.get(key), str):
            out.append(_Text(holder, Part(card[key], (*where, key)), whole=True))
    skills = card.get("skills") or []
    if not isinstance(skills, list):
        raise _shape((*where, "skills"), "an array")
    for n, skill in enumerate(skills):
        skill_where: Path = (*where, "skills", n)
        obj = _object(skill, skill_where)
        for key in ("name", "description"):
            if isinstance(obj.get(key), str):
                out.append(_Text(holder, Part(obj[key], (*skill_where, key)), whole=True))
        if obj.get("examples") is not None:
            _leaves(obj["examples"], (*skill_where, "examples"), holder, out)


def _response(value: Any, where: Path, out: list[_Text], spec: _Method | None) -> None:
    """One JSON-RPC response: its result, or its error's message and data."""
    obj = _object(value, where)
    if obj.get("error") is not None:
        error = _object(obj["error"], (*where, "error"))
        if isinstance(error.get("message"), str):
            out.append(_Text(("error", None), Part(error["message"], (*where, "error", "message")), whole=True))
        if error.get("data") is not None:
            _leaves(error["data"], (*where, "error", "data"), ("error", None), out)
        return
    if "result" not in obj:
        raise BodyShapeError(f"{format_path(where)}: expected a JSON-RPC response (a result or an error)")
    result = obj["result"]
    if result is None:
        return
    if spec is not None and spec.card:
        _card(result, (*where, "result"), out)
    else:
        _result(result, (*where, "result"), out)


def _grouped(found: Iterable[_Text]) -> list[tuple[Part, ...]]:
    """The parts, one group per holder, in the order the holders first appear."""
    groups: dict[tuple[str, str | None] | int, list[Part]] = {}
    for n, text in enumerate(found):
        key = text.holder if text.holder[1] is not None else n  # a holder without an id is its own
        groups.setdefault(key, []).append(text.part)
    return [tuple(part for part in parts if part.text) for parts in groups.values() if any(p.text for p in parts)]


def _messages(found: list[_Text]) -> tuple[Message, ...]:
    return tuple(Message(role="assistant", parts=parts) for parts in _grouped(found))


def _id(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value else None


# --- streaming -------------------------------------------------------------------------


class A2AStreamReader:
    """One A2A stream, event by event (see `StreamReader`): each event is a whole JSON-RPC
    response. The text of one artifact, or of one message, is one channel across events
    (an artifact's chunks arrive with `append`); a `data` or `metadata` string is a channel
    of its own. It remembers the task the stream is about, to end it as a failed task."""

    def __init__(self, request_id: str | int | None, spec: _Method | None) -> None:
        self._id = request_id
        self._legacy = spec is not None and spec.version == "0.3"
        self._task: tuple[str | None, str | None] | None = None  # (task id, context id) of the first result
        self._events = 0

    def deltas(self, event: StreamEvent) -> list[StreamDelta]:
        n, self._events = self._events, self._events + 1
        if event.json is None:
            if event.data.strip():
                raise BodyShapeError(f"stream event {n}: data is not JSON")
            return []  # a comment or keep-alive
        if isinstance(event.json, dict):
            if self._id is None and isinstance(event.json.get("id"), (str, int)):
                self._id = event.json["id"]
            self._remember_task(event.json.get("result"))
        found: list[_Text] = []
        try:
            _response(event.json, (), found, None)
        except BodyShapeError as error:
            raise BodyShapeError(f"stream event {n}: {error}") from None
        out = []
        for text in found:
            if not text.part.text:
                continue
            channel = (*text.holder, "text") if text.holder[1] is not None and not text.whole else ("event", n, *text.part.path)
            out.append(StreamDelta(channel=_str_channel(channel), kind=PartKind.TEXT, text=text.part.text,
                                   path=text.part.path))
        return out

    def _remember_task(self, result: Any) -> None:
        if self._task is None:
            self._task = _task_of(result)

    def render(self, event: StreamEvent, json: Any) -> bytes:
        return render_event(orjson.dumps(json).decode("utf-8"), event.event)

    def released(self, event: StreamEvent) -> None:
        """Nothing to track: a failed status for a task the client has not seen is still read."""

    def blocked(self, message: str, respond: str | None) -> bytes:
        if respond not in (None, "refusal", "error"):
            raise ValueError(f"respond must be None, 'refusal' or 'error', not {respond!r}")
        if respond != "refusal":
            return _render(_error(self._id, 403, message, "firewall_blocked"))
        if self._task is None or self._task[0] is None:
            result = _reply(message, self._legacy, None, self._task[1] if self._task else None)
            event = {"message": result} if not self._legacy else result
        else:
            task_id, context_id = self._task[0], self._task[1] or ""
            status = {"state": "failed" if self._legacy else "TASK_STATE_FAILED",
                      "message": _reply(message, self._legacy, task_id, context_id), "timestamp": _now()}
            if self._legacy:
                event = {"kind": "status-update", "taskId": task_id, "contextId": context_id, "status": status,
                         "final": True}
            else:
                event = {"statusUpdate": {"taskId": task_id, "contextId": context_id, "status": status}}
        return _render({"jsonrpc": "2.0", "id": self._id, "result": event})

    def failed(self, message: str) -> bytes:
        return _render(_error(self._id, 502, message, "upstream_disconnected"))

    def tool_calls(self) -> list[dict[str, Any]]:
        return []  # A2A has no tool calls: its parts are text, data and files


def _str_channel(channel: tuple[Any, ...]) -> tuple[str | int, ...]:
    return tuple(item if isinstance(item, (str, int)) else str(item) for item in channel)


def _render(response: dict[str, Any]) -> bytes:
    # An error goes in an `error` event, as the SDK's server sends it (its client raises it).
    return render_event(orjson.dumps(response).decode("utf-8"), "error" if "error" in response else None)


# --- the firewall's own answers --------------------------------------------------------


def _error(request_id: str | int | None, status: int, message: str, code: str | None) -> dict[str, Any]:
    if status in (401, 403, 429):
        rpc_code = FIREWALL_REFUSED
    elif status == 404:
        rpc_code = _METHOD_NOT_FOUND
    elif status >= 500:
        rpc_code = _INTERNAL_ERROR
    else:
        rpc_code = _INVALID_REQUEST
    # ErrorInfo, as A2A 1.0 details an error: the SDK hands its metadata to the exception.
    info = {"@type": _ERROR_INFO, "reason": (code or f"http_{status}").upper(), "domain": "agent-firewall",
            "metadata": {"status": str(status), **({"code": code} if code else {})}}
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": rpc_code, "message": message, "data": [info]}}


def _task_of(result: Any) -> tuple[str | None, str | None] | None:
    """(task id, context id) of a result: a Task, a Message or an update, wrapped (1.0)
    or not (0.3). None: not a result that names either."""
    if not isinstance(result, dict):
        return None
    for key in _WRAPPERS:
        if isinstance(result.get(key), dict):
            result = result[key]
            break
    task_id = _id(result, "taskId") or (_id(result, "id") if "status" in result else None)
    context_id = _id(result, "contextId")
    return (task_id, context_id) if task_id or context_id else None


def _refused_task(body: Any) -> tuple[str | None, str | None] | None:
    """The task (and context) a refusal is about: the one the request continues or asks
    for, or the one the blocked answer (or buffered stream) was about."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("params"), dict):  # the request
        params = body["params"]
        message = params.get("message")
        if isinstance(message, dict):
            return _id(message, "taskId"), _id(message, "contextId")
        return _id(params, "id"), None
    events = body.get(_STREAM_KEY) if "jsonrpc" not in body else None
    for answer in events if isinstance(events, list) else [body]:
        found = _task_of(answer.get("result")) if isinstance(answer, dict) else None
        if found is not None:
            return found
    return None


def _refusal(text: str, legacy: bool, task: tuple[str | None, str | None] | None) -> dict[str, Any]:
    """A task in state failed whose status message is `text`, or a reply message where
    there is no task."""
    task_id, context_id = task or (None, None)
    if task_id is None:
        return _reply(text, legacy, None, context_id)
    failed = {"id": task_id, "contextId": context_id or "",
              "status": {"state": "failed" if legacy else "TASK_STATE_FAILED",
                         "message": _reply(text, legacy, task_id, context_id), "timestamp": _now()}}
    return {**failed, "kind": "task"} if legacy else failed


def _reply(text: str, legacy: bool, task_id: str | None, context_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"messageId": f"afw-{secrets.token_hex(8)}"}
    if task_id:
        message["taskId"] = task_id
    if context_id:
        message["contextId"] = context_id
    if legacy:
        return {**message, "kind": "message", "role": "agent", "parts": [{"kind": "text", "text": text}]}
    return {**message, "role": "ROLE_AGENT", "parts": [{"text": text}]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
