"""Hostile input: each request that would cost the firewall too much, or that two parsers
could read two ways, is refused in the provider's error shape, recorded, and never
reaches the upstream. Framing that aiohttp's own parser refuses, before there is a request
to route, is answered in JSON and recorded too (firewall/proxy/connection.py), and so are
headers that come too slowly.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import brotli
import openai
import orjson
import pytest
from aiohttp import web

from firewall.proxy.limits import LimitExceeded, decode_body
from firewall.testing import ServerThread

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

POLICY = """
version: 1
name: hostile
identity: {unidentified: allow}
lists: {banned: [kiwi]}
rules:
  - id: no-kiwi
    match: {lists: [banned]}
    action: block
"""
CHAT = "/v1/chat/completions"
COMPRESS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}


def chat(text: str, **extra: Any) -> bytes:
    return orjson.dumps({"model": "gpt-fake", "messages": [{"role": "user", "content": text}], **extra})


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read()), dict(error.headers)


def raw_exchange(url: str, data: bytes, *, then_wait: bool = True) -> bytes:
    """Send `data` as it is over a socket; what comes back until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while then_wait:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def events(running: Any) -> list[str]:
    return [record.get("event") for record in running.records()]


# -- size, nesting, bytes ----------------------------------------------------------------

def test_a_body_nested_deeper_than_the_limit_is_refused_unparsed(start_firewall, fake):
    running = start_firewall(POLICY, max_json_depth=16)
    nested = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 50 + b"]" * 50 + b"}"
    status, body, _ = post(running.url + CHAT, nested)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "nested 51 levels deep (the limit is 16)" in body["error"]["message"]
    # Far deeper than any parser's recursion: refused from the bytes, before parsing.
    status, body, _ = post(running.url + "/v1/messages", b"[" * 200_000)
    assert status == 400 and body["type"] == "error" and "the limit is 16" in body["error"]["message"]
    # Brackets inside strings are text, not nesting.
    status, _, _ = post(running.url + CHAT, chat("[" * 100 + "{" * 100))
    assert status == 200
    assert len(fake.received) == 1
    assert events(running)[:2] == ["nesting_too_deep", "nesting_too_deep"]


def test_malformed_utf8_and_duplicate_keys_are_refused(start_firewall, fake):
    running = start_firewall(POLICY)
    status, body, _ = post(running.url + CHAT, b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}')
    assert status == 400 and "malformed JSON" in body["error"]["message"]
    status, body, _ = post(running.url + CHAT,
                           b'{"model": "m", "messages": [{"role": "user", "content": "a", "content": "kiwi"}]}')
    assert status == 400 and "duplicate key at $.messages[0].content" in body["error"]["message"]
    assert fake.received == []
    assert events(running) == ["malformed_json", "duplicate_key"]


def test_unknown_shapes_on_known_routes_are_refused(start_firewall, fake):
    running = start_firewall(POLICY)
    for path, body in [(CHAT, {"model": "m", "messages": {"role": "user"}}), (CHAT, [1, 2]),
                       ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": "kiwi"}),
                       ("/v1/responses", {"model": "m", "input": 42})]:
        status, answer, _ = post(running.url + path, orjson.dumps(body))
        assert status == 400, (path, body, answer)
    assert fake.received == []
    assert set(events(running)) == {"bad_body_shape"}


def test_a_compressed_body_over_the_decoded_limit_is_413(start_firewall, fake):
    running = start_firewall(POLICY, max_decoded_bytes=64 * 1024)
    body = gzip.compress(chat("word " * 20_000))  # ~100 KB of JSON, ~1 KB compressed
    status, answer, _ = post(running.url + CHAT, body, {"Content-Encoding": "gzip"})
    assert status == 413 and "the firewall's limit for a decoded body" in answer["error"]["message"]
    assert fake.received == []
    assert events(running) == ["decompression_bomb"]


# -- compression -------------------------------------------------------------------------

