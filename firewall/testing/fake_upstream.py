"""A fake LLM upstream that speaks OpenAI Chat Completions and Anthropic Messages.

The integration tests, the demo and the benchmarks all put the firewall between a real
SDK client and this server. It answers from a script of reply rules (text, a tool call,
or an HTTP error, each optionally chosen by a substring of the last user message and
optionally delayed), streams the way each provider streams, and records every request
that reached it so a test can assert what the firewall let through.

For the streaming inspector's tests a rule can also shape the stream precisely: `raw`
writes hand-made SSE bytes verbatim, one write per item (to split an event anywhere,
even inside a UTF-8 character); `drop_after` cuts the connection mid-stream; `repeat`
and `events` make long streams with an exact number of content events.

Controls, in-process: `fake.script([...])`, `fake.add_reply(...)`, `fake.reset()`,
`fake.received`. Out of process (demo, benchmarks): GET /_fake/requests,
POST /_fake/script (a JSON list of rules), POST /_fake/reset.

Run it alone with `python -m firewall.testing.fake_upstream --listen 127.0.0.1:9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from firewall.testing.servers import ServerThread

_ECHO_LIMIT: Final = 100
_JSON: Final = "application/json"
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
# One piece per word, whitespace kept with the word that follows it, so the pieces
# concatenate back to exactly the original text.
_PIECE: Final = re.compile(r"\s*\S+|\s+$")
# A raw reply sleeps this long between items by default: long enough that each item
# arrives as a read of its own on loopback, which is the point of a raw reply.
_RAW_CHUNK_DELAY: Final = 0.02


class Reply(BaseModel):
    """One scripted reply rule.

    A rule is an error reply (`status`, optional `error` message), a completion (`text`,
    a tool call (`tool` name + `arguments`), or both), or a `raw` stream. A rule with
    none of them is the default echo reply (useful with `delay`). `when` restricts the
    rule to requests whose last user-side message contains that substring; `times`
    makes the rule expire after that many uses (a tool call first, then the final answer).

    Shaping a stream:
    - `raw`: answer 200 `text/event-stream` whatever the request's `stream` flag, and
      write each item verbatim as a write of its own. Over JSON an item is a string
      (sent as UTF-8) or `{"b64": "..."}` for arbitrary bytes.
    - `chunk_delay`: seconds slept between streamed writes; None means 0, or 0.02 for
      `raw` (so that each item arrives as a read of its own).
    - `drop_after`: a streamed reply (or raw) aborts the connection after that many
      events (raw items): no terminating chunk, no `[DONE]`, so the client sees a
      broken chunked body. A stream shorter than that is written whole and then
      aborted the same way. A non-streamed completion ignores it.
    - `repeat`: the text is `text` repeated that many times, joined by a space.
    - `events`: the text streams as exactly that many content events, split as evenly
      as possible by characters (code points, so never inside a character or a
      surrogate pair), instead of one per word.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: str | None = None
    text: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    status: int | None = Field(default=None, ge=400, le=599)
    error: str | None = None
    raw: list[bytes] | None = None
    delay: float = Field(default=0.0, ge=0.0)
    chunk_delay: float | None = Field(default=None, ge=0.0)
    drop_after: int | None = Field(default=None, ge=0)
    repeat: int = Field(default=1, ge=1)
    events: int | None = Field(default=None, ge=1)
    times: int | None = Field(default=None, ge=1)

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_items(cls, value: Any) -> Any:
        if value is None or not isinstance(value, list | tuple):
            return value  # None, or let pydantic report the wrong type
        return [_raw_item(index, item) for index, item in enumerate(value)]

    @model_validator(mode="after")
    def _one_kind(self) -> Reply:
        if self.status is not None and (self.text is not None or self.tool is not None):
            raise ValueError("a reply is either an error (status) or a completion (text/tool), not both")
        if self.error is not None and self.status is None:
            raise ValueError("'error' needs a 'status'")
        if self.arguments and self.tool is None:
            raise ValueError("'arguments' needs a 'tool' name")
        if self.raw is not None and (self.text is not None or self.tool is not None or self.status is not None):
            raise ValueError("a 'raw' reply is written verbatim; it cannot also have text, tool or status")
        if self.drop_after is not None and self.status is not None:
            raise ValueError("'drop_after' cuts a stream; an error reply (status) has none")
        if self.repeat != 1 and self.text is None:
            raise ValueError("'repeat' needs a 'text' to repeat")
        if self.events is not None:
            if self.text is None:
                raise ValueError("'events' needs a 'text' to split")
            length = len(self.full_text or "")
            if self.events > length:
                raise ValueError(
                    f"'events' is {self.events} but the text has only {length} characters to split"
                )
        return self

    @property
    def full_text(self) -> str | None:
        """The text as sent: `text` repeated `repeat` times, or None."""
        if self.text is None:
            return None
        return " ".join([self.text] * self.repeat)


