"""The mitmproxy addon: every flow of the forward proxy through the firewall.

Hooks, in the order mitmproxy calls them:
- `http_connect`: a CONNECT for a host the policy does not name is refused (403), or
  marked to be tunnelled when the policy says `unknown_hosts: tunnel`;
- `requestheaders`: the flow is in flight (a drain waits for it) until `response` or `error`;
- `tls_clienthello`: such a tunnel is passed through as bytes, never decrypted;
- `request`: the request's destination (inside a tunnel, the CONNECT's host, whatever the
  Host header says; else its Host) must be a named host; then the reverse proxy's own
  steps decide it;
- `responseheaders`: a streamed answer gets a StreamGuard as mitmproxy's stream callable;
- `response`: a buffered answer is inspected whole; a streamed one is recorded;
- `error`: the upstream could not be reached, or a stream broke off; or mitmproxy refused a
  body over `body_size_limit` (the firewall's `max_body_bytes`), which is recorded here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final
from urllib.parse import quote, unquote

import orjson
from mitmproxy import http, tls

from firewall.forward.hosts import ForwardHosts
from firewall.forward.steps import Answer, Forward, ForwardSteps, RequestView
from firewall.policy import Policy
from firewall.protocols import OpenAIChat, wire_format_for_path
from firewall.proxy.server import EXCHANGE_HEADER, Firewall

__all__ = ["FirewallAddon"]

log = logging.getLogger("firewall.forward")

_FORWARD: Final = "agent_firewall.forward"  # flow.metadata: the Forward of an inspected request
_PASSED: Final = "agent_firewall.passed"  # flow.metadata: a request for an unnamed host, tunnelled over plain HTTP
_OPENAI = OpenAIChat()


class FirewallAddon:
    """mitmproxy hooks that put each flow through the firewall (see the module's doc)."""

    def __init__(self, firewall: Firewall) -> None:
        self.steps = ForwardSteps(firewall)
        self._compiled: tuple[Policy, ForwardHosts] | None = None
        self.in_flight: set[str] = set()  # ids of the flows between their request headers and their end
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Until no flow is in flight."""
        await self._idle.wait()

    def _began(self, flow: http.HTTPFlow) -> None:
        self.in_flight.add(flow.id)
        self._idle.clear()

    def _ended(self, flow: http.HTTPFlow) -> None:
        self.in_flight.discard(flow.id)
        if not self.in_flight:
            self._idle.set()

    @property
    def hosts(self) -> ForwardHosts:
        """The running policy's hosts (a reload brings new ones)."""
        policy = self.steps.firewall.policy
        if self._compiled is None or self._compiled[0] is not policy:
            self._compiled = (policy, ForwardHosts.from_spec(policy.spec.forward))
        return self._compiled[1]

    # -- connections ------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        host, port = flow.request.host, flow.request.port
        hosts = self.hosts
        if hosts.inspects(host, port):
            return
        if hosts.unknown_hosts == "tunnel":
            try:
                self.steps.host_event(event="tunnelled_host", host=host, port=port, status=200, action="allow",
                                      message="CONNECT for a host the policy does not name: tunnelled uninspected "
                                              "(forward.unknown_hosts: tunnel)")
                return
            except Exception:  # noqa: BLE001 - what cannot be recorded is not passed
                log.exception("the audit log cannot be written; the tunnel to %s:%s is refused", host, port)
                message = f"agent-firewall: the audit log cannot be written; the tunnel to {host}:{port} was refused"
                flow.response = http.Response.make(503, message + "\n", {"Content-Type": "text/plain; charset=utf-8"})
                flow.response.reason = "Audit log unavailable: agent-firewall refuses the tunnel"
                return
        message = (f"agent-firewall refuses {host}:{port}: not a host the policy inspects "
                   f"(forward.hosts: {hosts.describe()}); forward.unknown_hosts: tunnel passes such hosts uninspected")
        flow.response = http.Response.make(403, message + "\n", {"Content-Type": "text/plain; charset=utf-8"})
        # What an SDK shows of a refused CONNECT is its status line.
        flow.response.reason = f"Forbidden by agent-firewall: {host}:{port} is not in forward.hosts"
        flow.response.headers[EXCHANGE_HEADER] = self.steps.host_event(
            event="unknown_host", host=host, port=port, status=403, action="block", message=message)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        address = data.context.server.address
        if address is not None and not self.hosts.inspects(address[0], address[1]):
            # Only a tunnelled host gets this far (a refused CONNECT was answered 403).
            data.ignore_connection = True

    # -- requests ---------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        request = flow.request
        hosts = self.hosts
        if not hosts.inspects(request.host, request.port):
            self._unnamed_host(flow, hosts)
            return
        raw_path, _, query = request.path.partition("?")
        view = RequestView.of(request.method, unquote(raw_path), query, request.headers.items(multi=True),
                              request.raw_content or b"", self.steps.firewall.config.max_body_bytes)
        decided = await self.steps.decide(view)
        if isinstance(decided, Answer):
            flow.response = _response(decided)
            return
        flow.metadata[_FORWARD] = decided
        _rewrite(request, decided, unchanged_path=view.path, raw_path=raw_path)

    def _unnamed_host(self, flow: http.HTTPFlow, hosts: ForwardHosts) -> None:
        request = flow.request
        host, port = request.host, request.port
        wire = wire_format_for_path(request.path) or _OPENAI
        # A plain-HTTP request can be passed on as it is. An HTTPS one that got here has been
        # decrypted (a client speaking TLS to the proxy itself, naming the host by SNI): that
        # is no tunnel, and it is refused whatever the policy says.
        if hosts.unknown_hosts == "tunnel" and request.scheme == "http":
            try:
                self.steps.host_event(event="uninspected_host", host=host, port=port, status=0, action="allow",
                                      message=f"{request.method} {request.path.partition('?')[0]} for a host the policy "
                                              "does not name: forwarded uninspected (forward.unknown_hosts: tunnel)")
            except Exception:  # noqa: BLE001 - what cannot be recorded is not passed
                log.exception("the audit log cannot be written; a request for %s:%s is refused", host, port)
                message = "agent-firewall: the audit log cannot be written; nothing was forwarded"
                flow.response = http.Response.make(503, orjson.dumps(wire.error_body(503, message)),
                                                   {"Content-Type": "application/json"})
                return
            flow.metadata[_PASSED] = True
            return
        within = request.scheme == "https" and hosts.unknown_hosts == "tunnel"
        message = (f"agent-firewall refuses {host}:{port}: not a host the policy inspects (forward.hosts: {hosts.describe()})"
                   + ("; a request the firewall has decrypted is never passed uninspected"
                      if within else "; forward.unknown_hosts: tunnel passes such hosts uninspected"))
        body = orjson.dumps(wire.error_body(403, message, code="unknown_host"))
        flow.response = http.Response.make(403, body, {"Content-Type": "application/json"})
        flow.response.headers[EXCHANGE_HEADER] = self.steps.host_event(
            event="unknown_host", host=host, port=port, status=403, action="block", message=message)

    # -- answers ----------------------------------------------------------------------

    async def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        if flow.metadata.get(_PASSED):
            response.stream = True
            return
        forward: Forward | None = flow.metadata.get(_FORWARD)
        if forward is None:
            return  # an answer the firewall made itself
        if forward.exchange is None:
            response.stream = True  # a route forwarded uninspected passes as it comes
            return
        if not self.steps.streams(forward, response.status_code, response.headers):
            return  # buffered, and inspected whole in `response`
        opened = await self.steps.open_stream(forward, response.headers.items(multi=True))
        if isinstance(opened, Answer):
            del flow.metadata[_FORWARD]
            _replace_head(response, opened.status, opened.headers)
            response.stream = _Once(opened.body)
            return
        _replace_head(response, 200, opened.headers)
        response.stream = opened

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._began(flow)

    async def response(self, flow: http.HTTPFlow) -> None:
        try:
            await self._response(flow)
        finally:
            self._ended(flow)

    async def _response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        forward: Forward | None = flow.metadata.get(_FORWARD)
        if response is None or forward is None:
            return
        if forward.exchange is None:
            self.steps.passed(forward, response.status_code)
        elif forward.stream is not None:
            await self.steps.close_stream(forward)
        else:
            answer = await self.steps.answer(forward, response.status_code, response.headers.items(multi=True),
                                             response.get_content(strict=False) or b"")
            flow.response = _response(answer)

    async def error(self, flow: http.HTTPFlow) -> None:
        try:
            await self._error(flow)
        finally:
            self._ended(flow)

    async def _error(self, flow: http.HTTPFlow) -> None:
        forward: Forward | None = flow.metadata.get(_FORWARD)
        if forward is None and flow.error is not None and "body_size_limit" in flow.error.msg and flow.response is None:
            # mitmproxy answered 413 itself before the body was read: recorded as the reverse proxy records it.
            limit = self.steps.firewall.config.max_body_bytes
            self.steps.host_event(event="body_too_large", host=flow.request.host, port=flow.request.port, status=413,
                                  action="block", message=f"request body is larger than the firewall's limit of {limit} "
                                                          "bytes")
            return
        if forward is None or flow.error is None:
            return
        if forward.stream is not None:
            await self.steps.close_stream(forward, broken=flow.error.msg)
        elif flow.response is None:
            self.steps.upstream_failed(forward, flow.error.msg)


class _Once:
    """A stream callable that sends `body` in place of whatever the upstream sends (a
    list, as GuardedStream answers: an empty bytes would end the body)."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def __call__(self, _chunk: bytes) -> list[bytes]:
        body, self._body = self._body, None
        return [body] if body else []


def _response(answer: Answer) -> http.Response:
    return http.Response.make(answer.status, answer.body, [(k.encode(), v.encode()) for k, v in answer.headers])


def _replace_head(response: http.Response, status: int, headers: tuple[tuple[str, str], ...]) -> None:
    """New status and headers for a response whose body is streamed: its length is not
    known ahead, so it goes chunked."""
    response.status_code = status
    response.reason = ""
    response.headers = http.Headers([(k.encode(), v.encode()) for k, v in headers
                                     if k.lower() not in ("content-length", "transfer-encoding")])
    response.headers["transfer-encoding"] = "chunked"


def _rewrite(request: http.Request, forward: Forward, *, unchanged_path: str, raw_path: str) -> None:
    """The request as the upstream gets it: the path without an agent prefix, the headers
    the firewall forwards, the body as decided (rewrites applied)."""
    host = request.host_header
    path, _, query = forward.path.partition("?")
    if path != unchanged_path:
        raw_path = quote(path, safe="/:@!$&'()*+,;=-._~")
    request.path = f"{raw_path}?{query}" if query else raw_path
    request.headers = http.Headers([(k.encode(), v.encode()) for k, v in forward.headers])
    if host is not None:
        request.host_header = host
    # The answer must be readable as it streams: no compression.
    request.headers["accept-encoding"] = "identity"
    request.raw_content = forward.body
    if forward.body or request.method in ("POST", "PUT", "PATCH"):
        request.headers["content-length"] = str(len(forward.body))

