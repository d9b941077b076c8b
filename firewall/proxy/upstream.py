"""The firewall's HTTP/1.1 client to its upstreams: keep-alive connections, pooled per
origin, over asyncio transports; responses parsed by llhttp (httptools, Node.js's parser).

Why not aiohttp's client, which served before: a bare forwarder on this machine (aiohttp's
server, then the client; one core, 32 requests in flight) used 104 µs of CPU per request
with aiohttp's client and 47 µs with a minimal one over asyncio's transports, and the
firewall forwards every request it allows. With this client, and the hot-path work that
came with it, the firewall's pass-through passes about 40% more requests per second on one
core (benchmarks/RESULTS.md, "Compared with the alternatives"). Only what a proxy needs is here: one request
per connection at a time, no redirects, no cookies, no proxies of its own; framing by
Content-Length, chunked or the connection's end, as llhttp reads it (strict: a response it
would have to guess at fails); the body decoded (gzip, deflate, br, zstd) as it arrives, so
that the firewall inspects what the model said.

Failures are `UpstreamError`s: `UpstreamConnectTimeout` (no connection within
`connect_timeout`), `UpstreamUnreachable` (refused, reset, closed early),
`UpstreamBadResponse` (not HTTP the parser accepts, a coding it cannot undo); and
`TimeoutError` when no byte arrives for `read_timeout` seconds while one is awaited.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Final
from urllib.parse import quote, urlsplit

import brotli
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from firewall.proxy.limits import ZstdDecompressor, ZstdError, deflate_wbits

__all__ = ["ACCEPTED_CODINGS", "UpstreamBadResponse", "UpstreamClient", "UpstreamConnectTimeout", "UpstreamError",
           "UpstreamResponse", "UpstreamUnreachable"]

# What the upstream is asked for when the agent did not say (aiohttp's default before).
ACCEPTED_CODINGS: Final = "gzip, deflate"
# An idle connection is reused for this long, then closed: a server that closes idle
# connections (after 5 to 60 s, typically) must not do so while a request is being sent.
_IDLE_SECONDS: Final = 15.0
_MAX_IDLE_PER_ORIGIN: Final = 64
# Flow control of a streamed answer the client reads slower than the upstream sends.
_PAUSE_AT: Final = 256 * 1024
_RESUME_AT: Final = 64 * 1024
_MAX_HEAD: Final = 64 * 1024  # status line and headers, as the upstream may send them
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# RFC 3986's unreserved and reserved characters, and `%` (the target may be encoded already).
_TARGET_SAFE: Final = "-._~:/?#[]@!$&'()*+,;=%"
_UNSAFE_IN_TARGET: Final = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


class UpstreamError(Exception):
    """The upstream could not be asked, or its answer not read."""


class UpstreamConnectTimeout(UpstreamError):
    """No connection to the upstream within the connect timeout."""


class UpstreamUnreachable(UpstreamError):
    """The connection was refused, reset, or closed before the answer was whole."""


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer is not HTTP the parser accepts, or not in a coding it can undo."""


@functools.lru_cache(maxsize=256)
def _origin(base: str) -> tuple[str, str, int, str, str]:
    """scheme, host, port, Host header, path prefix of an upstream's base URL."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"not an http(s) URL: {base!r}")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return parts.scheme, host, port, shown if port == default else f"{shown}:{port}", parts.path.rstrip("/")


# -- decoding -----------------------------------------------------------------------


class _Decoder:
    """Undoes one Content-Encoding, piece by piece."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        if coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = None  # zlib format or raw deflate: told by the first two bytes
            self._first = b""
        elif coding == "br":
            self._brotli = brotli.Decompressor()
        elif coding == "zstd":
            self._zstd = ZstdDecompressor()
        else:
            raise UpstreamBadResponse(f"Content-Encoding {coding!r} cannot be decoded")

    def decode(self, data: bytes) -> bytes:
        try:
            coding = self.coding
            if coding == "br":
                return self._brotli.process(data)
            if coding == "zstd":
                return self._zstd.decompress(data)
            if self._zlib is None:
                data = self._first + data
                if len(data) < 2:
                    self._first = data  # a piece of one byte: wait for the second
                    return b""
                self._zlib = zlib.decompressobj(deflate_wbits(data))
            return self._zlib.decompress(data)
        except (zlib.error, brotli.error, ZstdError) as error:
            raise UpstreamBadResponse(f"the body is not valid {self.coding}: {error}") from None

    def finish(self) -> bytes:
        if self.coding in ("br", "zstd") or self._zlib is None:
            return b""
        try:
            return self._zlib.flush()
        except zlib.error as error:
            raise UpstreamBadResponse(f"the body is not valid {self.coding}: {error}") from None


