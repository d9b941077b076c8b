"""The reverse proxy's steps, for a request that mitmproxy carries instead of aiohttp.

Forward mode must decide exactly as the reverse proxy does: the same identity, parsing,
agents, rules, refusals and audit records. Rather than copy that flow, `ForwardSteps`
runs the reverse proxy's own handler with its two upstream steps replaced: where the
reverse proxy would call the upstream, the handler returns a `Forward` (what to send),
and mitmproxy sends it. The answer comes back through `answer` (a buffered response) or
`open_stream` (a streamed one, checked by the one StreamGuard).

Nothing here imports mitmproxy: the requests and answers are plain values, so these
steps are tested in any environment.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from firewall.agents.turns import knows_turn_ids, streamed_messages
from firewall.audit.record import event_record
from firewall.message_stream import MessageStreamGuard
from firewall.model import Action, Exchange
from firewall.protocols import BodyShapeError, WireFormat
from firewall.protocols.messages import MessageStreamReader
from firewall.proxy.server import (
    _RESPONSE_DROP,
    EXCHANGE_HEADER,
    SOURCE_HEADER,
    TAGS_HEADER,
    Firewall,
    _AuditUnavailable,
    _Call,
    _end,
)
from firewall.proxy.upstream import UpstreamClient
from firewall.stream import StreamGuard

__all__ = ["Answer", "Forward", "ForwardSteps", "GuardedStream", "RequestView"]

log = logging.getLogger("firewall.forward")


class _WholeBody:
    """A request body's stream as `limits.read_body` asks it: at its end already."""

    def is_eof(self) -> bool:
        return True


_WHOLE = _WholeBody()


@dataclass(frozen=True, slots=True)
class RequestView:
    """The parts of an aiohttp request that the reverse proxy's steps read, taken from
    another listener's request."""

    method: str
    path: str  # decoded, without the query string
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    max_body_bytes: int

    @classmethod
    def of(cls, method: str, path: str, query_string: str, headers: Iterable[tuple[str, str]], body: bytes,
           max_body_bytes: int) -> RequestView:
        return cls(method, path, query_string, CIMultiDictProxy(CIMultiDict(headers)), body, max_body_bytes)

    @property
    def query(self) -> MultiDictProxy[str]:
        return MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))

    @property
    def content(self) -> _WholeBody:
        return _WHOLE  # mitmproxy hands over a body that has arrived whole

    async def read(self) -> bytes:
        if len(self.body) > self.max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body_bytes, actual_size=len(self.body))
        return self.body


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP answer the firewall gives the agent itself."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def of(cls, response: web.Response) -> Answer:
        body = response.body
        return cls(response.status, tuple(response.headers.items()), body if isinstance(body, bytes) else b"")

    @property
    def content_type(self) -> str:
        return next((value for key, value in self.headers if key.lower() == "content-type"), "")


@dataclass(slots=True)
class Forward:
    """The request passed: send it upstream with this path, these headers and this body."""

    call: _Call
    wire: WireFormat
    exchange: Exchange | None  # None: a request the policy forwards uninspected
    method: str
    path: str  # with the query string
    headers: list[tuple[str, str]]  # hop-by-hop headers removed, firewall keys swapped for provider keys
    body: bytes
    # For a request passed uninspected: the audit event and why (as the reverse proxy records them).
    event: str = "uninspected_route"
    note: str = ""
    stream: GuardedStream | None = field(default=None, repr=False)  # set once a streamed answer begins


