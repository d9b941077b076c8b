"""The reverse proxy: HTTP in, Exchange to the engine, Decision back out as HTTP.

The listener is thin on purpose: it knows nothing of any provider's body shapes (the
wire formats do) and nothing of the rules (the engine does). Every path through it, the
refusals included, writes an audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections.abc import Awaitable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from firewall.agents import HOW_TO_IDENTIFY, Identity, IdentityError, IdentityResolver
from firewall.agents.guard import Admission, AgentGuard
from firewall.agents.keys import KEY_PREFIX
from firewall.agents.state import StateBackend, StateUnavailable, open_state
from firewall.agents.turns import (
    Recalled,
    TurnMemory,
    as_forwarded,
    continues_turns,
    in_body,
    knows_turn_ids,
    streamed_messages,
)
from firewall.audit.record import agent_record, event_record, exchange_record, stream_record
from firewall.engine import Engine
from firewall.model import Action, Decision, Direction, Exchange, Message
from firewall.policy import Policy
from firewall.protocols import WIRE_FORMATS, BodyShapeError, WireFormat, wire_format_for_path
from firewall.protocols._json import DuplicateKeyError, NestingTooDeepError, loads_strict
from firewall.protocols.anthropic_messages import AnthropicMessages
from firewall.protocols.openai_chat import OpenAIChat
from firewall.proxy.config import ProxyConfig, upstream_ssl_context
from firewall.proxy.connection import CONNECTIONS
from firewall.proxy.limits import BodyLimits, LimitExceeded, StreamSlots, check_framing, handler_args, read_body
from firewall.proxy.drain import Drain
from firewall.proxy.metrics import Metrics
from firewall.proxy.upstream import (UpstreamBadResponse, UpstreamClient, UpstreamConnectTimeout, UpstreamError,
                                     UpstreamResponse)
from firewall.holdback import HoldBack, acts_mid_stream
from firewall.message_stream import MessageStreamGuard
from firewall.protocols.messages import MessageStreamReader
from firewall.stream import StreamGuard

TAGS_HEADER = "X-Firewall-Tags"
EXCHANGE_HEADER = "X-Firewall-Exchange-Id"
# AI-to-AI disclosure: the agent whose words the request carried, declared or found.
SOURCE_HEADER = "X-Firewall-Source-Agent"
AI_TO_AI_TAG = "ai-to-ai"

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded;
# Content-Length is recomputed for whatever body is sent.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length",
})
# The upstream's response body reaches the client decoded (it had to be, to be inspected),
# and so does an inspected request's body reach the upstream.
_RESPONSE_DROP = _HOP_BY_HOP | {"content-encoding"}
_DECODED_REQUEST_DROP = _RESPONSE_DROP

log = logging.getLogger("firewall.proxy")

_OPENAI = OpenAIChat()
_ANTHROPIC = AnthropicMessages()


class AuditSink(Protocol):
    """What the proxy needs of an audit log; `AuditWriter` is one."""

    def write(self, record: dict[str, Any]) -> Any: ...


class _ClientGone(Exception):
    """The client closed the connection while a stream was being sent to it."""


class _AuditUnavailable(Exception):
    """The audit log cannot be written: what cannot be recorded is not forwarded."""


@dataclass(frozen=True)
class _Runtime:
    """Everything built from one policy. A reload builds a new one and swaps it in whole,
    so no request ever sees one policy's engine with another's identities or guard."""

    policy: Policy
    engine: Engine
    window_engine: Engine
    holdback: HoldBack  # for any route
    holdbacks: dict[str, HoldBack]  # per wire format: rules scoped to other routes hold nothing back
    identities: IdentityResolver
    guard: AgentGuard
    slow: ThreadPoolExecutor | None

    def holdback_for(self, route: str) -> HoldBack:
        return self.holdbacks.get(route, self.holdback)

    @classmethod
    def build(cls, policy: Policy, config: ProxyConfig, state: StateBackend) -> _Runtime:
        return cls(
            policy=policy,
            engine=Engine(policy),
            window_engine=Engine(policy, only=acts_mid_stream),
            holdback=HoldBack.for_policy(policy),
            holdbacks={wire.name: HoldBack.for_policy(policy, wire.name) for wire in WIRE_FORMATS},
            identities=IdentityResolver(policy.agents, header=config.agent_header, spec=policy.spec.identity),
            guard=AgentGuard(policy, state),
            # Inspections that may wait (on a judge, on a large model) run on threads; the
            # engine's caches are safe for that (dict operations under the GIL, locked caches).
            slow=ThreadPoolExecutor(4, thread_name_prefix="inspect") if _has_slow_detectors(policy) else None,
        )


@dataclass
class _Call:
    """One call through the proxy, gathered as it goes, for the audit record."""

    id: str
    rt: _Runtime  # the policy and what was built from it, fixed for the whole call
    identity: Identity | None = None
    wire: WireFormat | None = None
    admission: Admission = field(default_factory=Admission)
    source: str | None = None  # the other agent whose words the exchange carries
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    context: Recalled | None = None  # the earlier turn the request continues by id, if it names one
    said: tuple[Message, ...] = ()  # a continuable request's own messages as forwarded (earlier turns not included)
    holds_stream: bool = False  # took one of the streaming slots (limits.StreamSlots), given back when the call ends


class Firewall:
    """The proxy application. `app` is the aiohttp application to serve."""

    def __init__(self, config: ProxyConfig, policy: Policy, audit: AuditSink | None = None) -> None:
        self.config = config
        self.audit = audit
        self.state = open_state(config.state)
        self.turns = TurnMemory(self.state)
        self.metrics = Metrics()
        self._runtime = _Runtime.build(policy, config, self.state)
        self._runtimes = [self._runtime]  # every one built, for their executors at shutdown
        self.upstream = UpstreamClient(
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
            ssl_context=upstream_ssl_context(config.upstream_ca) if config.upstream_ca else None)
        self._settling: set[asyncio.Task[None]] = set()
        self._drain = Drain()
        self.audit_problem: str | None = None  # why the last audit write failed; None once one succeeds
        self.streams = StreamSlots(config.max_streams)
        self._body_limits = BodyLimits(config.max_body_bytes, config.max_decoded_bytes, config.max_decompression_ratio,
                                       config.body_timeout)
        self.app = web.Application(client_max_size=config.max_body_bytes, handler_args=handler_args(
            max_line_size=config.max_header_line_bytes, max_field_size=config.max_header_field_bytes,
            max_headers=config.max_headers))
        self.app[CONNECTIONS] = self
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_cleanup.append(self._close_upstream)

    @property
    def policy(self) -> Policy:
        return self._runtime.policy

    @property
    def engine(self) -> Engine:
        return self._runtime.engine

    @property
    def guard(self) -> AgentGuard:
        return self._runtime.guard

    def reload(self, policy: Policy, *, by: str) -> Policy:
        """Serve `policy` from the next request on; a request in flight finishes under the
        policy it started with. The caller has validated `policy` (loading it does). The
        swap is an audit record (`policy_reload`, saying what asked for it: `by`).
        Returns the policy replaced."""
        old = self._runtime.policy
        runtime = _Runtime.build(policy, self.config, self.state)
        self._runtimes.append(runtime)
        self._runtime = runtime  # one assignment: requests take the runtime they start with
        log.info("policy reloaded: %s (sha256 %s) replaces %s (sha256 %s)", policy.name, policy.sha256[:12],
                 old.name, old.sha256[:12])
        self._record(agent_record("reload_" + os.urandom(6).hex(), {
            "event": "policy_reload", "from": {"name": old.name, "sha256": old.sha256},
            "to": {"name": policy.name, "sha256": policy.sha256}, "by": by}, policy_name=policy.name,
            policy_sha256=policy.sha256))
        return old

    # -- the one handler ------------------------------------------------------------

    @property
    def header_timeout(self) -> float:
        return self.config.header_timeout

    def refuse_unrouted(self, status: int, event: str, message: str) -> tuple[dict[str, str], bytes]:
        """A refusal before there is a request to route (firewall/proxy/connection.py):
        recorded like any other, answered in the OpenAI error shape (the route is unknown)."""
        call = _Call(id=_exchange_id(), rt=self._runtime)
        response = self._refuse(call, _OPENAI, status, message, event=event)
        assert isinstance(response.body, bytes)
        return {EXCHANGE_HEADER: call.id}, response.body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = _Call(id=_exchange_id(), rt=self._runtime)
        guess = _guess_wire(request.path)
        task = self._drain.enter()
        try:
            if self._drain.draining:
                return self._refuse(call, guess, 503, "the firewall is shutting down and takes no new request; "
                                    "send it again (to another replica)", event="draining")
            response = await self._handle(request, call, guess)
            if call.rt.guard.unsettled:
                self._settle_soon(call.rt.guard)
            return response
        except asyncio.CancelledError as error:
            if not self._drain.is_cut_off(error):
                raise
            _uncancel()
            return self._refuse(call, call.wire or guess, 503, "the firewall shut down before the upstream answered "
                                "(the drain deadline passed); no answer was released", event="shutdown_cut_off",
                                direction="response")
        except _AuditUnavailable as error:
            message = f"agent-firewall: the audit log cannot be written ({error}); nothing was forwarded"
            return self._respond(call, 503, orjson.dumps((call.wire or guess).error_body(503, message)))
        except Exception as error:  # noqa: BLE001 - the last line of defence: fail closed, say why
            log.exception("internal error on %s %s (exchange %s)", request.method, request.path, call.id)
            message = f"internal error while inspecting ({type(error).__name__}); the exchange was not forwarded"
            try:
                return self._refuse(call, call.wire or guess, 500, message, event="internal_error")
            except _AuditUnavailable:
                return self._respond(call, 500, orjson.dumps((call.wire or guess).error_body(500, message)))
        finally:
            self._drain.leave(task)
            if call.holds_stream:
                self.streams.give_back()

    @property
    def draining(self) -> bool:
        """Shutting down: no new request is taken."""
        return self._drain.draining

    @property
    def in_flight(self) -> int:
        """Requests being handled now, streams included."""
        return self._drain.in_flight

    async def drain(self, seconds: float) -> int:
        """Take no new request; let those in flight (streams included) finish for up to
        `seconds`, then end the rest in the provider's terms, each recorded; wait for the
        deferred agent records. Returns how many were cut off."""
        cut = await self._drain.finish(seconds)
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=5.0)
        return cut

    def _settle_soon(self, guard: AgentGuard) -> None:
        """Finish the guard's deferred work once this handler has returned and aiohttp has
        written the answer: the agent does not wait for its answer to be fingerprinted."""
        task = asyncio.get_running_loop().create_task(self._settle(guard))
        self._settling.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._settling.discard)

    async def _settle(self, guard: AgentGuard) -> None:
        try:
            await guard.settle()
        except Exception:  # noqa: BLE001 - a background task has nobody to raise to
            log.exception("deferred lineage records could not be written")

    async def _handle(self, request: web.Request, call: _Call, guess: WireFormat) -> web.StreamResponse:
        if any(value.strip().startswith(KEY_PREFIX) for value in request.query.values()):
            # Forwarded as it is, the query would carry the key upstream (Gemini's REST
            # examples put the API key in ?key=): refused, never forwarded nor swapped.
            return self._refuse(call, guess, 400, "a firewall key (afw_…) in the query string is not accepted: send it "
                                "in a header (x-goog-api-key, x-api-key or Authorization: Bearer)", event="key_in_query")
        try:
            check_framing(request.headers)
        except LimitExceeded as error:
            return self._over_limit(call, guess, error)
        try:
            call.identity = call.rt.identities.resolve(request.path, request.headers)
        except IdentityError as error:
            return self._refuse(call, guess, error.status, str(error),
                                event="unauthenticated" if error.status == 401 else "bad_identity")
        identity = call.identity
        wire = wire_format_for_path(identity.path)
        if wire is not None and request.method != "POST":
            # A format may own more of its route than POST (MCP: DELETE ends a session).
            forwarded = getattr(wire, "forwarded_methods", None)
            if forwarded is not None:
                return await self._other_method(request, call, wire, forwarded)
            wire = None
        if wire is None:
            return await self._unknown_route(request, call, guess)
        call.wire = wire

        try:
            raw = await read_body(request, self._body_limits)  # decoded, if it came compressed
        except LimitExceeded as error:
            return self._over_limit(call, wire, error)
        try:
            body = loads_strict(raw, max_depth=self.config.max_json_depth)
        except NestingTooDeepError as error:
            return self._refuse(call, wire, 400, f"{error}; nothing was parsed", event="nesting_too_deep")
        except orjson.JSONDecodeError as error:
            return self._refuse(call, wire, 400, f"malformed JSON body: {error}", event="malformed_json")
        except DuplicateKeyError as error:
            # Parsers disagree on which duplicate wins: what the firewall inspects must be
            # what the upstream reads, so such a body is refused.
            return self._refuse(call, wire, 400, f"JSON body with a duplicate key at {error.path}",
                                event="duplicate_key")
        try:
            parsed = wire.parse_request(body)
        except BodyShapeError as error:
            return self._refuse(call, wire, 400, f"unsupported {wire.name} request body: {error}", event="bad_body_shape")
        if parsed.stream:
            if not self.streams.take():
                return self._refuse(call, wire, 429, f"the firewall is relaying its limit of {self.streams.maximum} "
                                    "streamed answers at once; try again shortly", event="too_many_streams")
            call.holds_stream = True
        try:
            identity = call.identity = call.rt.identities.from_metadata(identity, body)
        except IdentityError as error:
            return self._refuse(call, wire, 400, str(error), event="bad_identity")
        if identity.agent is None and call.rt.policy.spec.identity.unidentified == "refuse":
            return self._refuse(call, wire, 401, "this request does not say which agent sent it: "
                                + HOW_TO_IDENTIFY.format(header=self.config.agent_header)
                                + " (or set identity.unidentified: allow in the policy)", event="unidentified")

        agent, source, target = identity.agent, identity.source, identity.target
        peer = getattr(wire, "peer", None)
        if peer is not None:
            # A route to another agent (A2A): that agent hears the request and says the answer;
            # the caller speaks, and the answer is for it. No header can name another speaker.
            declared = {name for name in (source, target) if name is not None and name != agent}
            if declared:
                return self._refuse(call, wire, 400, f"on a route to agent {peer!r} the calling agent ({agent!r}) is the "
                                    f"source of what it sends and the target of the answer; remove the header that "
                                    f"names {', '.join(sorted(declared))}", event="bad_identity")
            agent, source, target = peer, identity.agent, identity.agent
        exchange = Exchange(
            id=call.id, direction=Direction.REQUEST, provider=wire.provider, route=wire.name,
            messages=parsed.messages, model=parsed.model, agent=agent, source_agent=source,
            target_agent=target, stream=parsed.stream, body=body, raw=raw, trace_id=identity.trace_id,
        )
        exchange, refused = await self._earlier_turns(call, wire, exchange)
        if refused is not None:
            return refused
        if call.context is not None and call.context.answered_here and continues_turns(wire):
            # It continues the firewall's own answer, which the upstream never issued.
            body = wire.resumed(body, call.context.resumes)
            raw = orjson.dumps(body)
            exchange = dataclasses.replace(exchange, body=body, raw=raw)
        refused = await self._admit(call, wire, exchange)
        if refused is not None:
            return refused
        if call.admission.provenance is not None:
            exchange = dataclasses.replace(exchange, provenance=call.admission.provenance)
        if exchange.source_agent is None and call.admission.traced_source is not None:
            exchange = dataclasses.replace(exchange, source_agent=call.admission.traced_source)
        source = exchange.source_agent or (exchange.provenance.agent if exchange.provenance else None)
        if source is not None and source != exchange.agent:
            call.source = source
            call.tags.append(AI_TO_AI_TAG)
        decision = await self._inspect(call, exchange)
        await self._agents(call, call.rt.guard.after_request(_author(wire, exchange), decision, call.admission))
        if decision.action is Action.BLOCK:
            return await self._blocked(call, wire, exchange, decision)
        if continues_turns(wire):
            earlier = len(call.context.messages) if call.context is not None else 0
            call.said = as_forwarded(exchange.messages[earlier:], decision.rewrites)
        rewrites = in_body(decision.rewrites)  # an earlier turn's part is not in this body
        if rewrites:
            raw = orjson.dumps(wire.apply_rewrites(body, rewrites))
        return await self._forward(request, call, wire, exchange, raw)

    # -- earlier turns the body only names (firewall/agents/turns.py) ----------------

    async def _earlier_turns(self, call: _Call, wire: WireFormat,
                             exchange: Exchange) -> tuple[Exchange, web.Response | None]:
        """A request that continues earlier turns by id (OpenAI Responses'
        `previous_response_id`) does not carry them: what this firewall saw of them goes
        in front of its messages, so that rules see the conversation. The request's audit
        record says which turn it continued (`context`), and when that turn is unknown."""
        turn_id = wire.continues(exchange.body) if continues_turns(wire) else None
        if turn_id is None:
            return exchange, None
        try:
            call.context = await self.turns.recall(wire.name, turn_id)
        except StateUnavailable as error:
            return exchange, self._state_unavailable(call, wire, exchange, error)
        return dataclasses.replace(exchange, messages=(*call.context.messages, *exchange.messages)), None

    async def _remember_turn(self, call: _Call, wire: WireFormat, request: Exchange, turn_ids: tuple[str, ...],
                             said: tuple[Message, ...]) -> list[dict[str, Any]]:
        """Keep this turn (the request as forwarded, the answer `said` as the client received
        it) under the ids a later request may continue it by, after the turns it continued.
        Run through `_agents`: state that cannot be written is recorded, not fatal."""
        if turn_ids and continues_turns(wire):
            await self.turns.remember(wire.name, turn_ids, (*call.said, *said), after=call.context, agent=request.agent,
                                      ttl=call.rt.policy.spec.lineage.ttl)
        return []

    async def _remember_refusal(self, call: _Call, wire: WireFormat, exchange: Exchange,
                                refusal: Any) -> list[dict[str, Any]]:
        """A refusal of the firewall's own making (not an upstream answer kept under its
        id) is remembered, so that a request continuing it can be sent on as continuing the
        turn the upstream knows before it."""
        assert continues_turns(wire)
        ids = wire.turn_ids(refusal)
        if ids and ids[0] not in wire.turn_ids(exchange.body):
            await self.turns.remember_refusal(wire.name, ids[0], resumes=wire.continues(refusal), after=call.context,
                                              agent=exchange.agent, ttl=call.rt.policy.spec.lineage.ttl)
        return []

    # -- agents ---------------------------------------------------------------------

    async def _admit(self, call: _Call, wire: WireFormat, exchange: Exchange) -> web.Response | None:
        """The agents' side before the rules: a quarantined agent, a disallowed edge or
        tool, too many hops or a loop is refused here; otherwise the request's provenance
        is known. None: go on."""
        try:
            call.admission = await call.rt.guard.admit(exchange)
        except StateUnavailable as error:
            return self._state_unavailable(call, wire, exchange, error)
        self._learnt(call, call.admission.records)
        refusal = call.admission.refusal
        if refusal is None:
            return None
        await self._agents(call, call.rt.guard.after_request(_author(wire, exchange), None, call.admission))
        return self._refuse(call, wire, refusal.status, refusal.message, event=refusal.code, rules=(refusal.rule,),
                            code=refusal.code)

    async def _agents(self, call: _Call, step: Awaitable[list[dict[str, Any]]]) -> None:
        """Run one of the guard's after-steps and record what it reports. State that cannot
        be written now is logged, not fatal: the exchange itself was already decided."""
        try:
            records = await step
        except StateUnavailable as error:
            log.error("agent state unavailable after exchange %s: %s", call.id, error)
            records = [{"event": "state_unavailable", "error": str(error), "action": "allow"}]
        self._learnt(call, records)

    def _learnt(self, call: _Call, records: list[dict[str, Any]]) -> None:
        """What the guard learnt about agents: counted, and written to the audit log."""
        self.metrics.learnt(records)
        for details in records:
            self._record(agent_record(call.id, details, policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256))

    def _state_unavailable(self, call: _Call, wire: WireFormat, exchange: Exchange,
                           error: StateUnavailable) -> web.Response | None:
        if call.rt.policy.defaults.on_error == "allow":
            # Inspected without what the state would have added; the record says so.
            self._record(event_record(
                call.id, event="state_unavailable", agent=exchange.agent, route=wire.name, status=0,
                error=f"{error}; inspected without agent state (defaults.on_error: allow)",
                policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256, action="allow",
            ))
            call.admission = Admission()
            return None
        return self._refuse(call, wire, 503, f"agent state is unavailable ({error}); the request was not forwarded "
                            "(defaults.on_error: block)", event="state_unavailable", code="state_unavailable")

    # -- inspection -----------------------------------------------------------------

    async def _inspect(self, call: _Call, exchange: Exchange, *, status: int | None = None) -> Decision:
        started = time.perf_counter()
        if call.rt.slow is None:
            decision = call.rt.engine.inspect(exchange)
        else:
            # A detector that waits (a judge's round trip, a transformer model) must not
            # stall every other request: such inspections run on worker threads.
            decision = await asyncio.get_running_loop().run_in_executor(call.rt.slow, call.rt.engine.inspect, exchange)
        call.timings[f"inspect_{exchange.direction}"] = time.perf_counter() - started
        self.metrics.decided(exchange.direction, decision)
        if decision.action is not Action.BLOCK:
            call.tags.extend(tag for tag in decision.tags if tag not in call.tags)
        record = exchange_record(
            exchange, decision, policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256,
            identified_by=call.identity.how if call.identity else None,
            timings={**call.timings, "elapsed": time.perf_counter() - call.started}, status=status,
            messages=call.rt.policy.spec.audit.messages,
        )
        if call.context is not None and exchange.direction is Direction.REQUEST:
            record["context"] = call.context.audit()  # the earlier turn it continued, or that it is unknown
        self._record(record)
        return decision

    def record(self, record: dict[str, Any]) -> None:
        """Write `record` to the audit log (the admin API's changes go through here too)."""
        self._record(record)

    def _record(self, record: dict[str, Any]) -> None:
        if self.audit is None:
            return
        try:
            self.audit.write(record)
        except (OSError, ValueError) as error:
            self.audit_problem = str(error)
            self.metrics.audit_errors.inc()
            log.error("audit log write failed: %s", error)
            raise _AuditUnavailable(str(error)) from error
        if self.audit_problem is not None:
            self.audit_problem = None

    # -- answers --------------------------------------------------------------------

    async def _blocked(self, call: _Call, wire: WireFormat, exchange: Exchange, decision: Decision) -> web.Response:
        rule = decision.blocking_rule or "policy"
        reason = f": {decision.reason}" if decision.reason else ""
        if decision.respond == "refusal":
            text = f"This message was blocked by agent-firewall (rule {rule}){reason}."
            body = wire.refusal_body(text, model=exchange.model, request=exchange.body)
            if continues_turns(wire):
                await self._agents(call, self._remember_refusal(call, wire, exchange, body))
            if exchange.stream:
                return self._respond(call, 200, wire.render_stream(body), content_type="text/event-stream")
            return self._respond(call, 200, orjson.dumps(body))
        message = f"blocked by agent-firewall: rule {rule}{reason} (exchange {call.id})"
        return self._respond(call, _error_status(wire, 403), orjson.dumps(wire.error_body(403, message, code="firewall_blocked")))

    def _over_limit(self, call: _Call, wire: WireFormat, error: LimitExceeded) -> web.Response:
        response = self._refuse(call, wire, error.status, error.message, event=error.event)
        # What is left of a body that was refused unread is not waited for on this connection.
        response.force_close()
        return response

    def _refuse(self, call: _Call, wire: WireFormat, status: int, message: str, *, event: str,
                direction: str = "request", rules: tuple[str, ...] = (), code: str | None = None) -> web.Response:
        identity = call.identity
        self._record(event_record(
            call.id, event=event, agent=identity.agent if identity else None, route=wire.name, status=status,
            error=message, policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256, direction=direction,
            rules=rules,
        ))
        body = wire.error_body(status, f"agent-firewall: {message}", **({"code": code} if code else {}))
        return self._respond(call, _error_status(wire, status), orjson.dumps(body))

    def _respond(self, call: _Call, status: int, body: bytes, *, content_type: str = "application/json",
                 headers: Iterable[tuple[str, str]] = ()) -> web.Response:
        out = CIMultiDict(headers)
        out[EXCHANGE_HEADER] = call.id
        if call.tags:
            out[TAGS_HEADER] = ",".join(call.tags)
        if call.source:
            out[SOURCE_HEADER] = call.source
        if "Content-Type" not in out:
            out["Content-Type"] = content_type
        self.metrics.answered(call.wire.name if call.wire else "unknown", status)
        return web.Response(status=status, body=body, headers=out)

    # -- upstream -------------------------------------------------------------------

    async def _forward(self, request: web.Request, call: _Call, wire: WireFormat, exchange: Exchange,
                       body: bytes) -> web.StreamResponse:
        upstream = self.config.upstreams.get(wire.provider)
        if upstream is None:
            return self._refuse(call, wire, 502, f"no upstream is configured for {wire.provider!r}", event="no_upstream")
        target = _upstream_path(call.identity, request, wire)
        # The body goes upstream as the firewall read it: decoded (limits.read_body).
        headers = self._upstream_headers(call, wire, request.headers, drop=_DECODED_REQUEST_DROP)
        if headers is None:
            return self._no_provider_key(call, wire)
        started = time.perf_counter()
        try:
            async with self.upstream.request("POST", upstream, target, headers, body) as upstream_response:
                call.timings["upstream_headers"] = time.perf_counter() - started
                self.metrics.upstream_answered(wire.provider, call.timings["upstream_headers"])
                if self._streams_incrementally(call, upstream_response):
                    # From here on the answer is being sent: the stream handles its own errors.
                    return await self._stream(request, call, wire, exchange, upstream_response)
                data = await upstream_response.read()
                status = upstream_response.status
                response_headers = upstream_response.headers
        except UpstreamConnectTimeout:
            return self._refuse(call, wire, 504, f"the {wire.provider} upstream could not be connected to within "
                                f"{self.config.connect_timeout:g} seconds", event="upstream_timeout", direction="response")
        except TimeoutError:
            return self._refuse(call, wire, 504, f"the {wire.provider} upstream did not answer within "
                                f"{self.config.read_timeout:g} seconds", event="upstream_timeout", direction="response")
        except UpstreamBadResponse as error:
            return self._refuse(call, wire, 502, f"the {wire.provider} upstream sent a response the firewall cannot "
                                f"inspect: {error}", event="bad_upstream_response", direction="response")
        except UpstreamError as error:
            return self._refuse(call, wire, 502, f"the {wire.provider} upstream is unreachable: {error}",
                                event="upstream_unreachable", direction="response")
        call.timings["upstream"] = time.perf_counter() - started
        return await self._inspect_response(call, wire, exchange, status, response_headers, data)

    def _streams_incrementally(self, call: _Call, upstream: UpstreamResponse) -> bool:
        return (upstream.status == 200 and call.rt.policy.stream.mode == "incremental"
                and "text/event-stream" in upstream.headers.get("Content-Type", ""))

    async def _stream(self, request: web.Request, call: _Call, wire: WireFormat, exchange: Exchange,
                      upstream: UpstreamResponse) -> web.StreamResponse:
        """Relay a streamed answer through one StreamGuard: text reaches the client only
        once checked; a block or a broken upstream ends the stream in the SDK's terms."""
        reader = wire.stream_reader()
        # Events that each carry a whole message (MCP) are decided whole, one by one; text
        # that grows a few characters per event is held back only as far as the rules need.
        guard: StreamGuard | MessageStreamGuard = (
            MessageStreamGuard(call.rt.engine, reader, exchange) if isinstance(reader, MessageStreamReader)
            else StreamGuard(call.rt.engine, reader, exchange, call.rt.holdback_for(wire.name), call.rt.window_engine))
        if guard.at_start.action is Action.BLOCK:
            await self._record_stream(call, wire, exchange, guard, note="blocked before the first event")
            return await self._blocked(call, wire, exchange, guard.at_start)
        call.tags.extend(tag for tag in guard.at_start.tags if tag not in call.tags)
        headers = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in _RESPONSE_DROP)
        headers[EXCHANGE_HEADER] = call.id
        if call.tags:
            headers[TAGS_HEADER] = ",".join(call.tags)
        if call.source:
            headers[SOURCE_HEADER] = call.source
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        self.metrics.answered(wire.name, 200)
        note = None
        recorded = False
        ending: bytes | None = None  # how a stream that did not end cleanly ends, for the client
        try:
            try:
                tail = b""
                async for chunk in upstream.iter_any():
                    out = guard.feed(chunk)
                    if guard.finished or getattr(guard, "at_end", False):
                        tail = out  # the stream's end: sent once its record is written
                        break
                    await self._send(response, call, out)
                tail += guard.close()
                # The answer's record goes before its last bytes: an answer the audit log
                # cannot take ends in an error event the SDK raises, not in a clean end.
                recorded = True
                try:
                    self._write_stream_record(call, exchange, guard, note=None)
                except _AuditUnavailable as error:
                    tail = guard.abort(f"agent-firewall: the audit log cannot be written ({error}); the answer is "
                                       "incomplete and was not recorded")
                await self._send(response, call, tail)
            except asyncio.CancelledError as error:
                if not self._drain.is_cut_off(error):
                    raise
                _uncancel()
                note = "ended at shutdown: the drain deadline passed before the upstream finished"
                ending = _end(guard, "agent-firewall: the firewall is shutting down; the stream was ended before the "
                                     "upstream finished")
            except (BodyShapeError, UpstreamBadResponse) as error:  # the events, or their coding
                ending = _end(guard, f"agent-firewall: the {wire.provider} upstream sent a stream the firewall cannot "
                                     f"inspect ({error})")
            except (TimeoutError, UpstreamError) as error:
                reason = str(error) or type(error).__name__
                ending = _end(guard, f"agent-firewall: the {wire.provider} upstream broke off the stream ({reason})")
            except _ClientGone:
                raise  # nobody to tell: recorded below with its note
            except Exception as error:  # noqa: BLE001 - a bug must end the stream closed, not hang it
                log.exception("internal error in stream %s", call.id)
                ending = _end(guard, f"agent-firewall: internal error while inspecting the stream ({type(error).__name__})")
            if ending is not None:
                # Recorded before the client reads how the stream ended, as a clean end is.
                recorded = True
                with contextlib.suppress(_AuditUnavailable):  # the stream ends in an error all the same
                    self._write_stream_record(call, exchange, guard, note=note)
                await self._send(response, call, ending)
            try:
                await response.write_eof()
            except ConnectionResetError:
                pass  # every event was sent; an SDK closes the connection once it reads the last one
        except _ClientGone:
            note = "the client went away mid-stream"
        finally:
            if not recorded:
                with contextlib.suppress(_AuditUnavailable):  # the stream has ended already: logged and counted
                    self._write_stream_record(call, exchange, guard, note=note)
            await self._stream_agents(call, exchange, guard)
            if knows_turn_ids(reader):
                outcome = guard.outcome()
                said = streamed_messages(outcome.released_text, outcome.tool_calls)
                await self._agents(call, self._remember_turn(call, wire, exchange, reader.turn_ids(), said))
        return response

    async def _send(self, response: web.StreamResponse, call: _Call, data: bytes) -> None:
        if not data:
            return
        call.timings.setdefault("first_byte", time.perf_counter() - call.started)
        try:
            await response.write(data)
        except ConnectionResetError as error:  # aiohttp's own subclasses this too
            raise _ClientGone from error

    async def _record_stream(self, call: _Call, wire: WireFormat, exchange: Exchange, guard: StreamGuard | MessageStreamGuard,
                             *, note: str | None) -> None:
        self._write_stream_record(call, exchange, guard, note=note)
        await self._stream_agents(call, exchange, guard)

    def _write_stream_record(self, call: _Call, exchange: Exchange, guard: StreamGuard | MessageStreamGuard,
                             *, note: str | None) -> None:
        outcome = guard.outcome()
        self.metrics.holdback_chars.observe(outcome.holdback_max)
        self._record(stream_record(
            exchange, outcome, policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256,
            identified_by=call.identity.how if call.identity else None,
            timings={**call.timings, "elapsed": time.perf_counter() - call.started}, note=note,
        ))

    async def _stream_agents(self, call: _Call, exchange: Exchange, guard: StreamGuard | MessageStreamGuard) -> None:
        if _tool_answers(call.wire):
            return
        outcome = guard.outcome()
        said = "\n".join(outcome.released_text.values())
        await self._agents(call, call.rt.guard.after_response(exchange, outcome.decision, said, call.admission))

    async def _inspect_response(self, call: _Call, wire: WireFormat, request_exchange: Exchange, status: int,
                          headers: CIMultiDictProxy[str], data: bytes) -> web.Response:
        passthrough = [(key, value) for key, value in headers.items() if key.lower() not in _RESPONSE_DROP]
        content_type = headers.get("Content-Type", "")
        if status != 200:
            # Provider errors carry no model output; they pass through, and are recorded.
            self._record(event_record(
                call.id, event="upstream_accepted" if status in (202, 204) else "upstream_error",
                agent=request_exchange.agent, route=wire.name, status=status,
                error=data[:300].decode("utf-8", "replace"), policy_name=call.rt.policy.name,
                policy_sha256=call.rt.policy.sha256, direction="response", action="allow",
            ))
            return self._respond(call, status, data, headers=passthrough)
        streamed = "text/event-stream" in content_type
        try:
            body = wire.parse_stream(data) if streamed else orjson.loads(data)
            messages = wire.parse_response(body)
        except (orjson.JSONDecodeError, BodyShapeError) as error:
            # An answer the firewall cannot read is not released uninspected.
            return self._refuse(call, wire, 502, f"the {wire.provider} upstream sent a response the firewall cannot inspect: {error}",
                                event="bad_upstream_response", direction="response")
        exchange = Exchange(
            id=call.id, direction=Direction.RESPONSE, provider=wire.provider, route=wire.name, messages=messages,
            model=body.get("model") if isinstance(body, dict) else request_exchange.model,
            agent=request_exchange.agent, source_agent=request_exchange.source_agent,
            target_agent=request_exchange.target_agent, stream=streamed, body=body, raw=data,
        )
        decision = await self._inspect(call, exchange, status=status)
        said = "\n".join(message.text for message in messages if message.role == "assistant")
        if not _tool_answers(wire):
            await self._agents(call, call.rt.guard.after_response(request_exchange, decision, said, call.admission))
        if continues_turns(wire):
            # A blocked answer never reached the client: only the request is remembered.
            answered = () if decision.action is Action.BLOCK else as_forwarded(messages, decision.rewrites)
            await self._agents(call, self._remember_turn(call, wire, request_exchange, wire.turn_ids(body), answered))
        if decision.action is Action.BLOCK:
            return await self._blocked(call, wire, exchange, decision)
        if decision.rewrites:
            rewritten = wire.apply_rewrites(body, decision.rewrites)
            data = wire.render_stream(rewritten) if streamed else orjson.dumps(rewritten)
        return self._respond(call, 200, data, headers=passthrough)

    async def _unknown_route(self, request: web.Request, call: _Call, wire: WireFormat) -> web.Response:
        if call.rt.policy.defaults.unknown_routes == "refuse":
            return self._refuse(call, wire, 404,
                                f"{request.method} {request.path} is not a route the firewall inspects "
                                f"(inspected: POST {', POST '.join(wire.path for wire in WIRE_FORMATS)}); "
                                "set defaults.unknown_routes: forward in the policy to pass it through uninspected",
                                event="unknown_route")
        return await self._pass_through(request, call, wire, event="uninspected_route",
                                        note="forwarded uninspected (defaults.unknown_routes: forward)")

    async def _other_method(self, request: web.Request, call: _Call, wire: WireFormat,
                            forwarded: frozenset[str]) -> web.Response:
        """A method other than POST on a format's own route. One the format lists in
        `forwarded_methods` carries no body to inspect: forwarded, recorded. Any other is
        answered 405 (MCP: a GET would open a server-to-client stream no rule could read)."""
        call.wire = wire
        if request.method in forwarded:
            return await self._pass_through(request, call, wire, event="uninspected_method",
                                            note=f"{request.method} carries no body to inspect; forwarded as it is")
        allowed = ", ".join(["POST", *sorted(forwarded)])
        message = f"agent-firewall: {request.method} {request.path} is not allowed (allowed: {allowed})"
        self._record(event_record(
            call.id, event="method_not_allowed", agent=call.identity.agent if call.identity else None, route=wire.name,
            status=405, error=message, policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256,
        ))
        return self._respond(call, 405, orjson.dumps(wire.error_body(405, message)), headers=[("Allow", allowed)])

    async def _pass_through(self, request: web.Request, call: _Call, wire: WireFormat, *, event: str,
                            note: str) -> web.Response:
        upstream = self.config.upstreams.get(wire.provider)
        if upstream is None:
            return self._refuse(call, wire, 502, f"no upstream is configured for {wire.provider!r}", event="no_upstream")
        raw = await request.read()
        headers = self._upstream_headers(call, wire, request.headers)
        if headers is None:
            return self._no_provider_key(call, wire)
        try:
            async with self.upstream.request(request.method, upstream, _upstream_path(call.identity, request, wire),
                                             headers, raw or None) as response:
                data, status = await response.read(), response.status
                headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _RESPONSE_DROP]
        except (TimeoutError, UpstreamError) as error:
            return self._refuse(call, wire, 502, f"the {wire.provider} upstream is unreachable: {error}",
                                event="upstream_unreachable", direction="response")
        # A format may rewrite what passes (A2A: the Agent Card's endpoint points at the firewall).
        rewrite = getattr(wire, "rewrite_passed", None)
        if rewrite is not None:
            try:
                data = rewrite(status, data, str(request.url), upstream)
            except BodyShapeError as error:
                return self._refuse(call, wire, 502, f"the {wire.provider} upstream sent an answer the firewall cannot "
                                    f"pass on: {error}", event="bad_upstream_response", direction="response")
        self._record(event_record(
            call.id, event=event, agent=call.identity.agent if call.identity else None,
            route=f"{request.method} {request.path}", status=status, error=note,
            policy_name=call.rt.policy.name, policy_sha256=call.rt.policy.sha256, action="allow",
        ))
        return self._respond(call, status, data, headers=headers)

    def _upstream_headers(self, call: _Call, wire: WireFormat, headers: CIMultiDictProxy[str], *,
                          drop: frozenset[str] = _HOP_BY_HOP) -> list[tuple[str, str]] | None:
        """The request's headers as the upstream gets them, without those in `drop`: an
        agent's firewall key never leaves the firewall; where the agent authenticated with
        one, the provider key takes its place (in the header the agent's SDK used). None: a
        provider key is needed and none is configured."""
        out = []
        swap = call.identity is not None and call.identity.how == "key"
        provider_key = self.config.provider_keys.get(wire.provider)
        for key, value in headers.items():
            lower = key.lower()
            if lower in drop:
                continue
            if lower == "authorization" and value.partition(" ")[2].strip().startswith(KEY_PREFIX):
                if not swap or provider_key is None:
                    continue
                value = "Bearer " + provider_key.get_secret_value()
            elif lower in ("x-api-key", "x-goog-api-key") and value.strip().startswith(KEY_PREFIX):
                if not swap or provider_key is None:
                    continue
                value = provider_key.get_secret_value()
            out.append((key, value))
        if swap and provider_key is None:
            return None
        return out

    def _no_provider_key(self, call: _Call, wire: WireFormat) -> web.Response:
        return self._refuse(call, wire, 503,
                            f"the agent authenticated with its firewall key, but no provider key is configured for "
                            f"{wire.provider!r}: run the firewall with --provider-key {wire.provider}=env:VARIABLE",
                            event="no_provider_key")

    async def _close_upstream(self, _app: web.Application) -> None:
        await self.upstream.close()
        await self.state.close()
        for runtime in self._runtimes:
            if runtime.slow is not None:
                runtime.slow.shutdown(wait=False)


