from __future__ import annotations

import asyncio
import base64
import gc
import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
from aiohttp import web
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from firewall.testing import FakeUpstream, ServerThread, run_fake_upstream


@dataclass
class _Response:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


def _http(method: str, url: str, *, json_body: Any = None, content: bytes | None = None) -> _Response:
    """A plain stdlib HTTP call, for the routes no SDK calls and for raw wire checks."""
    data = content if content is not None else (None if json_body is None else json.dumps(json_body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return _Response(response.status, headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return _Response(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, ServerThread]]:
    with run_fake_upstream() as running:
        yield running


@pytest.fixture
def fake(upstream: tuple[FakeUpstream, ServerThread]) -> FakeUpstream:
    upstream[0].reset()
    return upstream[0]


@pytest.fixture
def url(upstream: tuple[FakeUpstream, ServerThread]) -> str:
    return upstream[1].url


@pytest.fixture
def oai(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# -- OpenAI -------------------------------------------------------------------------------


def test_openai_text_reply_validates(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.script(["Hello from the fake."])
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_user("hi"))
    completion = ChatCompletion.model_validate(json.loads(raw.http_response.content))
    assert completion.choices[0].message.content == "Hello from the fake."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_openai_tool_call(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply(tool="get_weather", arguments={"city": "Paris", "days": 3})
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=_user("weather?"))
    completion = ChatCompletion.model_validate(json.loads(raw.http_response.content))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


def test_openai_stream_text_and_usage(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    text = "The quick  brown fox\njumps over the lazy dog. "
    fake.script([text])
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o", messages=_user("go"), stream=True, stream_options={"include_usage": True}
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5  # really incremental
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_openai_stream_tool_call(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply(tool="search", arguments={"query": "firewall for agents", "limit": 5})
    name, arguments, finish = "", "", None
    for chunk in oai.chat.completions.create(model="gpt-4o", messages=_user("find"), stream=True):
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.index == 0
            name += call.function.name or "" if call.function else ""
            arguments += call.function.arguments or "" if call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "search"
    assert json.loads(arguments) == {"query": "firewall for agents", "limit": 5}
    assert finish == "tool_calls"


def test_openai_stream_ends_with_done(fake: FakeUpstream, url: str) -> None:
    body = {"model": "m", "messages": _user("x"), "stream": True}
    response = _http("POST", url + "/v1/chat/completions", json_body=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e.removeprefix("data: "))["object"] == "chat.completion.chunk" for e in events[:-1])


def test_openai_scripted_error(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply(status=429, error="slow down")
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=_user("hi"))
    assert caught.value.status_code == 429
    assert caught.value.body == {"message": "slow down", "type": "rate_limit_exceeded", "param": None, "code": None}


# -- Anthropic ----------------------------------------------------------------------------


def test_anthropic_text_reply_validates(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.script(["Bonjour."])
    raw = ant.messages.with_raw_response.create(
        model="claude-test-1", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    message = Message.model_validate(json.loads(raw.http_response.content))
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Bonjour."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-test-1"


def test_anthropic_tool_call_with_text(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.add_reply("Let me look.", tool="get_weather", arguments={"city": "Oslo"})
    raw = ant.messages.with_raw_response.create(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "weather?"}]
    )
    message = Message.model_validate(json.loads(raw.http_response.content))
    assert message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text" and text.text == "Let me look."
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.input == {"city": "Oslo"}


def test_anthropic_stream_text(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    text = "Streaming, word by word, with  odd spacing. "
    fake.script([text])
    with ant.messages.stream(model="claude", max_tokens=64, messages=[{"role": "user", "content": "go"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == text and len(pieces) > 3
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"


def test_anthropic_stream_tool_call(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.add_reply(tool="lookup", arguments={"ids": [1, 2, 3], "deep": {"x": "y z"}})
    with ant.messages.stream(model="claude", max_tokens=64, messages=[{"role": "user", "content": "go"}]) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.name == "lookup"
    assert block.input == {"ids": [1, 2, 3], "deep": {"x": "y z"}}
    assert final.stop_reason == "tool_use"


def test_anthropic_stream_event_sequence(fake: FakeUpstream, url: str) -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}
    response = _http("POST", url + "/v1/messages", json_body=body)
    names = [e.split("\n")[0].removeprefix("event: ") for e in response.text.split("\n\n") if e]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_anthropic_scripted_error(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.add_reply(status=529, error="overloaded, try later")
    with pytest.raises(anthropic.APIStatusError) as caught:
        ant.messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "overloaded, try later"}


# -- the script ---------------------------------------------------------------------------


def test_first_matching_rule_wins_and_unmatched_echoes(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.script([{"when": "weather", "text": "sunny"}, {"when": "weather in", "text": "never"}])

    def ask(text: str) -> str | None:
        return oai.chat.completions.create(model="m", messages=_user(text)).choices[0].message.content

    assert ask("what is the weather in Rome") == "sunny"
    long = "tell me about " + "x" * 300
    assert ask(long) == "ok: " + long[:100]


def test_when_sees_tool_results_on_both_providers(
    fake: FakeUpstream, oai: openai.OpenAI, ant: anthropic.Anthropic
) -> None:
    fake.script([{"when": "temperature: 21", "text": "It is mild."}])
    openai_messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "temperature: 21"},
    ]
    reply = oai.chat.completions.create(model="m", messages=openai_messages)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "It is mild."
    anthropic_messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "temperature: 21"}]},
    ]
    message = ant.messages.create(model="c", max_tokens=5, messages=anthropic_messages)  # type: ignore[arg-type]
    assert message.content[0].text == "It is mild."  # type: ignore[union-attr]


def test_times_expires_a_rule(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.script([{"tool": "step", "times": 1}, "done"])
    first = oai.chat.completions.create(model="m", messages=_user("go")).choices[0]
    second = oai.chat.completions.create(model="m", messages=_user("go")).choices[0]
    assert first.finish_reason == "tool_calls" and second.message.content == "done"


def test_delay(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply("late", delay=0.3)
    started = time.perf_counter()
    assert oai.chat.completions.create(model="m", messages=_user("x")).choices[0].message.content == "late"
    assert time.perf_counter() - started >= 0.3


def test_keep_bounds_the_record() -> None:
    with run_fake_upstream(keep=2) as (fake, server):
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
        for text in ("one", "two", "three"):
            client.chat.completions.create(model="m", messages=_user(text))
        client.close()
    assert [r.json["messages"][-1]["content"] for r in fake.received] == ["two", "three"]


def test_invalid_rules_are_refused(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="either an error"):
        fake.script([{"status": 500, "text": "both"}])
    with pytest.raises(ValueError, match="extra"):
        fake.script([{"txt": "typo"}])


# -- recording ----------------------------------------------------------------------------


def test_received_records_what_reached_the_upstream(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model="m", messages=_user("record me"), extra_headers={"X-Agent-Id": "planner"})
    (request,) = fake.received
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["x-agent-id"] == "planner"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.body) == request.json
    assert request.json["messages"][-1] == {"role": "user", "content": "record me"}


def test_malformed_json_gets_a_provider_error_and_is_recorded(fake: FakeUpstream, url: str) -> None:
    response = _http("POST", url + "/v1/messages", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    (request,) = fake.received
    assert request.body == b"{not json" and request.json is None


def test_unknown_routes_are_recorded_and_404(fake: FakeUpstream, url: str) -> None:
    response = _http("POST", url + "/v1/embeddings", json_body={"input": "x"})
    assert response.status_code == 404
    assert "no route POST /v1/embeddings" in response.json()["error"]["message"]
    assert [r.path for r in fake.received] == ["/v1/embeddings"]


def test_http_controls(fake: FakeUpstream, url: str, oai: openai.OpenAI) -> None:
    script = [{"when": "ping", "text": "pong"}, {"status": 503, "error": "down"}]
    assert _http("POST", url + "/_fake/script", json_body=script).json() == {"rules": 2}
    assert oai.chat.completions.create(model="m", messages=_user("ping")).choices[0].message.content == "pong"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=_user("other"))
    received = _http("GET", url + "/_fake/requests").json()
    assert [r["json"]["messages"][-1]["content"] for r in received] == ["ping", "other"]
    assert received[0]["path"] == "/v1/chat/completions" and '"ping"' in received[0]["body"]
    assert _http("POST", url + "/_fake/reset", content=b"").json() == {"reset": True}
    assert _http("GET", url + "/_fake/requests").json() == []
    assert fake.received == []
    bad = _http("POST", url + "/_fake/script", json_body=[{"status": 99}])
    assert bad.status_code == 400 and "invalid script" in bad.json()["error"]


# -- ServerThread -------------------------------------------------------------------------


def _port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_thread_starts_and_stops_cleanly() -> None:
    cleaned = threading.Event()

    async def on_cleanup(app: web.Application) -> None:
        cleaned.set()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    app.on_cleanup.append(on_cleanup)
    gc.collect()  # what earlier tests left for the collector is not this server's
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ServerThread(app) as server:
            assert server.url.startswith("http://127.0.0.1:")
            assert _http("GET", server.url + "/").text == "hi"
            assert server.call(asyncio.sleep(0, result=42)) == 42
            port = server.port
        server.stop()  # a second stop is harmless
        gc.collect()
    assert cleaned.is_set()
    assert not _port_is_open(port)
    assert set(threading.enumerate()) - threads_before == set()  # (earlier tests' threads may end meanwhile)
    assert [str(w.message) for w in caught] == []


def test_server_thread_accepts_an_async_factory() -> None:
    loop_key = web.AppKey("loop", asyncio.AbstractEventLoop)

    async def make() -> web.Application:
        app = web.Application()
        app[loop_key] = asyncio.get_running_loop()
        return app

    with ServerThread(make) as server:
        assert server.app[loop_key] is server.loop


def test_server_thread_reports_a_port_in_use() -> None:
    with ServerThread(web.Application()) as first:
        with pytest.raises(RuntimeError, match="failed to start"):
            ServerThread(web.Application(), port=first.port).start()


def test_stop_does_not_hang_on_an_abandoned_stream() -> None:
    fake_here = FakeUpstream([{"text": "a " * 200, "chunk_delay": 0.05}])
    server = ServerThread(fake_here.app, shutdown_timeout=0.5).start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
    stream = client.chat.completions.create(model="m", messages=_user("x"), stream=True)
    next(iter(stream))
    started = time.perf_counter()
    server.stop()
    assert time.perf_counter() - started < 3
    stream.close()
    client.close()


# -- as a process -------------------------------------------------------------------------


def test_main_runs_as_a_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the script"}]))
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "firewall.testing.fake_upstream"),
            *("--listen", f"127.0.0.1:{port}", "--script", str(script)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening on" in process.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=_user("x"))
        assert reply.choices[0].message.content == "from the script"
        client.close()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


# -- shaping streams (raw, drop_after, repeat, events) ---------------------------------


async def _read_chunks(url: str, body: dict[str, Any]) -> tuple[list[bytes], BaseException | None]:
    """POST and collect the body read by read, as the reads came; with the error that
    ended the body, if one did."""
    reads: list[bytes] = []
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            try:
                async for data in response.content.iter_any():
                    reads.append(data)
            except aiohttp.ClientPayloadError as error:
                return reads, error
    return reads, None


def _boundaries(pieces: list[bytes]) -> set[int]:
    return set(itertools.accumulate(len(piece) for piece in pieces))


_STREAM_BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}


async def test_raw_items_arrive_as_separate_reads(fake: FakeUpstream, url: str) -> None:
    # One SSE event cut mid-JSON, one cut between "\n" and "\n", one cut inside "é".
    items = [b'data: {"a": "one', b' two"}\n', b"\ndata: caf\xc3", b"\xa9\n\n", b"data: [DONE]\n\n"]
    fake.add_reply(raw=items)
    reads, error = await _read_chunks(url + "/v1/chat/completions", _STREAM_BODY)
    assert error is None
    assert b"".join(reads) == b"".join(items)
    assert len(reads) >= len(items)
    # Every item ends a read: no two items were ever merged into one read.
    assert _boundaries(items) <= _boundaries(reads)
    assert b"".join(reads).decode("utf-8").count("café") == 1


def test_raw_split_inside_a_character_reaches_the_sdk_intact(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    def chunk(content: str) -> bytes:
        data = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
        }
        return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

    wire = chunk("naïve ") + chunk("café 😀") + b"data: [DONE]\n\n"
    cuts = [wire.index("ï".encode()) + 1, wire.index(b"\n\n") + 1, wire.index("😀".encode()) + 2]
    items = [wire[start:end] for start, end in itertools.pairwise([0, *cuts, len(wire)])]
    assert b"".join(items) == wire and len(items) == 4
    fake.add_reply(raw=items, when="raw")
    fake.add_reply("not this one")  # the raw rule must win whatever the stream flag says
    stream = oai.chat.completions.create(model="m", messages=_user("raw please"), stream=True)
    assert [c.choices[0].delta.content for c in stream] == ["naïve ", "café 😀"]


def test_raw_is_streamed_even_without_the_stream_flag(fake: FakeUpstream, url: str) -> None:
    fake.add_reply(raw=["event: x\ndata: 1\n\n"])
    response = _http("POST", url + "/v1/messages", json_body={"model": "c", "messages": []})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b"event: x\ndata: 1\n\n"


def test_raw_excludes_the_other_reply_kinds(fake: FakeUpstream) -> None:
    for other in ({"text": "t"}, {"tool": "f"}, {"status": 500}):
        with pytest.raises(ValueError, match="'raw' reply is written verbatim"):
            fake.script([{"raw": ["x"], **other}])
    with pytest.raises(ValueError, match="raw item 1: expected bytes"):
        fake.script([{"raw": ["x", 7]}])
    with pytest.raises(ValueError, match="raw item 0: 'b64' is not valid base64"):
        fake.script([{"raw": [{"b64": "not base64!"}]}])


def test_http_control_accepts_raw_items_as_text_and_b64(fake: FakeUpstream, url: str) -> None:
    arbitrary = b"\x00\xff\xfe data: \xe2\x82"  # not UTF-8: only b64 can carry it
    script = [{"raw": ["data: plain é\n\n", {"b64": base64.b64encode(arbitrary).decode()}], "chunk_delay": 0}]
    assert _http("POST", url + "/_fake/script", json_body=script).json() == {"rules": 1}
    response = _http("POST", url + "/v1/chat/completions", json_body=_STREAM_BODY)
    assert response.content == "data: plain é\n\n".encode() + arbitrary
    bad = _http("POST", url + "/_fake/script", json_body=[{"raw": [{"b64": "%%%"}]}])
    assert bad.status_code == 400 and "not valid base64" in bad.json()["error"]


def test_raw_chunk_delay_defaults_to_20ms(fake: FakeUpstream, url: str) -> None:
    fake.add_reply(raw=["a", "b", "c", "d", "e", "f"])
    started = time.perf_counter()
    assert _http("POST", url + "/v1/chat/completions", json_body=_STREAM_BODY).content == b"abcdef"
    assert time.perf_counter() - started >= 5 * 0.02


def test_drop_after_breaks_the_openai_stream(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply("one two three four five", drop_after=3)
    received: list[str | None] = []
    stream = oai.chat.completions.create(model="m", messages=_user("x"), stream=True)
    with pytest.raises(openai.APIConnectionError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "one", " two"]  # the role chunk and two words, then the cut
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert "incomplete chunked read" in str(caught.value.__cause__)


def test_drop_after_breaks_the_anthropic_stream(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.add_reply("one two three four five", drop_after=5)
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        for event in ant.messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(event.type)
    # message_start, content_block_start, ping (which the SDK skips), two deltas.
    assert received == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]


def test_drop_after_ignores_a_non_streamed_completion(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply("whole", drop_after=0)
    assert oai.chat.completions.create(model="m", messages=_user("x")).choices[0].message.content == "whole"


async def test_drop_after_cuts_a_raw_stream_and_a_short_stream_is_cut_at_its_end(
    fake: FakeUpstream, url: str
) -> None:
    fake.script([{"when": "raw", "raw": ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"], "drop_after": 2}])
    fake.add_reply("a b", drop_after=100)
    reads, error = await _read_chunks(url + "/v1/chat/completions", {**_STREAM_BODY, "messages": _user("raw")})
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert b"".join(reads) == b"data: 1\n\ndata: 2\n\n"
    reads, error = await _read_chunks(url + "/v1/chat/completions", _STREAM_BODY)
    assert isinstance(error, aiohttp.ClientPayloadError)  # written whole, still no end
    assert b"".join(reads).endswith(b"data: [DONE]\n\n")


def test_drop_is_quiet_and_the_server_still_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    threads_before = set(threading.enumerate())
    fake_here = FakeUpstream([{"text": "a b c d e f", "drop_after": 2, "chunk_delay": 0.01}])
    with ServerThread(fake_here.app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
        for _ in range(3):  # each on a fresh connection: the dropped one cannot be reused
            with pytest.raises(openai.APIConnectionError):
                list(client.chat.completions.create(model="m", messages=_user("x"), stream=True))
        client.close()
        started = time.perf_counter()
    assert time.perf_counter() - started < 2
    assert set(threading.enumerate()) - threads_before == set()  # (earlier tests' threads may end meanwhile)
    noisy = [r for r in caplog.records if r.name.startswith(("aiohttp", "asyncio")) and r.levelno >= logging.INFO]
    assert noisy == [] and all(r.exc_info is None for r in caplog.records if r.name.startswith("aiohttp"))


def test_events_sets_the_number_of_openai_content_deltas(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply("The quick brown fox jumps over the lazy dog.", repeat=3, events=20)
    stream = oai.chat.completions.create(model="m", messages=_user("x"), stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
    assert len(pieces) == 20
    assert "".join(pieces) == " ".join(["The quick brown fox jumps over the lazy dog."] * 3)
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1  # as even as it gets


def test_events_sets_the_number_of_anthropic_text_deltas(fake: FakeUpstream, ant: anthropic.Anthropic) -> None:
    fake.add_reply("Streaming long answers for the benchmark.", events=20, tool="t", arguments={"k": "v w"})
    with ant.messages.stream(model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 20 and "".join(pieces) == "Streaming long answers for the benchmark."
    assert final.content[1].input == {"k": "v w"}  # type: ignore[union-attr]  # tool args: not counted


def test_events_never_splits_a_character(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    text = "naïve 😀 日本"
    fake.add_reply(text, events=len(text))
    stream = oai.chat.completions.create(model="m", messages=_user("x"), stream=True)
    assert [c.choices[0].delta.content for c in stream if c.choices[0].delta.content] == list(text)


def test_repeat_applies_to_non_streamed_replies_too(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.add_reply("ab", repeat=4)
    assert oai.chat.completions.create(model="m", messages=_user("x")).choices[0].message.content == "ab ab ab ab"


def test_repeat_and_events_are_validated(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="'repeat' needs a 'text'"):
        fake.add_reply(repeat=2)
    with pytest.raises(ValueError, match="'events' needs a 'text'"):
        fake.add_reply(tool="t", events=2)
    with pytest.raises(ValueError, match="'events' is 8 but the text has only 7 characters"):
        fake.add_reply("abc", repeat=2, events=8)
    with pytest.raises(ValueError, match="'drop_after' cuts a stream"):
        fake.add_reply(status=500, drop_after=1)
    assert fake.add_reply("abc", repeat=2, events=7).full_text == "abc abc"