class ForwardSteps:
    """The firewall's steps for one listener that is not the aiohttp one."""

    def __init__(self, firewall: Firewall) -> None:
        self.firewall = firewall
        self._handler = _ForwardingFirewall(firewall)

    async def decide(self, request: RequestView) -> Forward | Answer:
        """Everything the reverse proxy does before it calls the upstream: a refusal or a
        block as an Answer (already recorded), or what to forward."""
        decided = await self._handler.handle(cast(web.Request, request))
        if isinstance(decided, Forward):
            return decided
        return Answer.of(cast(web.Response, decided))

    async def answer(self, forward: Forward, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """A buffered upstream answer to an inspected request, inspected in its turn."""
        call, wire, exchange = forward.call, forward.wire, forward.exchange
        assert exchange is not None  # an uninspected route's answer goes through `passed`
        try:
            response = await self._handler._inspect_response(
                call, wire, exchange, status, CIMultiDictProxy(CIMultiDict(headers)), body)
            return Answer.of(response)
        except _AuditUnavailable as error:
            message = f"agent-firewall: the audit log cannot be written ({error}); the answer was withheld"
            return Answer.of(self._handler._respond(call, 503, orjson.dumps(wire.error_body(503, message))))
        except Exception as error:  # noqa: BLE001 - fail closed, as the reverse proxy does
            log.exception("internal error on the answer to exchange %s", call.id)
            message = f"internal error while inspecting the answer ({type(error).__name__}); it was withheld"
            try:
                return Answer.of(self._handler._refuse(call, wire, 500, message, event="internal_error",
                                                       direction="response"))
            except _AuditUnavailable:
                return Answer.of(self._handler._respond(call, 500, orjson.dumps(wire.error_body(500, message))))
        finally:
            self._settle(call)

    def passed(self, forward: Forward, status: int) -> None:
        """Record the answer to a route the policy forwards uninspected."""
        call = forward.call
        self.firewall.metrics.answered(forward.wire.name, status)
        self.firewall.record(event_record(
            call.id, event=forward.event, agent=call.identity.agent if call.identity else None,
            route=f"{forward.method} {forward.path.split('?', 1)[0]}", status=status, error=forward.note,
            policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256, action="allow",
        ))

    def streams(self, forward: Forward, status: int, headers: Mapping[str, str]) -> bool:
        """Whether this answer is checked as it streams (rather than buffered whole): the
        same test as the reverse proxy's, and a body the firewall can read as it comes."""
        return (forward.exchange is not None and status == 200
                and forward.call.rt.policy.stream.mode == "incremental"
                and "text/event-stream" in headers.get("Content-Type", "")
                and headers.get("Content-Encoding", "identity").lower() == "identity")

    async def open_stream(self, forward: Forward, headers: Iterable[tuple[str, str]]) -> GuardedStream | Answer:
        """A StreamGuard for a streamed answer, with the headers the agent gets; or, when
        the rules refuse the stream before its first event, the Answer to send instead."""
        call, wire, exchange = forward.call, forward.wire, forward.exchange
        assert exchange is not None  # only inspected routes stream through a guard
        rt = call.rt
        reader = wire.stream_reader()
        # As the reverse proxy chooses (Firewall._stream): events that each carry a whole
        # message are decided one by one; growing text goes through the StreamGuard.
        guard: StreamGuard | MessageStreamGuard = (
            MessageStreamGuard(rt.engine, reader, exchange) if isinstance(reader, MessageStreamReader)
            else StreamGuard(rt.engine, reader, exchange, rt.holdback_for(wire.name), rt.window_engine))
        if guard.at_start.action is Action.BLOCK:
            await self._handler._record_stream(call, wire, exchange, guard, note="blocked before the first event")
            return Answer.of(await self._handler._blocked(call, wire, exchange, guard.at_start))
        call.tags.extend(tag for tag in guard.at_start.tags if tag not in call.tags)
        out = [(key, value) for key, value in headers if key.lower() not in _RESPONSE_DROP]
        out.append((EXCHANGE_HEADER, call.id))
        if call.tags:
            out.append((TAGS_HEADER, ",".join(call.tags)))
        if call.source:
            out.append((SOURCE_HEADER, call.source))
        self.firewall.metrics.answered(wire.name, 200)
        forward.stream = GuardedStream(guard, forward, tuple(out), reader)
        return forward.stream

    async def close_stream(self, forward: Forward, *, broken: str | None = None) -> None:
        """Record a stream that has ended; `broken` says why it ended early (the upstream or
        the agent went away), when it did: then nothing more was released."""
        stream = forward.stream
        if stream is None or stream.recorded or forward.exchange is None:
            return
        stream.recorded = True
        note = None
        if broken is not None and not stream.guard.finished:
            stream.guard.abort(f"agent-firewall: the stream broke off ({broken})")
            note = f"the stream broke off: {broken}"
        call, wire, exchange = forward.call, forward.wire, forward.exchange
        try:
            await self._handler._record_stream(call, wire, exchange, stream.guard, note=note)
            if knows_turn_ids(stream.reader):
                # As the reverse proxy does after a stream: the turn, as the agent received
                # it, for a later request that continues it by id.
                outcome = stream.guard.outcome()
                said = streamed_messages(outcome.released_text, outcome.tool_calls)
                await self._handler._agents(call, self._handler._remember_turn(call, wire, exchange,
                                                                               stream.reader.turn_ids(), said))
        finally:
            self._settle(call)

    def upstream_failed(self, forward: Forward, error: str) -> None:
        """The upstream could not be reached, or broke off before answering."""
        call = forward.call
        self.firewall.record(event_record(
            call.id, event="upstream_unreachable", agent=call.identity.agent if call.identity else None,
            route=forward.wire.name, status=502, error=f"the upstream is unreachable: {error}",
            policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256, direction="response",
        ))

    def host_event(self, *, event: str, host: str, port: int, status: int, message: str, action: str) -> str:
        """Record what became of a host the policy does not name; returns the record's id."""
        policy = self.firewall.policy
        exchange_id = "ex_" + os.urandom(12).hex()
        self.firewall.record(event_record(
            exchange_id, event=event, agent=None, route=f"{host}:{port}", status=status, error=message,
            policy_name=policy.name, policy_sha256=policy.sha256, action=action,
        ))
        return exchange_id

    def _settle(self, call: _Call) -> None:
        if call.rt.guard.unsettled:
            self._handler._settle_soon(call.rt.guard)


class GuardedStream:
    """mitmproxy's stream callable for one answer: each chunk from the upstream in, what
    the StreamGuard releases out; b"" (the end of the body) closes the guard.

    It answers with a list of chunks, empty when nothing is released: mitmproxy writes a
    returned b"" as an HTTP/1.1 chunk of length zero, which ends the body."""

    def __init__(self, guard: StreamGuard | MessageStreamGuard, forward: Forward,
                 headers: tuple[tuple[str, str], ...], reader: object = None) -> None:
        self.guard = guard
        self.headers = headers
        self.reader = reader
        self.recorded = False
        self._forward = forward

    def __call__(self, chunk: bytes) -> list[bytes]:
        guard, call = self.guard, self._forward.call
        if guard.finished:
            return []  # blocked or failed: the rest of the upstream's stream is dropped
        provider = self._forward.wire.provider
        try:
            out = guard.feed(chunk) if chunk else guard.close()
        except BodyShapeError as error:
            out = _end(guard, f"agent-firewall: the {provider} upstream sent a stream the firewall cannot inspect ({error})")
        except Exception as error:  # noqa: BLE001 - a bug must end the stream closed, not hang it
            log.exception("internal error in stream %s", call.id)
            out = _end(guard, f"agent-firewall: internal error while inspecting the stream ({type(error).__name__})")
        if not out:
            return []
        call.timings.setdefault("first_byte", time.perf_counter() - call.started)
        return [out]


class _ForwardingFirewall(Firewall):
    """The listener's Firewall with its upstream steps left to the caller.

    It shares the Firewall's instance dictionary rather than copying it: one policy
    runtime, agent state, audit log and metrics for both listeners, and a reload through
    either is seen by both. Only the methods that would call an upstream differ: the
    inspected request (`_forward`), the one passed uninspected (`_pass_through`), and, as
    a backstop, the upstream client, so that a path not replaced here fails closed
    instead of reaching the reverse proxy's configured upstream."""

    def __init__(self, firewall: Firewall) -> None:  # no super().__init__: the state is the firewall's own
        self.__dict__ = firewall.__dict__

    async def _forward(self, request: web.Request, call: _Call, wire: WireFormat, exchange: Exchange,  # type: ignore[override]
                       body: bytes) -> Forward | web.Response:
        return self._pass(request, call, wire, exchange, body)

    async def _pass_through(self, request: web.Request, call: _Call, wire: WireFormat, *, event: str,  # type: ignore[override]
                            note: str) -> Forward | web.Response:
        passed = self._pass(request, call, wire, None, await request.read())
        if isinstance(passed, Forward):
            passed.event, passed.note = event, note
        return passed

    @property
    def upstream(self) -> UpstreamClient:  # a property: found before the shared instance dictionary's client
        raise RuntimeError("forward mode: a step called an upstream itself; only mitmproxy may")

    def _pass(self, request: web.Request, call: _Call, wire: WireFormat, exchange: Exchange | None,
              body: bytes) -> Forward | web.Response:
        headers = self._upstream_headers(call, wire, request.headers)
        if headers is None:
            return self._no_provider_key(call, wire)
        path = call.identity.path if call.identity else request.path
        query = request.query_string
        return Forward(call, wire, exchange, request.method, f"{path}?{query}" if query else path, headers, body)