def _has_slow_detectors(policy: Policy) -> bool:
    """Detectors that wait on I/O or a large model (they say so: `costly = True`), rather
    than compute in microseconds."""
    return any(getattr(getattr(detector, "inner", detector), "costly", False) for detector in policy.detectors.values())


def _uncancel() -> None:
    """A handler that answers its drain cut-off goes on as if not cancelled."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _end(guard: StreamGuard | MessageStreamGuard, message: str) -> bytes:
    """End a stream with an error event after a failure, whatever state the guard is in."""
    try:
        return guard.fail(message)
    except Exception:  # noqa: BLE001 - the guard itself failed: release nothing more
        log.exception("stream guard failed while ending a stream")
        return guard.abort(message)


# Exchange ids must be unique, not secret: drawn from a generator seeded from the OS once
# per process (a getrandom(2) call per request cost more than the rest of naming it).
_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def _exchange_id() -> str:
    return f"ex_{_IDS.getrandbits(96):024x}"


def _tool_answers(wire: WireFormat | None) -> bool:
    """The route's answers come from a tool server (MCP), not from the calling agent's
    model: they are not fingerprinted as its words, nor is a blocked one its violation
    (else a hostile tool server could have an agent quarantined)."""
    return bool(getattr(wire, "answers_from_tools", False))


def _author(wire: WireFormat, exchange: Exchange) -> Exchange:
    """The request as the guard counts its author's conduct: on a route to another agent
    (A2A) the caller wrote it (the exchange's source), not the agent it is sent to."""
    return dataclasses.replace(exchange, agent=exchange.source_agent) if getattr(wire, "peer", None) else exchange


def _error_status(wire: WireFormat, status: int) -> int:
    """The HTTP status of an error of the firewall's own: a JSON-RPC format may send its
    errors with 200, as its servers do, for its client to raise them with their message."""
    adjust = getattr(wire, "error_status", None)
    return adjust(status) if adjust is not None else status


def _upstream_path(identity: Identity | None, request: web.Request, wire: WireFormat) -> str:
    path = identity.path if identity else request.path
    # A format whose route is not the upstream's path says where it goes (A2A: /a2a/<agent>/x -> /x).
    reroute = getattr(wire, "upstream_path", None)
    if reroute is not None:
        path = reroute(path)
    return f"{path}?{request.query_string}" if request.query_string else path


def _guess_wire(path: str) -> WireFormat:
    """The wire format whose error shape to use for a request it cannot be sure of."""
    return wire_format_for_path(path) or (_ANTHROPIC if "/v1/messages" in path or "/v1/complete" in path else _OPENAI)


__all__ = ["AI_TO_AI_TAG", "EXCHANGE_HEADER", "SOURCE_HEADER", "TAGS_HEADER", "AuditSink", "Firewall"]