@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_a_compressed_body_is_decoded_inspected_and_forwarded_decoded(start_firewall, fake, coding):
    running = start_firewall(POLICY)
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0)
    clean = chat("tell me about apples")
    answer = agent.post("/chat/completions", cast_to=object, content=COMPRESS[coding](clean),
                        options={"headers": {"Content-Encoding": coding, "Content-Type": "application/json"}})
    assert answer["choices"][0]["message"]["content"]
    [received] = fake.received
    assert received.body == clean  # the upstream reads what the firewall read
    assert "content-encoding" not in received.headers

    with pytest.raises(openai.PermissionDeniedError, match="no-kiwi"):
        agent.post("/chat/completions", cast_to=object, content=COMPRESS[coding](chat("a kiwi, please")),
                   options={"headers": {"Content-Encoding": coding, "Content-Type": "application/json"}})
    assert len(fake.received) == 1
    assert [r["action"] for r in running.records() if r.get("direction") == "request"][-1] == "block"


@pytest.mark.parametrize("coding", sorted(COMPRESS))
def test_a_decompression_bomb_is_refused_without_being_expanded(start_firewall, fake, coding):
    running = start_firewall(POLICY, max_decoded_bytes=8 * 1024 * 1024)
    zeros = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"0" * (64 * 1024 * 1024) + b'"}]}'
    bomb = COMPRESS[coding](zeros)
    assert len(bomb) < 1024 * 1024  # well under the body limit: only the decoding would be large
    status, answer, _ = post(running.url + CHAT, bomb, {"Content-Encoding": coding})
    assert status == 413
    message = answer["error"]["message"]
    assert f"the {coding} body decodes to more than" in message and "times the" in message
    assert fake.received == []
    assert events(running) == ["decompression_bomb"]