# -- one connection -----------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request on it at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None  # the read timeout's; outlives a request
        self._paused = False
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self._head_only = head_only
        self._status = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._framed = False  # Content-Length or chunked: the end is known, not the close
        self.headers_done = False
        self.complete = False
        self.reusable = False
        self._chunks.clear()
        self._buffered = 0
        self._resume()
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete:
            self.close()  # bytes nobody asked for: the connection's framing cannot be trusted
            return
        self._last_data = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            cause = error.__context__
            self._fail(cause if isinstance(cause, UpstreamError) else UpstreamBadResponse(f"malformed HTTP response: {error}"))
            self.close()
            return
        if self._paused is False and self._buffered > _PAUSE_AT and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._ended(exc)

    def _ended(self, exc: Exception | None = None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.headers_done and not self._framed and not self._head_only:
            self._message_done(reusable=False)  # the body ran to the connection's end
            return
        reason = f": {exc}" if exc else ""
        self._fail(UpstreamUnreachable(f"the connection closed before the answer was whole{reason}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise UpstreamBadResponse("the upstream sent a second answer to one request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > _MAX_HEAD:
            raise UpstreamBadResponse(f"the response's headers are larger than {_MAX_HEAD} bytes")
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._raw_headers = []  # an interim answer (100 Continue, 103): the real one follows
            return
        self._status = status
        names = {name.lower() for name, _ in self._raw_headers}
        self._framed = b"content-length" in names or b"transfer-encoding" in names
        self.headers_done = True
        if self._head_only:
            self._message_done(reusable=False)  # llhttp would wait for a body a HEAD answer has not
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self._message_done(reusable=self._parser.should_keep_alive())

    def _message_done(self, *, reusable: bool) -> None:
        self.complete = True
        self.reusable = reusable and not self.closed
        self._wake()

    # waiting

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_read_timeout(self) -> None:
        # One timer per connection, re-armed only when it fires early: data received (or
        # a request sent) since it was armed moved the deadline. Cheaper than a timer per
        # read, or per request; once nothing is awaited it lapses, and the next send arms it.
        self._timer = None
        if self.complete or self._error is not None:
            return
        if self._paused:  # the client reads slowly: the upstream is not the one waited for
            self._last_data = self._loop.time()
        deadline = self._last_data + self._read_timeout
        if deadline > self._loop.time():
            self._timer = self._loop.call_at(deadline, self._check_read_timeout)
            return
        self._fail(TimeoutError(f"no data from the upstream for {self._read_timeout:g} seconds"))
        self.close()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # one exchange

    def send(self, head: bytes, body: bytes | None, *, head_only: bool) -> None:
        assert self.transport is not None
        self._reset(head_only=head_only)
        self._last_data = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_data + self._read_timeout, self._check_read_timeout)
        self.transport.write(head + body if body else head)

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        while not self.headers_done:
            await self._wait()
        return self._status, self._raw_headers

    async def next_piece(self) -> bytes | None:
        """The next piece of the body as received, or None at its end."""
        while not self._chunks:
            if self.complete:
                return None
            await self._wait()
        piece = self._chunks.popleft()
        self._buffered -= len(piece)
        if self._buffered < _RESUME_AT:
            self._resume()
        return piece

    async def rest(self) -> bytes:
        """Everything of the body not taken yet, once it has all arrived."""
        while not self.complete:
            self._resume()  # all of it is wanted: no reason to hold the upstream back
            await self._wait()
        chunks = self._chunks
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


# -- a response ------------------------------------------------------------------------------


class UpstreamResponse:
    """The status and headers of an upstream's answer; its body, decoded, by `read` or
    piece by piece by `iter_any`."""

    def __init__(self, connection: _Connection, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._connection = connection
        self.status = status
        self.headers = CIMultiDictProxy(CIMultiDict(
            [(name.decode("latin-1"), value.decode("utf-8", "surrogateescape")) for name, value in raw_headers]))
        self._decoders: list[_Decoder] = []
        encoding = self.headers.get("Content-Encoding")
        if encoding is not None:
            codings = [part.strip().lower() for part in encoding.split(",")]
            self._decoders = [_Decoder(coding) for coding in reversed(codings) if coding and coding != "identity"]

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The decoded body, in pieces as they arrive (empty pieces skipped)."""
        connection = self._connection
        while True:
            piece = await connection.next_piece()
            if piece is None:
                tail = self._finish()
                if tail:
                    yield tail
                return
            for decoder in self._decoders:
                piece = decoder.decode(piece)
            if piece:
                yield piece

    async def read(self) -> bytes:
        """The whole body, decoded (the usual case: one answer read at once)."""
        connection = self._connection
        body = await connection.rest()
        for decoder in self._decoders:
            body = decoder.decode(body) + decoder.finish()
        return body

    def _finish(self) -> bytes:
        tail = b""
        for decoder in self._decoders:
            tail = decoder.decode(tail) if tail else b""
            tail += decoder.finish()
        return tail


# -- the client --------------------------------------------------------------------------------


class UpstreamClient:
    """Pooled HTTP/1.1 to any number of upstream origins. One per event loop."""

    def __init__(self, *, connect_timeout: float, read_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self.closed = False

    def request(self, method: str, base: str, target: str, headers: Iterable[tuple[str, str]],
                body: bytes | None = None) -> _Request:
        """`async with client.request(...) as response`: send `method` `base`+`target`
        (target: path and query) with `headers` and `body`; the response once its headers
        are in. Leaving the block returns the connection to the pool when the body was
        read whole, and closes it otherwise."""
        return _Request(self, method, base, target, headers, body)

    def _reuse(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = idle[-1]._loop.time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < _IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, scheme: str, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl_context or _default_ssl_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout), host, port, ssl=context,
                    server_hostname=host if context is not None else None)
        except TimeoutError:
            raise UpstreamConnectTimeout(f"no connection to {host}:{port} within {self.connect_timeout:g} seconds") from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"cannot connect to {host}:{port}: {error.strerror or error}") from None
        return connection

    def _release(self, key: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        connection.idle_since = connection._loop.time()
        idle.append(connection)

    async def close(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        for connection in list(self._busy):
            connection.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


class _Request:
    """One request through the client, as an async context manager (see `request`)."""

    __slots__ = ("_body", "_client", "_connection", "_head", "_key", "_method", "_response", "_target")

    def __init__(self, client: UpstreamClient, method: str, base: str, target: str,
                 headers: Iterable[tuple[str, str]], body: bytes | None) -> None:
        if client.closed:
            raise UpstreamError("the upstream client is closed")
        scheme, host, port, host_header, prefix = _origin(base)
        self._client = client
        self._method = method
        self._key = (scheme, host, port)
        self._head = _request_head(method, prefix + target, host_header, headers, body)
        self._body = body
        self._connection: _Connection | None = None
        self._response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        client = self._client
        connection = client._reuse(self._key) or await client._connect(*self._key)
        self._connection = connection
        client._busy.add(connection)
        try:
            connection.send(self._head, self._body, head_only=self._method == "HEAD")
            status, raw_headers = await connection.head()
            self._response = UpstreamResponse(connection, status, raw_headers)
        except BaseException:
            client._busy.discard(connection)
            connection.close()
            raise
        return self._response

    async def __aexit__(self, *exc: object) -> None:
        client = self._client
        connection = self._connection
        assert connection is not None and self._response is not None
        client._busy.discard(connection)
        if (connection.complete and connection.reusable and not connection._chunks and not connection.closed
                and not client.closed):
            client._release(self._key, connection)
        else:
            connection.close()


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _request_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body: bytes | None) -> bytes:
    if _UNSAFE_IN_TARGET.search(target):
        # The listener hands over paths decoded: what cannot stand in a request line
        # (a space, a line break, non-ASCII) is percent-encoded again, as a URL library would.
        target = quote(target, safe=_TARGET_SAFE)
    lines = [f"{method} {target or '/'} HTTP/1.1\r\nHost: {host}\r\n"]
    asked_coding = False
    for name, value in headers:
        if not asked_coding and name.lower() == "accept-encoding":
            asked_coding = True
        lines.append(f"{name}: {value}\r\n")
    if not asked_coding:
        lines.append(f"Accept-Encoding: {ACCEPTED_CODINGS}\r\n")
    if body is not None or method not in _NO_BODY_METHODS:
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Each line ends in the one CR LF put there; any other is a header (or the target)
    # trying to start a line of its own: nothing is sent.
    breaks = len(lines) + 1  # the request line and Host share the first item
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise UpstreamError("a header holds a line break; the request cannot be sent")
    return head.encode("utf-8")
