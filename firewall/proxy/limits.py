"""What a request may cost the firewall before it is inspected: framing, time, size, decoding.

Every limit here ends in `LimitExceeded`, which the proxy answers in the provider's error
shape with an audit record. What aiohttp's own parser refuses (malformed framing, header
lines over `max_line_size` / `max_field_size`, too many headers) is answered by aiohttp
with a plain 400 before any handler runs; `handler_args` configures those limits.

A compressed request body (Content-Encoding gzip, deflate, br or zstd) is decoded here,
in bounded steps: the decoded size is capped outright and by its ratio to the bytes
received, so a decompression bomb is refused after at most the cap plus one step has been
expanded. The decoded body is what the rules see and what is forwarded (the upstream reads
the same bytes the firewall read; no second decoder to disagree with the first).
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import brotli
from aiohttp import web
from multidict import CIMultiDictProxy

if sys.version_info >= (3, 14):
    from compression.zstd import ZstdDecompressor, ZstdError
else:
    from backports.zstd import ZstdDecompressor, ZstdError

__all__ = ["ENCODINGS", "BodyLimits", "LimitExceeded", "StreamSlots", "check_framing", "decode_body", "deflate_wbits",
           "handler_args", "read_body"]

ENCODINGS = ("gzip", "deflate", "br", "zstd")
# Output is produced this many bytes at a time: memory held past a cap is at most one step.
_STEP = 64 * 1024
# Small bodies compress well (repeated JSON keys): the ratio cap starts past this size.
_RATIO_FLOOR = 1024 * 1024


class LimitExceeded(Exception):
    """A request over one of the limits: `status` and `event` for the answer and its record."""

    def __init__(self, status: int, event: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.event = event
        self.message = message


@dataclass(frozen=True)
class BodyLimits:
    max_body_bytes: int  # as received (compressed, if it is)
    max_decoded_bytes: int
    max_ratio: float
    body_timeout: float  # seconds to receive the whole body, once the headers are in


def handler_args(*, max_line_size: int, max_field_size: int, max_headers: int) -> dict[str, Any]:
    """aiohttp's per-connection settings: its parser's limits, and no decoding of request
    bodies of its own (this module decodes, with caps on size and ratio)."""
    return {"max_line_size": max_line_size, "max_field_size": max_field_size, "max_headers": max_headers,
            "auto_decompress": False}


def check_framing(headers: CIMultiDictProxy[str]) -> None:
    """Refuse framing that two HTTP parsers could read two ways (request smuggling). aiohttp
    already refuses Content-Length with Transfer-Encoding, repeated Content-Length and an
    unknown last coding; what reaches here with a coding before `chunked` (`gzip, chunked`)
    has a body aiohttp did not decode: it is refused too."""
    lengths = headers.getall("Content-Length", [])
    codings = [part.strip().lower() for value in headers.getall("Transfer-Encoding", []) for part in value.split(",")]
    if len(lengths) > 1:
        raise LimitExceeded(400, "request_smuggling", "more than one Content-Length header")
    if lengths and codings:
        raise LimitExceeded(400, "request_smuggling", "both Content-Length and Transfer-Encoding")
    if codings and codings != ["chunked"]:
        raise LimitExceeded(400, "request_smuggling",
                            f"Transfer-Encoding {', '.join(codings)!r}: only 'chunked' is accepted")


async def read_body(request: web.Request, limits: BodyLimits) -> bytes:
    """The request body, decoded, within the limits (or LimitExceeded). The framing is
    the caller's to check first (`check_framing`)."""
    try:
        if request.content.is_eof():
            raw = await request.read()  # the whole body is in already: nothing to time
        else:
            async with asyncio.timeout(limits.body_timeout):
                raw = await request.read()
    except TimeoutError:
        raise LimitExceeded(408, "body_timeout", f"the request body did not arrive within {limits.body_timeout:g} "
                            "seconds") from None
    except web.HTTPRequestEntityTooLarge:
        raise LimitExceeded(413, "body_too_large",
                            f"request body is larger than the firewall's limit of {limits.max_body_bytes} bytes") from None
    return decode_body(raw, request.headers.get("Content-Encoding", ""), max_bytes=limits.max_decoded_bytes,
                       max_ratio=limits.max_ratio)


