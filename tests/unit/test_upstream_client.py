"""The upstream HTTP/1.1 client (firewall/proxy/upstream.py), against servers on loopback
that answer with exactly the bytes a test scripts: framing, codings, reuse, failures."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import brotli
import pytest

from firewall.proxy.upstream import (
    UpstreamBadResponse,
    UpstreamClient,
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamUnreachable,
)
from tests.tls_upstream import make_test_ca

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A loopback server: reads one request (head and Content-Length body) at a time and
    lets `reply` answer it; counts connections and keeps the requests it read."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.base = ""
        self._serving: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                await self.reply(request, writer)
                await writer.drain()
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._serving.discard(task)
            writer.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> Reply:
    async def reply(_request: bytes, writer: asyncio.StreamWriter) -> None:
        head = "".join(f"{h}\r\n" for h in headers)
        writer.write(f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return reply


async def fetch(client: UpstreamClient, base: str, method: str = "POST", body: bytes | None = b"{}",
                headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with client.request(method, base, "/v1/chat/completions", headers or [("Content-Type", "application/json")],
                              body) as response:
        return response.status, dict(response.headers), await response.read()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(connect_timeout=2.0, read_timeout=2.0)
    yield upstream
    await upstream.close()


async def test_a_request_goes_out_as_http_1_1_with_its_body_and_the_answer_comes_back(client):
    async with Scripted(answer(b'{"ok": true}', "Content-Type: application/json")) as server:
        status, headers, body = await fetch(client, server.base + "/prefix/", body=b'{"q": 1}',
                                            headers=[("Authorization", "Bearer sk-test"), ("X-Agent-Id", "a")])
    assert (status, headers["Content-Type"], body) == (200, "application/json", b'{"ok": true}')
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    # The base URL's path is kept in front of the request's own.
    assert lines[0] == "POST /prefix/v1/chat/completions HTTP/1.1"
    assert f"Host: {server.base.removeprefix('http://')}" in lines
    assert {"Authorization: Bearer sk-test", "X-Agent-Id: a", "Content-Length: 8",
            "Accept-Encoding: gzip, deflate"} <= set(lines)
    assert sent == b'{"q": 1}'


async def test_the_agents_accept_encoding_is_sent_as_it_is_and_not_doubled(client):
    async with Scripted(answer(b"{}")) as server:
        await fetch(client, server.base, headers=[("accept-encoding", "br")])
    lines = server.requests[0].split(b"\r\n")
    assert b"accept-encoding: br" in lines and not any(line.startswith(b"Accept-Encoding") for line in lines)


async def test_a_kept_alive_connection_is_reused_and_one_that_says_close_is_not(client):
    async with Scripted(answer(b"{}")) as server:
        for _ in range(5):
            assert (await fetch(client, server.base))[0] == 200
        assert server.connections == 1
    async with Scripted(answer(b"{}", "Connection: close")) as closing:
        for _ in range(3):
            assert (await fetch(client, closing.base))[0] == 200
        assert closing.connections == 3


async def test_concurrent_requests_each_get_their_own_connection_and_their_own_answer(client):
    async def echo(request: bytes, writer: asyncio.StreamWriter) -> None:
        body = request.partition(b"\r\n\r\n")[2]
        await asyncio.sleep(0.01)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async with Scripted(echo) as server:
        bodies = [b'{"n": %d}' % n for n in range(20)]
        answers = await asyncio.gather(*(fetch(client, server.base, body=body) for body in bodies))
        assert [body for _, _, body in answers] == bodies
        assert server.connections == 20
        again = await asyncio.gather(*(fetch(client, server.base, body=body) for body in bodies))
        assert [body for _, _, body in again] == bodies and server.connections == 20  # all reused


@pytest.mark.parametrize("chunks", [[b"{\"a\"", b": 1}"], [b"x" * 70_000]])
async def test_a_chunked_answer_is_read_whole_and_the_connection_reused(client, chunks):
    async def chunked(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with Scripted(chunked) as server:
        for _ in range(2):
            assert (await fetch(client, server.base))[2] == b"".join(chunks)
        assert server.connections == 1


async def test_an_answer_without_length_runs_to_the_connections_end_and_is_not_reused(client):
    async def until_close(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\": ")
        await writer.drain()
        writer.write(b"1}")
        writer.close()

    async with Scripted(until_close) as server:
        assert (await fetch(client, server.base))[2] == b'{"a": 1}'
        assert (await fetch(client, server.base))[2] == b'{"a": 1}'
        assert server.connections == 2


async def test_pieces_arrive_as_the_upstream_sends_them(client):
    gate = asyncio.Event()

    async def streamed(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"6\r\ndata: \r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"3\r\n1\n\n\r\n0\r\n\r\n")

    async with Scripted(streamed) as server:
        async with client.request("POST", server.base, "/", [], b"{}") as response:
            pieces = response.iter_any()
            assert await pieces.__anext__() == b"data: "  # before the upstream sent the rest
            gate.set()
            assert [piece async for piece in pieces] == [b"1\n\n"]


@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ("br", brotli.compress),
    ("zstd", zstd.compress),
])
async def test_a_compressed_answer_is_decoded(client, coding, encode):
    text = b'{"choices": [{"message": {"content": "' + b"word " * 2000 + b'"}}]}'
    async with Scripted(answer(encode(text), f"Content-Encoding: {coding}")) as server:
        assert (await fetch(client, server.base))[2] == text


async def test_a_deflate_answer_whose_first_piece_is_one_byte_is_still_told_apart(client):
    text = b'{"content": "' + b"word " * 500 + b'"}'
    body = zlib.compress(text)

    async def trickled(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (body[:1], body[1:]):  # the zlib header split across two chunks
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    async with Scripted(trickled) as server:
        async with client.request("POST", server.base, "/", [], b"{}") as response:
            assert b"".join([piece async for piece in response.iter_any()]) == text  # read as it arrives


async def test_an_answer_in_a_coding_the_client_cannot_undo_is_a_bad_response(client):
    async with Scripted(answer(b"\x00\x01", "Content-Encoding: compress")) as server:
        with pytest.raises(UpstreamBadResponse, match="'compress' cannot be decoded"):
            await fetch(client, server.base)
    async with Scripted(answer(b"not gzip at all", "Content-Encoding: gzip")) as server:
        with pytest.raises(UpstreamBadResponse, match="not valid gzip"):
            await fetch(client, server.base)


async def test_an_interim_answer_is_skipped_and_a_bodiless_status_has_no_body(client):
    async def interim(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-Seen: yes\r\n\r\n")

    async with Scripted(interim) as server:
        for _ in range(2):
            status, headers, body = await fetch(client, server.base)
            assert (status, headers["X-Seen"], body) == (204, "yes", b"")
        assert server.connections == 1


async def test_a_head_answer_has_no_body_even_with_a_length(client):
    async def head(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")

    async with Scripted(head) as server:
        assert await fetch(client, server.base, method="HEAD", body=None) == (200, {"Content-Length": "12"}, b"")
        assert b"Content-Length" not in server.requests[0]  # a HEAD carries none


@pytest.mark.parametrize("reply, match", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed before the answer was whole"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "closed before the answer was whole"),
    (b"", "closed before the answer was whole"),
])
async def test_a_connection_that_ends_early_is_unreachable(client, reply, match):
    async def cut(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        writer.close()

    async with Scripted(cut) as server:
        with pytest.raises(UpstreamUnreachable, match=match):
            await fetch(client, server.base)


@pytest.mark.parametrize("reply", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
async def test_framing_the_parser_would_have_to_guess_at_is_a_bad_response(client, reply):
    async def bad(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)

    async with Scripted(bad) as server:
        with pytest.raises(UpstreamBadResponse, match="malformed HTTP response"):
            await fetch(client, server.base)


async def test_headers_past_the_limit_are_a_bad_response(client):
    async with Scripted(answer(b"{}", *(f"X-Filler-{n}: {'v' * 1000}" for n in range(80)))) as server:
        with pytest.raises(UpstreamBadResponse, match="headers are larger than"):
            await fetch(client, server.base)


async def test_a_second_answer_nobody_asked_for_closes_the_connection(client):
    twice = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    async def doubled(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(twice + twice)

    async with Scripted(doubled) as server:
        assert (await fetch(client, server.base))[2] == b"{}"
        assert (await fetch(client, server.base))[2] == b"{}"
        assert server.connections == 2  # the first connection was not trusted again


async def test_no_byte_for_the_read_timeout_is_a_timeout(client):
    quiet = UpstreamClient(connect_timeout=2.0, read_timeout=0.2)

    async def silent(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n")
        await asyncio.sleep(1.0)

    try:
        async with Scripted(silent) as server:
            async with quiet.request("POST", server.base, "/", [], b"{}") as response:
                pieces = response.iter_any()
                assert await pieces.__anext__() == b"{}"
                with pytest.raises(TimeoutError, match="no data from the upstream for 0.2 seconds"):
                    await pieces.__anext__()
    finally:
        await quiet.close()


async def test_a_steady_trickle_is_not_a_timeout(client):
    patient = UpstreamClient(connect_timeout=2.0, read_timeout=0.3)

    async def trickle(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, never 0.3 s without a byte
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    try:
        async with Scripted(trickle) as server:
            assert (await fetch(patient, server.base))[2] == b"xxxxxx"
    finally:
        await patient.close()


async def test_a_refused_connection_is_unreachable_and_a_silent_address_times_out():
    client = UpstreamClient(connect_timeout=0.3, read_timeout=1.0)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    try:
        with pytest.raises(UpstreamUnreachable, match=f"cannot connect to 127.0.0.1:{port}"):
            await fetch(client, f"http://127.0.0.1:{port}")
        # A listener whose backlog is full and never accepted: Linux drops further SYNs.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            full = listener.getsockname()[1]
            fillers = [socket.socket() for _ in range(3)]
            try:
                for filler in fillers:
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", full))
                with pytest.raises(UpstreamConnectTimeout, match=f"no connection to 127.0.0.1:{full} within 0.3 seconds"):
                    await fetch(client, f"http://127.0.0.1:{full}")
            finally:
                for filler in fillers:
                    filler.close()
    finally:
        await client.close()


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused(client):
    async def once(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # keep-alive said, then closed: as a server's idle timeout does

    async with Scripted(once) as server:
        assert (await fetch(client, server.base))[0] == 200
        await asyncio.sleep(0.05)
        assert (await fetch(client, server.base))[0] == 200
        assert server.connections == 2


async def test_a_body_left_unread_closes_its_connection(client):
    async with Scripted(answer(b"x" * 300_000)) as server:
        async with client.request("POST", server.base, "/", [], b"{}") as response:
            assert (await response.iter_any().__anext__())  # one piece, then the caller stops
        assert (await fetch(client, server.base))[2] == b"x" * 300_000
        assert server.connections == 2


async def test_a_slow_reader_pauses_the_upstream_rather_than_buffering_it_all(client):
    size = 4 * 1024 * 1024

    async def big(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"y" * 65536)
            await writer.drain()

    async with Scripted(big) as server:
        async with client.request("POST", server.base, "/", [], b"{}") as response:
            connection = response._connection
            received = 0
            most_buffered = 0
            async for piece in response.iter_any():
                received += len(piece)
                most_buffered = max(most_buffered, connection._buffered)
                await asyncio.sleep(0)
        assert received == size
        # Reading pauses past 256 KiB held: what is buffered stays near that, not at 4 MiB.
        assert most_buffered < 1024 * 1024


async def test_a_header_with_a_line_break_is_never_sent(client):
    async with Scripted(answer(b"{}")) as server:
        with pytest.raises(UpstreamError, match="a header holds a line break"):
            await fetch(client, server.base, headers=[("X-Evil", "a\r\nInjected: yes")])
        assert server.requests == []


async def test_a_target_is_sent_percent_encoded_where_a_request_line_needs_it(client):
    async with Scripted(answer(b"{}")) as server:
        async with client.request("GET", server.base, "/v1/models/a b\r\nX: ü?q=1%202&k=v", [], None) as response:
            await response.read()
    assert server.requests[0].split(b"\r\n")[0] == b"GET /v1/models/a%20b%0D%0AX:%20%C3%BC?q=1%202&k=v HTTP/1.1"


async def test_a_closed_client_refuses_new_requests():
    client = UpstreamClient(connect_timeout=1.0, read_timeout=1.0)
    await client.close()
    with pytest.raises(UpstreamError, match="closed"):
        await fetch(client, "http://127.0.0.1:9")


async def test_an_https_upstream_is_reached_over_verified_tls_and_an_unknown_issuer_is_refused(tmp_path):
    ca = make_test_ca(tmp_path)
    server = await asyncio.start_server(lambda reader, writer: Scripted(answer(b'{"tls": true}'))._serve(reader, writer),
                                        "127.0.0.1", 0, ssl=ca.server_context())
    base = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    trusting = UpstreamClient(connect_timeout=2.0, read_timeout=2.0,
                              ssl_context=ssl.create_default_context(cafile=ca.cert))
    default = UpstreamClient(connect_timeout=2.0, read_timeout=2.0)  # the system's roots: this CA is not one
    try:
        for _ in range(2):  # the second on the kept-alive TLS connection
            assert await fetch(trusting, base) == (200, {"Content-Length": "13"}, b'{"tls": true}')
        with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await fetch(default, base)
    finally:
        await trusting.close()
        await default.close()
        server.close()
        await server.wait_closed()