RuleLike = Reply | Mapping[str, Any] | str
_RULES: Final = TypeAdapter(list[Reply])


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """A request as it reached the upstream. Header names are lower-cased."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any  # the parsed body, or None when it was not JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body.decode("utf-8", errors="replace"),
            "json": self.json,
        }


class FakeUpstream:
    """The fake provider. Mount `.app` in a `ServerThread` (or use `run_fake_upstream`)."""

    def __init__(self, rules: Iterable[RuleLike] = (), *, keep: int | None = None) -> None:
        """`keep`: remember only the last `keep` requests (a long benchmark run would
        otherwise hold every body it was sent); None keeps them all."""
        self._lock = threading.Lock()
        self._rules: list[Reply] = []
        self._uses: list[int] = []
        self._keep = keep
        self._received: deque[ReceivedRequest] = deque(maxlen=keep)
        self._ids = itertools.count(1)
        # Responses: True answers a `previous_response_id` this fake did not issue as
        # OpenAI does (400 previous_response_not_found); off by default, so that a test may
        # name any id.
        self.known_responses_only = False
        self._responses: set[str] = set()
        self.script(rules)
        self.app = self._build_app()

    # -- controls ------------------------------------------------------------------

    def script(self, rules: Iterable[RuleLike]) -> None:
        """Replace the script. A rule is a `Reply`, a mapping of its fields, or a text."""
        parsed = [_to_reply(rule) for rule in rules]
        with self._lock:
            self._rules = parsed
            self._uses = [0] * len(parsed)

    def add_reply(
        self,
        text: str | None = None,
        *,
        when: str | None = None,
        tool: str | None = None,
        arguments: Mapping[str, Any] | None = None,
        status: int | None = None,
        error: str | None = None,
        raw: Sequence[bytes | str] | None = None,
        delay: float = 0.0,
        chunk_delay: float | None = None,
        drop_after: int | None = None,
        repeat: int = 1,
        events: int | None = None,
        times: int | None = None,
    ) -> Reply:
        """Append one rule (after the existing ones: the first matching rule wins)."""
        reply = Reply(
            when=when,
            text=text,
            tool=tool,
            arguments=dict(arguments or {}),
            status=status,
            error=error,
            raw=None if raw is None else list(raw),
            delay=delay,
            chunk_delay=chunk_delay,
            drop_after=drop_after,
            repeat=repeat,
            events=events,
            times=times,
        )
        with self._lock:
            self._rules.append(reply)
            self._uses.append(0)
        return reply

    def reset(self) -> None:
        """Forget the script and the received requests; accept any previous response id."""
        with self._lock:
            self._rules = []
            self._uses = []
            self._received = deque(maxlen=self._keep)
            self.known_responses_only = False

    @property
    def received(self) -> list[ReceivedRequest]:
        """A snapshot of every request received so far (control routes excluded)."""
        with self._lock:
            return list(self._received)

    def clear_received(self) -> None:
        with self._lock:
            self._received = deque(maxlen=self._keep)

    # -- choosing a reply ----------------------------------------------------------

    def _choose(self, user_text: str) -> Reply | None:
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.times is not None and self._uses[index] >= rule.times:
                    continue
                if rule.when is None or rule.when in user_text:
                    self._uses[index] += 1
                    return rule
        return None

    def _record(self, request: web.Request, body: bytes, parsed: Any) -> None:
        received = ReceivedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            json=parsed,
        )
        with self._lock:
            self._received.append(received)

    def _next_id(self) -> int:
        return next(self._ids)

    # -- HTTP ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/responses", _Responses.handler(self))
        for method, stream in (("generateContent", False), ("streamGenerateContent", True)):
            app.router.add_post(r"/{version:v1|v1beta|v1alpha}/{model:(?:models|tunedModels)/[^/:]+}:" + method,
                                _Gemini.handler(self, stream=stream))
        app.router.add_get("/_fake/requests", self._get_requests)
        app.router.add_post("/_fake/script", self._post_script)
        app.router.add_post("/_fake/reset", self._post_reset)
        # Anything else is recorded too, so a test can see a request that went astray.
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def _read(self, request: web.Request) -> tuple[bytes, Any]:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        self._record(request, body, parsed)
        return body, parsed

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, parsed = await self._read(request)
        return await _OpenAI(self, request, body, parsed).respond()

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, parsed = await self._read(request)
        return await _Anthropic(self, request, body, parsed).respond()

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        await self._read(request)
        return _json_response(
            _openai_error(404, f"fake upstream has no route {request.method} {request.path}"),
            status=404,
        )

    async def _get_requests(self, request: web.Request) -> web.StreamResponse:
        return _json_response([item.to_json() for item in self.received])

    async def _post_script(self, request: web.Request) -> web.StreamResponse:
        try:
            rules = _RULES.validate_json(await request.read())
        except ValidationError as exc:
            return _json_response({"error": f"invalid script: {exc}"}, status=400)
        self.script(rules)
        return _json_response({"rules": len(rules)})

    async def _post_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json_response({"reset": True})


# -- the two providers ----------------------------------------------------------------


class _Provider:
    """What both providers share: pick a reply, delay, then answer or stream."""

    messages_key = "messages"

    def __init__(self, fake: FakeUpstream, request: web.Request, raw: bytes, body: Any) -> None:
        self.fake = fake
        self.request = request
        self.raw = raw
        self.body = body
        self.number = fake._next_id()
        self.created = int(time.time())
        self.user_text = ""
        self.text_events: int | None = None

    async def respond(self) -> web.StreamResponse:
        if not isinstance(self.body, dict):
            what = "not valid JSON" if self.body is None else "not a JSON object"
            return _json_response(self.error_body(400, f"request body is {what}"), status=400)
        self.user_text = _last_user_text(self.body.get(self.messages_key))
        reply = self.fake._choose(self.user_text)
        if reply is not None and reply.delay:
            await asyncio.sleep(reply.delay)
        if reply is not None and reply.status is not None:
            message = reply.error or f"scripted error {reply.status}"
            return _json_response(self.error_body(reply.status, message), status=reply.status)
        if reply is not None and reply.raw is not None:
            delay = _RAW_CHUNK_DELAY if reply.chunk_delay is None else reply.chunk_delay
            return await self._stream(reply.raw, delay, reply.drop_after)
        text, tool, arguments = self._content(reply)
        model = str(self.body.get("model") or "fake-model")
        if self.body.get("stream") is True:
            chunk_delay = reply.chunk_delay if reply is not None and reply.chunk_delay is not None else 0.0
            drop_after = reply.drop_after if reply is not None else None
            self.text_events = reply.events if reply is not None else None
            return await self._stream(self.events(model, text, tool, arguments), chunk_delay, drop_after)
        return _json_response(self.completion(model, text, tool, arguments))

    def _content(self, reply: Reply | None) -> tuple[str | None, str | None, dict[str, Any]]:
        if reply is None or (reply.text is None and reply.tool is None):
            return "ok: " + self.user_text[:_ECHO_LIMIT], None, {}
        return reply.full_text, reply.tool, reply.arguments

    def text_pieces(self, text: str | None) -> list[str]:
        """The streamed pieces of the reply text: one per word, or `events` of them."""
        if text and self.text_events is not None:
            return _split_evenly(text, self.text_events)
        return _pieces(text)

    async def _stream(
        self, items: Iterable[bytes], chunk_delay: float, drop_after: int | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(self.request)
        for count, item in enumerate(items):
            if drop_after is not None and count >= drop_after:
                break
            if count and chunk_delay:
                await asyncio.sleep(chunk_delay)
            try:
                await response.write(item)
            except ConnectionResetError:
                return response  # the client stopped reading (a firewall that blocked): normal
            await _drained(self.request)
        if drop_after is None:
            await response.write_eof()
            return response
        if chunk_delay:
            await asyncio.sleep(chunk_delay)  # the drop comes as one more item would
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        # aiohttp's write_eof() on the aborted transport then raises a ConnectionError,
        # which it takes for a client that went away: no traceback, no access log entry.
        return response

    def prompt_tokens(self) -> int:
        return max(1, len(self.raw) // 4)  # rough and cheap: the fake need not tokenize

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def completion(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> Iterator[bytes]:
        raise NotImplementedError


class _OpenAI(_Provider):
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return _openai_error(status, message)

    def _ids(self) -> tuple[str, str]:
        return f"chatcmpl-fake{self.number:08d}", f"call_fake{self.number:08d}"

    def completion(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
        completion_id, call_id = self._ids()
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        if tool is not None:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool, "arguments": orjson.dumps(arguments).decode()},
                }
            ]
        completion_tokens = _tokens(text, tool, arguments)
        prompt_tokens = self.prompt_tokens()
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool is not None else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    def events(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> Iterator[bytes]:
        completion_id, call_id = self._ids()
        options = self.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data: dict[str, Any] = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return b"data: " + orjson.dumps(data) + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for piece in self.text_pieces(text):
            yield chunk({"content": piece})
        if tool is not None:
            yield chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
                    ]
                }
            )
            for piece in _pieces(orjson.dumps(arguments).decode()):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if tool is not None else "stop")
        if include_usage:
            completion_tokens = _tokens(text, tool, arguments)
            usage = {
                "prompt_tokens": self.prompt_tokens(),
                "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens() + completion_tokens,
            }
            yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"


class _Anthropic(_Provider):
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
            "request_id": f"req_fake{self.number:08d}",
        }

    def _ids(self) -> tuple[str, str]:
        return f"msg_fake{self.number:08d}", f"toolu_fake{self.number:08d}"

    def _content_blocks(self, text: str | None, tool: str | None, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if text is not None:
            blocks.append({"type": "text", "text": text})
        if tool is not None:
            blocks.append({"type": "tool_use", "id": self._ids()[1], "name": tool, "input": arguments})
        return blocks

    def completion(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self._ids()[0],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._content_blocks(text, tool, arguments),
            "stop_reason": "tool_use" if tool is not None else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens(), "output_tokens": _tokens(text, tool, arguments)},
        }

    def events(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> Iterator[bytes]:
        message = {
            "id": self._ids()[0],
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens(), "output_tokens": 1},
        }
        yield _sse("message_start", {"type": "message_start", "message": message})
        for index, block in enumerate(self._content_blocks(text, tool, arguments)):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = ({"type": "text_delta", "text": piece} for piece in self.text_pieces(block["text"]))
            else:
                start = {**block, "input": {}}
                deltas = (
                    {"type": "input_json_delta", "partial_json": piece}
                    for piece in _pieces(orjson.dumps(block["input"]).decode())
                )
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            if index == 0:
                yield _sse("ping", {"type": "ping"})  # the real API pings here; clients must skip it
            for delta in deltas:
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool is not None else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": _tokens(text, tool, arguments)},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})


class _Gemini(_Provider):
    """Gemini generateContent and streamGenerateContent: the model and whether to stream
    come from the route, the turns from `contents`. Chunks are whole
    GenerateContentResponse objects, one per SSE event, as with `?alt=sse`."""

    def __init__(self, fake: FakeUpstream, request: web.Request, raw: bytes, body: Any, *, model: str,
                 stream: bool) -> None:
        super().__init__(fake, request, raw, body)
        self.model = model.removeprefix("models/")
        self.stream = stream

    @classmethod
    def handler(cls, fake: FakeUpstream, *, stream: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw, parsed = await fake._read(request)
            return await cls(fake, request, raw, parsed, model=request.match_info["model"], stream=stream).respond()

        return handle

    async def respond(self) -> web.StreamResponse:
        if isinstance(self.body, dict):
            # The shared flow reads the model, the stream flag and the turns the OpenAI
            # way; here the first two come from the route.
            self.body = {**self.body, "model": self.model, "stream": self.stream,
                         "messages": self._turns(self.body.get("contents"))}
        return await super().respond()

    @staticmethod
    def _turns(contents: Any) -> list[dict[str, str]]:
        """Each content as {role, content}; a turn with a function response is a tool
        turn whose text is the response as JSON (so `when` sees tool results)."""
        turns: list[dict[str, str]] = []
        for content in contents if isinstance(contents, list) else ():
            if not isinstance(content, dict):
                continue
            texts: list[str] = []
            tool = False
            for part in content.get("parts") or ():
                if not isinstance(part, dict):
                    continue
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                response = part.get("functionResponse", part.get("function_response"))
                if isinstance(response, dict):
                    tool = True
                    texts.append(orjson.dumps(response.get("response")).decode())
            role = "tool" if tool else "user" if content.get("role", "user") == "user" else "model"
            turns.append({"role": role, "content": "\n".join(texts)})
        return turns

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        statuses = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
        default = "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"
        return {"error": {"code": status, "message": message, "status": statuses.get(status, default)}}

    def _parts(self, text: str | None, tool: str | None, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if text is not None:
            parts.append({"text": text})
        if tool is not None:
            parts.append({"functionCall": {"name": tool, "args": arguments}})
        return parts

    def _response(self, parts: list[dict[str, Any]], finished: bool, tokens: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        response: dict[str, Any] = {"candidates": [candidate]}
        if finished:
            # Gemini finishes a function call with STOP too: it has no tool-call reason.
            candidate["finishReason"] = "STOP"
            prompt = self.prompt_tokens()
            response["usageMetadata"] = {"promptTokenCount": prompt, "candidatesTokenCount": tokens,
                                         "totalTokenCount": prompt + tokens}
        return {**response, "modelVersion": self.model, "responseId": f"fake{self.number:08d}"}

    def completion(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._response(self._parts(text, tool, arguments), True, _tokens(text, tool, arguments))

    def events(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> Iterator[bytes]:
        def chunk(parts: list[dict[str, Any]], finished: bool = False) -> bytes:
            data = self._response(parts, finished, _tokens(text, tool, arguments))
            return b"data: " + orjson.dumps(data) + b"\r\n\r\n"

        for piece in self.text_pieces(text):
            yield chunk([{"text": piece}])
        if tool is not None:
            yield chunk(self._parts(None, tool, arguments))  # a call arrives whole, never in pieces
        yield chunk([{"text": ""}], finished=True)


class _Responses(_Provider):
    """OpenAI Responses: the turns come from `input` (a string, or items: messages, and
    tool outputs as tool turns so `when` sees them). A stream is the API's typed events:
    every text in deltas, then stated whole again when done, and the whole response last."""

    @classmethod
    def handler(cls, fake: FakeUpstream) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw, parsed = await fake._read(request)
            return await cls(fake, request, raw, parsed).respond()

        return handle

    async def respond(self) -> web.StreamResponse:
        if isinstance(self.body, dict):
            previous = self.body.get("previous_response_id")
            if self.fake.known_responses_only and isinstance(previous, str) and previous not in self.fake._responses:
                error = {"message": f"Previous response with id '{previous}' not found.", "type": "invalid_request_error",
                         "param": "previous_response_id", "code": "previous_response_not_found"}
                return _json_response({"error": error}, status=400)
            self.body = {**self.body, "messages": self._turns(self.body.get("input"))}
        return await super().respond()

    @staticmethod
    def _turns(given: Any) -> list[dict[str, Any]]:
        if isinstance(given, str):
            return [{"role": "user", "content": given}]
        turns: list[dict[str, Any]] = []
        for item in given if isinstance(given, list) else ():
            if not isinstance(item, dict):
                continue
            if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                turns.append({"role": "tool", "content": item.get("output")})
            elif isinstance(item.get("role"), str):
                turns.append({"role": item["role"], "content": item.get("content")})
        return turns

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return _openai_error(status, message)

    def _output(self, text: str | None, tool: str | None, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = []
        if text is not None:
            output.append({"id": f"msg_fake{self.number:08d}", "type": "message", "role": "assistant",
                           "status": "completed",
                           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
        if tool is not None:
            output.append({"id": f"fc_fake{self.number:08d}", "type": "function_call", "status": "completed",
                           "call_id": f"call_fake{self.number:08d}", "name": tool,
                           "arguments": orjson.dumps(arguments).decode()})
        return output

    def _response(self, model: str, status: str, output: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
        prompt = self.prompt_tokens()
        conversation = self.body.get("conversation")
        if isinstance(conversation, str):
            conversation = {"id": conversation}
        self.fake._responses.add(f"resp_fake{self.number:08d}")
        return {
            "id": f"resp_fake{self.number:08d}", "object": "response", "created_at": self.created, "status": status,
            "error": None, "incomplete_details": None, "instructions": self.body.get("instructions"), "model": model,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": self.body.get("tools") or [],
            "temperature": None, "top_p": None, "previous_response_id": self.body.get("previous_response_id"),
            "conversation": conversation if isinstance(conversation, dict) else None,
            "usage": None if status != "completed" else {
                "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + tokens},
        }

    def completion(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._response(model, "completed", self._output(text, tool, arguments), _tokens(text, tool, arguments))

    def events(self, model: str, text: str | None, tool: str | None, arguments: dict[str, Any]) -> Iterator[bytes]:
        numbers = itertools.count()

        def event(kind: str, **fields: Any) -> bytes:
            return _sse(kind, {"type": kind, "sequence_number": next(numbers), **fields})

        output = self._output(text, tool, arguments)
        opening = self._response(model, "in_progress", [], 0)
        yield event("response.created", response=opening)
        yield event("response.in_progress", response=opening)
        for index, item in enumerate(output):
            at = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                part = item["content"][0]
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "content": []})
                yield event("response.content_part.added", **at, content_index=0, part={**part, "text": ""})
                for piece in self.text_pieces(part["text"]):
                    yield event("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
                yield event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[])
                yield event("response.content_part.done", **at, content_index=0, part=part)
            else:
                yield event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "arguments": ""})
                for piece in _pieces(item["arguments"]):
                    yield event("response.function_call_arguments.delta", **at, delta=piece)
                yield event("response.function_call_arguments.done", **at, arguments=item["arguments"])
            yield event("response.output_item.done", output_index=index, item=item)
        yield event("response.completed",
                    response=self._response(model, "completed", output, _tokens(text, tool, arguments)))


_OPENAI_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_ANTHROPIC_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -- helpers -------------------------------------------------------------------------------


def _to_reply(rule: RuleLike) -> Reply:
    if isinstance(rule, Reply):
        return rule
    if isinstance(rule, str):
        return Reply(text=rule)
    return Reply.model_validate(dict(rule))


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=_JSON)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str | None) -> list[str]:
    return _PIECE.findall(text) if text else []


def _split_evenly(text: str, parts: int) -> list[str]:
    """`text` in `parts` consecutive pieces whose lengths differ by at most one. A str
    indexes code points, so no piece ends inside a character (nor a surrogate pair:
    those exist only in UTF-16, and JSON's escaped pairs decode to one code point)."""
    size, extra = divmod(len(text), parts)
    pieces: list[str] = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _raw_item(index: int, item: Any) -> bytes:
    """One raw item as bytes: bytes as they are, a str as UTF-8, {"b64": ...} decoded."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, Mapping) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            return base64.b64decode(item["b64"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"raw item {index}: 'b64' is not valid base64: {exc}") from exc
    raise ValueError(f"raw item {index}: expected bytes, a string or {{\"b64\": \"...\"}}, got {item!r:.80}")


async def _drained(request: web.Request) -> None:
    """Wait until the transport has handed everything written to the kernel, so a
    following sleep really separates this write from the next on the wire."""
    transport = request.transport
    while transport is not None and not transport.is_closing() and transport.get_write_buffer_size():
        await asyncio.sleep(0.001)


def _tokens(text: str | None, tool: str | None, arguments: dict[str, Any]) -> int:
    size = len(text or "") + (len(tool) + len(orjson.dumps(arguments)) if tool is not None else 0)
    return max(1, size // 4)


def _last_user_text(messages: Any) -> str:
    """The text of the last user-side message: role user, or an OpenAI role tool (a
    tool result, which Anthropic carries in a user message), so a `when` rule sees the
    same thing on both providers in a tool loop."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") in ("user", "tool"):
            return _content_text(message.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_result":
            texts.append(_content_text(block.get("content")))
    return "\n".join(texts)


# -- running it --------------------------------------------------------------------------


@contextmanager
def run_fake_upstream(
    rules: Iterable[RuleLike] = (), *, port: int = 0, keep: int | None = None
) -> Iterator[tuple[FakeUpstream, ServerThread]]:
    """A started fake upstream on 127.0.0.1: `with run_fake_upstream() as (fake, srv):`."""
    fake = FakeUpstream(rules, keep=keep)
    with ServerThread(fake.app, port=port, name="fake-upstream") as server:
        yield fake, server


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m firewall.testing.fake_upstream",
        description="A fake OpenAI/Anthropic upstream for tests, the demo and benchmarks.",
    )
    parser.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 9100), metavar="HOST:PORT")
    parser.add_argument("--script", type=Path, metavar="FILE.json", help="a JSON list of reply rules")
    parser.add_argument(
        "--keep", type=int, default=10_000, metavar="N", help="remember the last N requests (default 10000)"
    )
    args = parser.parse_args(argv)
    rules: list[Reply] = []
    if args.script is not None:
        try:
            rules = _RULES.validate_json(args.script.read_bytes())
        except (OSError, ValidationError) as exc:
            parser.error(f"--script {args.script}: {exc}")
    host, port = args.listen
    fake = FakeUpstream(rules, keep=args.keep)
    loop: asyncio.AbstractEventLoop | None = None
    try:
        import uvloop  # type: ignore[import-not-found]  # optional: faster as a benchmark upstream

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(
        fake.app,
        host=host,
        port=port,
        access_log=None,
        loop=loop,
        print=lambda *_: print(f"fake upstream listening on http://{host}:{port}", flush=True),
    )


if __name__ == "__main__":
    main()