def test_decoding_stops_at_the_cap_plus_one_step():
    # The library itself: 64 MiB of zeros are never expanded past the cap and one 64 KiB step.
    bomb = zlib.compress(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(LimitExceeded) as raised:
        decode_body(bomb, "deflate", max_bytes=2 * 1024 * 1024, max_ratio=10_000)
    assert raised.value.status == 413 and "limit for a decoded body" in raised.value.message
    # Stacked codings are undone last-applied first.
    stacked = brotli.compress(gzip.compress(b'{"a": 1}'))
    assert decode_body(stacked, "gzip, br", max_bytes=1024, max_ratio=2) == b'{"a": 1}'


def test_broken_or_unknown_encodings_are_refused(start_firewall, fake):
    running = start_firewall(POLICY)
    whole = gzip.compress(chat("hello"))
    cases = [
        (whole[: len(whole) // 2], "gzip", 400, "truncated"),
        (whole + whole, "gzip", 400, "after the end of the compressed stream"),
        (b"not compressed at all", "br", 400, "not valid br"),
        (chat("hello"), "compress", 415, "'compress' is not supported"),
    ]
    for body, coding, expected, words in cases:
        status, answer, _ = post(running.url + CHAT, body, {"Content-Encoding": coding})
        assert status == expected and words in answer["error"]["message"], (coding, answer)
    assert fake.received == []
    assert events(running) == ["bad_encoding", "bad_encoding", "bad_encoding", "unsupported_encoding"]


# -- framing (request smuggling) and headers ----------------------------------------------

BODY = chat("hello")
SMUGGLING = {
    "content-length and transfer-encoding": (
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % len(BODY)),
    "two content-lengths": b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(BODY) + BODY,
    "the same content-length twice": b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY,
    "a content-length list": b"Content-Length: %d, %d\r\n\r\n" % (len(BODY), len(BODY)) + BODY,
    "transfer-encoding gzip": b"Transfer-Encoding: gzip\r\n\r\n" + BODY,
    "transfer-encoding chunked twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    "a space before the colon": b"Transfer-Encoding : chunked\r\n\r\n%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "a bare LF": b"Content-Length: %d\n\n" % len(BODY) + BODY,
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_smuggling_framing_is_refused_by_the_parser_and_recorded(start_firewall, fake, case):
    running = start_firewall(POLICY)
    response = raw_exchange(running.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\n" + SMUGGLING[case])
    assert status_of(response) == 400
    head, _, body = response.partition(b"\r\n\r\n")
    answer = orjson.loads(body)
    assert answer["error"]["message"].startswith("agent-firewall: the request is not well-formed HTTP: ")
    assert fake.received == []
    [record] = running.records()
    assert (record["event"], record["status"], record["action"]) == ("malformed_http", 400, "block")
    assert record["error"] == answer["error"]["message"].removeprefix("agent-firewall: ")
    assert f"X-Firewall-Exchange-Id: {record['exchange']}".encode() in head


def test_a_transfer_coding_before_chunked_reaches_the_handler_and_is_refused(start_firewall, fake):
    # aiohttp accepts "gzip, chunked" but does not undo the gzip: the handler refuses it.
    running = start_firewall(POLICY)
    response = raw_exchange(running.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                            b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n")
    assert status_of(response) == 400
    answer = orjson.loads(response.partition(b"\r\n\r\n")[2])
    assert "only 'chunked' is accepted" in answer["error"]["message"]
    assert fake.received == []
    assert events(running) == ["request_smuggling"]


def test_header_limits_are_configured(start_firewall, fake):
    running = start_firewall(POLICY, max_header_field_bytes=1024, max_headers=16)
    status, _, _ = post(running.url + CHAT, chat("hello"), {"X-Padding": "p" * 900})
    assert status == 200
    written = len(running.records())
    key = b"sk-proj-" + b"k" * 40  # a key in an oversized header reaches no answer and no record
    for extra in [b"Authorization: Bearer " + key + b"p" * 2000 + b"\r\n", b"".join(b"X-%d: a\r\n" % i for i in range(20))]:
        response = raw_exchange(running.url, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + extra
                                + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        assert status_of(response) == 400
        assert b"agent-firewall: the request is not well-formed HTTP: " in response
    assert len(fake.received) == 1
    refused = running.records()[written:]
    assert [record["event"] for record in refused] == ["malformed_http", "malformed_http"]
    assert [record["error"] for record in refused] == [
        "the request is not well-formed HTTP: Got more than 1024 bytes when reading",
        "the request is not well-formed HTTP: Too many headers received"]


# -- time and concurrency ------------------------------------------------------------------

def test_a_body_sent_too_slowly_is_cut_off_with_408(start_firewall, fake):
    running = start_firewall(POLICY, body_timeout=0.5)
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:5])
        response = b""
        # The answer comes without the rest of the body (aiohttp then lingers up to 10 s
        # discarding what still arrives, and closes the connection: its `Connection: close`).
        while b"\r\n\r\n" not in response or not response.endswith(b"}}"):
            response += sock.recv(65536)
    assert status_of(response) == 408 and b"Connection: close" in response
    answer = orjson.loads(response.partition(b"\r\n\r\n")[2])
    assert "did not arrive within 0.5 seconds" in answer["error"]["message"]
    assert fake.received == []
    assert events(running) == ["body_timeout"]


def test_headers_sent_too_slowly_are_cut_off_with_408_and_recorded(start_firewall, fake):
    running = start_firewall(POLICY, header_timeout=0.5)
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
        response = b""
        while chunk := sock.recv(65536):  # until the firewall closes the connection
            response += chunk
    assert status_of(response) == 408 and b"Connection: close" in response
    answer = orjson.loads(response.partition(b"\r\n\r\n")[2])
    assert "headers were not complete within 0.5 s" in answer["error"]["message"]
    assert fake.received == []
    assert events(running) == ["request_timeout"]


def test_the_header_deadline_restarts_after_each_answer_and_closes_idle_connections_quietly(start_firewall, fake):
    running = start_firewall(POLICY, header_timeout=0.5)
    host, port = running.url.removeprefix("http://").split(":")
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(2):  # two requests on one kept-alive connection, each answered whole
            sock.sendall(request)
            response = b""
            while not (response.count(b"\r\n\r\n") and response.endswith(b"}")):
                response += sock.recv(65536)
            assert status_of(response) == 200
        closed = b""
        while chunk := sock.recv(65536):  # idle now: closed at the deadline, with nothing sent
            closed += chunk
    assert closed == b""
    assert len(fake.received) == 2
    assert [record.get("event") for record in running.records()].count("request_timeout") == 0


def test_a_pipelined_request_answered_after_the_header_deadline_is_not_cut_off(start_firewall, fake):
    running = start_firewall(POLICY, header_timeout=0.3)
    fake.add_reply("first answer", times=1)
    fake.add_reply("second answer", delay=1.0)  # answered well after the deadline
    host, port = running.url.removeprefix("http://").split(":")
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + request)  # both at once: the second waits for the first's answer
        response = b""
        while response.count(b"HTTP/1.1 200") < 2 or not response.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the connection was closed with: {response!r}"
            response += chunk
    assert b"first answer" in response and b"second answer" in response
    assert len(fake.received) == 2


class GatedUpstream:
    """An OpenAI-like upstream whose streams stay open until `release` is set: a stream
    that holds its slot for as long as the test needs, with no timing involved."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"id": "c0", "object": "chat.completion", "created": 1, "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                             b'[{"index":0,"delta":{"role":"assistant","content":"fine"},"finish_reason":"stop"}]}\n\n')
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
def gated() -> Iterator[tuple[GatedUpstream, ServerThread]]:
    upstream = GatedUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    server = ServerThread(app, name="gated").start()
    yield upstream, server
    upstream.release.set()
    server.stop()


def test_past_the_stream_limit_a_new_stream_is_refused_429(start_firewall, gated):
    upstream, server = gated
    running = start_firewall(POLICY, max_streams=1, upstreams={"openai": server.url})
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0)
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    first = agent.chat.completions.create(**ask, stream=True)
    # The first stream's headers are in and its upstream holds it open: it has the one slot.
    assert running.firewall.streams.open == 1
    with pytest.raises(openai.RateLimitError, match="limit of 1 streamed answers"):
        agent.chat.completions.create(**ask, stream=True)
    assert upstream.received == 1  # refused before the upstream
    # A request that does not stream takes no slot.
    assert agent.chat.completions.create(**ask).choices[0].message.content == "fine"
    upstream.release.set()
    assert "".join(chunk.choices[0].delta.content or "" for chunk in first) == "fine"
    # The slot is given back when the stream's handler ends, just after its last bytes.
    deadline = time.monotonic() + 5
    while running.firewall.streams.open and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.firewall.streams.open == 0
    again = agent.chat.completions.create(**ask, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in again) == "fine"
    assert "too_many_streams" in events(running)


def test_an_upstream_that_does_not_answer_in_time_is_504(start_firewall, fake):
    running = start_firewall(POLICY, read_timeout=0.3)
    fake.add_reply("late", delay=3)
    status, answer, _ = post(running.url + CHAT, chat("hello"))
    assert status == 504 and "did not answer within 0.3 seconds" in answer["error"]["message"]
    assert events(running)[-1] == "upstream_timeout"


def test_an_upstream_that_cannot_be_connected_to_in_time_is_504(start_firewall):
    # A listening socket whose backlog is full and never accepted: Linux drops further
    # SYNs, so a connection attempt hangs until the firewall's connect timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            running = start_firewall(POLICY, connect_timeout=0.3, upstreams={"openai": f"http://127.0.0.1:{port}"})
            status, answer, _ = post(running.url + CHAT, chat("hello"))
        finally:
            for filler in fillers:
                filler.close()
    assert status == 504 and "could not be connected to within 0.3 seconds" in answer["error"]["message"]
    assert events(running)[-1] == "upstream_timeout"
