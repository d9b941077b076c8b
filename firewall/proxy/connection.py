"""The firewall's side of each client connection, before there is a request to route.

aiohttp's own request handler answers two kinds of trouble by itself, before the
application sees anything: a request its HTTP parser refuses (malformed, smuggling such as
Content-Length with Transfer-Encoding, a request line or header over the limits) gets a
plain-text 400 that nobody records, and a client that trickles its headers (slowloris) is
waited for as long as the connection lives. Here both become refusals like the others: an
answer in the providers' JSON error shape and an audit record, and a 408 for headers not
complete within `header_timeout` seconds of the connection opening or of its last answer.
An idle kept-alive connection that sent nothing is closed quietly at the same deadline.

`runner_for(app)` is how every server of a firewall application is set up (the CLI, the
tests): an `AppRunner` whose connections are `FirewallConnection`s when `app` carries
`CONNECTIONS`, the plain one otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_request import BaseRequest

__all__ = ["CONNECTIONS", "ConnectionRefusals", "FirewallConnection", "runner_for"]

log = logging.getLogger("firewall.proxy")


class ConnectionRefusals(Protocol):
    """What a connection needs from the firewall: its deadline, and a refusal recorded."""

    header_timeout: float

    def refuse_unrouted(self, status: int, event: str, message: str) -> tuple[dict[str, str], bytes]:
        """Record a refusal made before routing; the headers and the JSON body to send."""


CONNECTIONS: web.AppKey[ConnectionRefusals] = web.AppKey("firewall_connections", ConnectionRefusals)
class FirewallConnection(web.RequestHandler):
    """aiohttp's request handler, with parser refusals in JSON and recorded, and a deadline
    for a request's headers."""

    def __init__(self, manager: web.Server, *, refusals: ConnectionRefusals, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._refusals = refusals
        self._deadline: asyncio.TimerHandle | None = None
        self._armed_at = 0.0  # loop time the deadline counts from
        self._answered = 0  # requests seen when the deadline was armed
        self._partial = False  # bytes of a request not yet complete have arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        # A whole request since the deadline was armed disarms it (until its answer
        # re-arms it); bytes that completed nothing are a request still coming.
        self._partial = self._request_count == before

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        super().log_access(request, response, time)
        self._arm()  # the next request's headers are due within the deadline from now

    def _arm(self) -> None:
        # Re-armed after every answer by moving its start: a timer already set fires at
        # the old deadline and sets itself again for the new one (cheaper than cancelling
        # and scheduling a timer per request).
        self._armed_at = self._loop.time()
        self._answered = self._request_count
        self._partial = False
        if self._deadline is None:
            self._deadline = self._loop.call_at(self._armed_at + self._refusals.header_timeout, self._headers_due)

    def _headers_due(self) -> None:
        self._deadline = None
        due = self._armed_at + self._refusals.header_timeout
        if due > self._loop.time():
            self._deadline = self._loop.call_at(due, self._headers_due)
            return
        transport = self.transport
        if self._request_count != self._answered or transport is None or transport.is_closing():
            return  # a request came (its answer re-arms), or the connection is gone
        if getattr(self, "_current_request", None) is not None or getattr(self, "_messages", None):
            self._arm()  # a pipelined request is still being answered or waits its turn: not idle
            return
        if not self._partial:
            self.force_close()  # idle keep-alive: nothing to refuse, nothing to record
            transport.close()
            return
        message = (f"the request's headers were not complete within {self._refusals.header_timeout:g} s "
                   "(header_timeout); the connection is closed")
        try:
            headers, body = self._refusals.refuse_unrouted(408, "request_timeout", message)
        except Exception:  # noqa: BLE001 - the audit log failed: still cut the slow client off
            log.exception("could not record a slow request's refusal")
            headers, body = {}, b'{"error": {"message": "agent-firewall: request timeout"}}'
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        transport.write(f"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n{head}"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii") + body)
        self.force_close()
        transport.close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:  # the application's own failure (500) or timeout (504)
            return super().handle_error(request, status, exc, message)
        # Below 500 only the parser answers here: the application never saw a request.
        reason = _first_line(message or (str(exc) if exc else "") or "malformed request")
        try:
            headers, body = self._refusals.refuse_unrouted(
                status, "malformed_http", f"the request is not well-formed HTTP: {reason}")
        except Exception:  # noqa: BLE001 - the audit log failed: refuse all the same
            log.exception("could not record a parser refusal")
            return super().handle_error(request, status, exc, message)
        response = web.Response(status=status, body=body, content_type="application/json", headers=headers)
        response.force_close()
        return response


_QUOTED = re.compile(r"""[:\s]*b?['"]""")  # where a quoted excerpt of the request begins


def _first_line(message: str) -> str:
    """What the parser says is wrong, without the excerpt of the request it quotes after
    it: that excerpt could hold a header's value (a key) and must not reach the log."""
    line = message.strip().splitlines()[0] if message.strip() else "malformed request"
    return _QUOTED.split(line, maxsplit=1)[0].rstrip(":. ")[:200]


class _FirewallServer(web.Server):
    """aiohttp's connection factory, building `FirewallConnection`s."""

    refusals: ConnectionRefusals

    def __call__(self) -> web.RequestHandler:
        return FirewallConnection(self, loop=self._loop, refusals=self.refusals, **self._kwargs)


class _FirewallRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The server aiohttp built for this application (routing, handler_args, access
        # log), with only its connection factory replaced: a subclass adds no state.
        server.__class__ = _FirewallServer
        server.refusals = self.app[CONNECTIONS]  # type: ignore[attr-defined]
        return server


def runner_for(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner to serve `app` with: see the module doc."""
    return (_FirewallRunner if CONNECTIONS in app else web.AppRunner)(app, **kwargs)