def decode_body(raw: bytes, content_encoding: str, *, max_bytes: int, max_ratio: float) -> bytes:
    """`raw` with its content codings undone (the last applied is undone first). The
    decoded size may not pass `max_bytes`, nor `max_ratio` times len(raw) once past 1 MiB."""
    codings = [part.strip().lower() for part in content_encoding.split(",") if part.strip()]
    codings = [coding for coding in codings if coding != "identity"]
    if not codings:
        return raw
    unknown = [coding for coding in codings if coding not in _DECODERS]
    if unknown:
        raise LimitExceeded(415, "unsupported_encoding", f"Content-Encoding {', '.join(unknown)!r} is not supported "
                            f"(supported: {', '.join(ENCODINGS)})")
    budget = min(max_bytes, max(int(max_ratio * len(raw)), _RATIO_FLOOR))
    data = raw
    for coding in reversed(codings):
        try:
            data = _DECODERS[coding](data, budget)
        except _OverBudget:
            by_ratio = budget < max_bytes
            raise LimitExceeded(413, "decompression_bomb", f"the {coding} body decodes to more than {budget} bytes ("
                                + (f"over {max_ratio:g} times the {len(raw)} bytes received" if by_ratio
                                   else "the firewall's limit for a decoded body") + ")") from None
        except (zlib.error, brotli.error, ZstdError, _Malformed) as error:
            raise LimitExceeded(400, "bad_encoding", f"the body is not valid {coding}: {error}") from None
    return data


class _OverBudget(Exception):
    pass


class _Malformed(ValueError):
    pass


class _Output:
    """Decoded pieces, counted against a budget as they come."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.pieces: list[bytes] = []
        self.size = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.budget:
            raise _OverBudget
        self.pieces.append(piece)

    def joined(self) -> bytes:
        return b"".join(self.pieces)


def _zlib(wbits: int) -> Callable[[bytes, int], bytes]:
    def decode(data: bytes, budget: int) -> bytes:
        decoder = zlib.decompressobj(wbits)
        out = _Output(budget)
        pending = data
        while not decoder.eof:
            piece = decoder.decompress(pending, _STEP)
            pending = decoder.unconsumed_tail
            if not piece and not pending:
                break  # all input consumed and nothing more comes out: truncated
            out.add(piece)
        _ended(decoder.eof, decoder.unused_data)
        return out.joined()
    return decode


def deflate_wbits(start: bytes) -> int:
    """zlib's `wbits` for an HTTP "deflate" body that begins with `start` (two bytes or
    more): the zlib format (RFC 9110 8.4.1.2), or raw deflate, as some peers send."""
    zlib_header = len(start) >= 2 and start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def _deflate(data: bytes, budget: int) -> bytes:
    return _zlib(deflate_wbits(data))(data, budget)


# brotli 1.2 is the first whose decoder can cap its output; an environment that must keep
# an older one (mitmproxy 11.0 pins brotli<=1.1.0: the forward mode's) refuses br bodies
# rather than expand one without a bound.
_BROTLI_BOUNDED = hasattr(brotli.Decompressor(), "can_accept_more_data")


def _brotli(data: bytes, budget: int) -> bytes:
    if not _BROTLI_BOUNDED:
        raise LimitExceeded(415, "unsupported_encoding",
                            f"br request bodies need brotli>=1.2, whose decoder can cap its output (installed: "
                            f"{getattr(brotli, '__version__', 'unknown')}); send the body as gzip, deflate or zstd")
    decoder = brotli.Decompressor()
    out = _Output(budget)
    piece = decoder.process(data, output_buffer_limit=_STEP)
    out.add(piece)
    # brotli says no more output is pending only by returning none (aiohttp reads it so too).
    while piece and not decoder.is_finished():
        piece = decoder.process(b"", output_buffer_limit=_STEP)
        out.add(piece)
    _ended(decoder.is_finished(), b"")
    return out.joined()


def _zstd(data: bytes, budget: int) -> bytes:
    decoder = ZstdDecompressor()
    out = _Output(budget)
    out.add(decoder.decompress(data, _STEP))
    while not decoder.eof and not decoder.needs_input:
        out.add(decoder.decompress(b"", _STEP))
    _ended(decoder.eof, decoder.unused_data)
    return out.joined()


def _ended(finished: bool, trailing: bytes) -> None:
    if not finished:
        raise _Malformed("the compressed stream is truncated")
    if trailing:
        # A second member or frame, or garbage: one stream per body, nothing to read two ways.
        raise _Malformed(f"{len(trailing)} bytes after the end of the compressed stream")


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _zlib(16 + zlib.MAX_WBITS), "x-gzip": _zlib(16 + zlib.MAX_WBITS), "deflate": _deflate,
    "br": _brotli, "zstd": _zstd,
}


class StreamSlots:
    """How many streamed answers are being relayed at once, against a maximum. Used from
    one event loop only (no lock needed)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.maximum:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1
