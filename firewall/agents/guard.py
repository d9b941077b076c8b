"""The agents' side of every exchange: who may speak now, whose words a request carries,
which edges, tools and hops the protocol allows, and what an agent's conduct does to its
state (violations, drift, quarantine).

The engine stays pure: the guard runs before it (`admit`: a refusal, or the provenance
the rules will see as `source.*` and `hops`) and after it (`after_request`,
`after_response`: counting violations, watching drift, fingerprinting what each agent
said). Everything it remembers lives in the state backend, so processes that share one
behave as one. Each step returns the audit records it owes; the listener writes them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from firewall.agents.drift import DriftAlert, DriftMonitor
from firewall.agents.lineage import LineageIndex, LineageMatch
from firewall.agents.quarantine import AgentStatus, Quarantine, Transition
from firewall.agents.state import StateBackend
from firewall.model import Action, Decision, Direction, Exchange, Mode, Provenance
from firewall.policy import Policy

__all__ = ["Admission", "AgentGuard", "Refusal"]

_MATCH_CACHE = 4096  # message digests whose lineage matches are remembered
# Refusals that are not the agent's own conduct.
_NOT_CONDUCT = frozenset({"quarantine", "quarantine:source", "throttle", "rate_limit"})
_TRACE = "trace:"  # trace id -> the agent that answered last in it
_DETECTOR_ERROR = "detector-error:"  # the engine's finding for a detector that failed (on_error: allow)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The guard's answer instead of the upstream's."""

    status: int
    rule: str  # quarantine | throttle | rate_limit | protocol:edge | protocol:max_hops | protocol:loop | protocol:tools
    message: str
    code: str


@dataclass(slots=True)
class Admission:
    """What the guard decided before the engine looks at a request."""

    refusal: Refusal | None = None
    provenance: Provenance | None = None
    traced_source: str | None = None  # the agent that answered last in the request's W3C trace
    records: list[dict[str, Any]] = field(default_factory=list)  # audit: edges, protocol findings in monitor mode


class AgentGuard:
    def __init__(self, policy: Policy, state: StateBackend, clock: Callable[[], float] = time.time) -> None:
        spec = policy.spec
        self.policy = policy
        self.state = state
        self.quarantine = Quarantine(state, spec.quarantine, clock)
        self.lineage = LineageIndex(state, spec.lineage) if spec.lineage.enabled else None
        self.drift = DriftMonitor(state, spec.drift) if spec.drift is not None else None
        self._clock = clock
        self._matches: OrderedDict[tuple[str, str], tuple[LineageMatch, ...]] = OrderedDict()

    # -- before the engine -------------------------------------------------------------

    async def admit(self, exchange: Exchange) -> Admission:
        admission = Admission()
        agent = exchange.agent
        if agent is None:
            return admission
        status = await self.quarantine.status(agent)
        if status.quarantined:
            admission.refusal = Refusal(403, "quarantine", _quarantined(status), "agent_quarantined")
            return admission
        declared = exchange.source_agent
        if declared is not None and declared != agent:
            # The words' declared author (the caller of an agent fronted over A2A, or an
            # X-Agent-Source): a quarantined agent's words reach no other agent.
            source = await self.quarantine.status(declared)
            if source.quarantined:
                admission.refusal = Refusal(403, "quarantine:source", f"the request carries words of agent "
                                            f"{declared!r}: {_quarantined(source)}", "source_quarantined")
                return admission
        if status.state == "throttle" and await self.quarantine.throttled(agent):
            rate = self.policy.spec.quarantine.throttle_rate
            admission.refusal = Refusal(429, "throttle", f"agent {agent!r} is throttled ({status.reason}): at most "
                                        f"{rate.requests} requests per {rate.per:g} s", "agent_throttled")
            return admission
        refusal = await self._rate_limited("agent", agent, self._agent_rate(agent))
        if refusal is not None:
            admission.refusal = refusal
            return admission

        matches = await self._provenance(exchange, admission)
        if exchange.source_agent is None and exchange.trace_id is not None:
            traced = await self.state.get(_TRACE + exchange.trace_id)
            if traced is not None and traced.decode() != agent:
                admission.traced_source = traced.decode()
        provenance = admission.provenance
        if provenance is not None and provenance.quarantined:
            # A quarantined agent's answers are not delivered to other agents, whoever relays them.
            for status in await self.quarantine.statuses([match.record.agent for match in matches]):
                if status.quarantined:
                    admission.refusal = Refusal(
                        403, "quarantine:source", f"the request carries words of agent {status.agent!r}, which is "
                        f"quarantined ({status.reason}); its answers are not delivered to other agents",
                        "source_quarantined")
                    return admission
        # Every source is checked, the declared one and each found by lineage: checking
        # only the strongest would let an allowed agent's words carry a disallowed one's.
        declared = exchange.source_agent or admission.traced_source
        sources = dict.fromkeys(source for source in (declared, *(m.record.agent for m in matches))
                                if source is not None and source != agent)
        for source in sources:
            refusal = self._edge(source, agent) or await self._rate_limited("edge", f"{source}>{agent}",
                                                                             self.policy.spec.protocol.edge_rate)
            if refusal is not None:
                self._protocol(admission, refusal)
                if admission.refusal is not None:
                    break  # refused: the other edges' allowances are not spent on it
        max_hops = self.policy.spec.protocol.max_hops
        if provenance is not None and max_hops is not None and provenance.hops > max_hops:
            path = " → ".join((*provenance.path, agent))
            origin = provenance.path[0] if provenance.path else provenance.agent
            self._protocol(admission, Refusal(403, "protocol:max_hops", f"content from {origin!r} has "
                                              f"passed through {provenance.hops} agents ({path}); the policy allows "
                                              f"{max_hops} (protocol.max_hops)", "max_hops_exceeded"))
        returning = next((m for m in matches if agent in m.record.path), None)
        if returning is not None and self.policy.spec.protocol.loops == "block":
            path = " → ".join((*returning.record.path, agent))
            self._protocol(admission, Refusal(403, "protocol:loop", f"content is coming back to {agent!r}: {path}",
                                              "agent_loop"))
        tools = self.policy.agents.get(agent)
        allowed = tools.tools if tools is not None else None
        if allowed is not None:
            used = sorted(set(_tool_names(exchange)) - set(allowed))
            if used:
                self._protocol(admission, Refusal(403, "protocol:tools", f"agent {agent!r} may not use the tool(s) "
                                                  f"{', '.join(used)} (agents.{agent}.tools: {', '.join(allowed) or 'none'})",
                                                  "tool_not_allowed"))
        return admission

    def _protocol(self, admission: Admission, refusal: Refusal) -> None:
        """A protocol rule was crossed: refuse, or in monitor mode only record it."""
        if self.policy.spec.protocol.mode is Mode.ENFORCE:
            admission.refusal = admission.refusal or refusal
        else:
            admission.records.append({"event": "protocol", "rule": refusal.rule, "mode": "monitor",
                                      "intended": "block", "error": refusal.message})

    def _edge(self, source: str, agent: str) -> Refusal | None:
        spec = self.policy.agents.get(source)
        if spec is None or spec.may_send_to is None or agent in spec.may_send_to:
            return None
        allowed = ", ".join(spec.may_send_to) or "none"
        return Refusal(403, "protocol:edge", f"agent {source!r} may not send to {agent!r} "
                       f"(agents.{source}.may_send_to: {allowed})", "edge_not_allowed")

    def _agent_rate(self, agent: str) -> Any:
        spec = self.policy.agents.get(agent)
        return spec.rate_limit if spec is not None and spec.rate_limit is not None else self.policy.spec.protocol.agent_rate

    async def _rate_limited(self, kind: str, key: str, rate: Any) -> Refusal | None:
        if rate is None:
            return None
        used = await self.state.count(f"rate:{kind}:{key}", self._clock(), rate.per)
        if used <= rate.requests:
            return None
        return Refusal(429, "rate_limit", f"{kind} {key.replace('>', ' → ')} is over its rate limit of {rate.requests} "
                       f"requests per {rate.per:g} s", "rate_limited")

    async def _provenance(self, exchange: Exchange, admission: Admission) -> list[LineageMatch]:
        """Other agents' outputs the request's words come from, each an edge record. The
        strongest becomes the provenance the rules see (`source.*`); its `hops` and `path`
        are those of the longest chain found, so that they agree (hops == len(path)) and
        max_hops names the chain it counted."""
        if self.lineage is None or exchange.agent is None:
            return []
        matches: list[tuple[int, LineageMatch]] = []
        fresh: set[int] = set()  # messages looked up for the first time
        for index, message in enumerate(exchange.messages):
            if message.role == "assistant" or not message.text:
                continue  # the agent's own earlier turns
            found, new = await self._match(exchange.agent, message.text)
            matches.extend((index, match) for match in found)
            if new:
                fresh.add(index)
        if not matches:
            return []
        sources = sorted({found.record.agent for _, found in matches})
        quarantined = {status.agent: status.quarantined for status in await self.quarantine.statuses(sources)}
        for index, found in matches:
            if index not in fresh:
                continue  # a resent message: its edge was recorded when it was new
            admission.records.append({
                "event": "lineage", "source": found.record.agent, "agent": exchange.agent,
                "source_exchange": found.record.exchange_id, "message": index,
                "spans": [list(span) for span in found.spans], "containment": round(found.containment, 3),
                "flagged": found.record.flagged, "tainted": found.record.tainted or quarantined[found.record.agent],
                "hops": found.record.hops + 1,
            })

        def weight(item: tuple[int, LineageMatch]) -> tuple[bool, bool, float]:
            record = item[1].record
            return (record.tainted or record.flagged or quarantined[record.agent], record.flagged, item[1].containment)

        _, best = max(matches, key=weight)
        _, longest = max(matches, key=lambda item: (item[1].record.hops, weight(item)))
        record = best.record
        tainted = any(found.record.tainted or found.record.flagged or quarantined[found.record.agent] for _, found in matches)
        admission.provenance = Provenance(
            agent=record.agent, exchange_id=record.exchange_id, flagged=any(found.record.flagged for _, found in matches),
            quarantined=any(quarantined[found.record.agent] for _, found in matches), tainted=tainted,
            hops=longest.record.hops + 1, path=longest.record.path,
        )
        return [found for _, found in matches]

    async def _match(self, agent: str, text: str) -> tuple[tuple[LineageMatch, ...], bool]:
        """The matches for one message, and whether it was looked up just now. A
        conversation is resent whole on every turn: each message is looked up once.
        Matches found for a message do not change; what changes (a source quarantined)
        is read each time."""
        assert self.lineage is not None
        key = (agent, text)  # not one joined string: a text's hash is computed once, and kept by the str
        found = self._matches.get(key)
        if found is not None:
            self._matches.move_to_end(key)
            return found, False
        found = tuple(await self.lineage.match(agent, text))
        self._matches[key] = found
        if len(self._matches) > _MATCH_CACHE:
            self._matches.popitem(last=False)
        return found, True

    # -- after the engine --------------------------------------------------------------

    async def after_request(self, exchange: Exchange, decision: Decision | None, admission: Admission) -> list[dict[str, Any]]:
        """Count what the request did against its agent; `decision` is None when the guard
        itself refused it."""
        agent = exchange.agent
        if agent is None:
            return []
        records: list[dict[str, Any]] = []
        refusal = admission.refusal
        provenance = admission.provenance
        if refusal is not None and refusal.rule not in _NOT_CONDUCT:
            records += await self._violation(agent, refusal.rule, refusal.message)
        elif decision is not None and decision.action is Action.BLOCK:
            rule = decision.blocking_rule or "policy"
            if provenance is not None and (provenance.flagged or provenance.tainted) and provenance.agent != agent:
                # Blocked for carrying flagged words: the fault is the words' author's,
                # not the agent that passed them on.
                records += await self._violation(provenance.agent, rule, f"its words, relayed by {agent!r}, were blocked")
            else:
                records += await self._violation(agent, rule, decision.reason or "")
        elif (admission.provenance is not None and admission.provenance.tainted
              and self.policy.spec.quarantine.on_taint):
            records += await self._violation(agent, "taint", f"carried content from {admission.provenance.agent!r}")
        if decision is not None:
            records += await self._observe(agent, decision)
        return records

    async def after_response(self, request: Exchange, decision: Decision, text: str,
                             admission: Admission) -> list[dict[str, Any]]:
        """Fingerprint what the agent's model said (flagged if a rule crossed it), and
        count a blocked answer against the agent."""
        agent = request.agent
        if agent is None:
            return []
        records: list[dict[str, Any]] = []
        flagged = decision.action is Action.BLOCK or bool(decision.tags) or _intended_block(decision)
        if self.lineage is not None and text:
            provenance = admission.provenance
            # Fingerprinting an answer is most of what lineage costs. On a state only this
            # process reads it waits until the answer is out (`settle`); any lookup first
            # records what waits, so no later request can miss it. On a shared state
            # another replica could look first: recorded now, before the answer is out.
            record = self.lineage.record if self.state.shared else self._defer
            await record(
                agent, request.id, text, flagged=flagged,
                tainted=flagged or bool(provenance and provenance.tainted),
                hops=provenance.hops if provenance else 0,
                path=(*provenance.path, agent) if provenance else (agent,),
            )
        if request.trace_id is not None and decision.action is not Action.BLOCK:
            await self.state.set(_TRACE + request.trace_id, agent.encode(), ttl=self.policy.spec.lineage.ttl)
        if decision.action is Action.BLOCK:
            records += await self._violation(agent, decision.blocking_rule or "policy", decision.reason or "")
        records += await self._observe(agent, decision)
        return records

    async def _defer(self, agent: str, exchange_id: str, text: str, **details: Any) -> None:
        assert self.lineage is not None
        self.lineage.defer(agent, exchange_id, text, **details)

    @property
    def unsettled(self) -> bool:
        """Whether work deferred until after an answer is waiting (see `settle`)."""
        return self.lineage is not None and self.lineage.deferred > 0

    async def settle(self) -> None:
        """Do what `after_response` left for after the answer was sent."""
        if self.lineage is not None:
            await self.lineage.flush()

    async def _violation(self, agent: str, rule: str, reason: str) -> list[dict[str, Any]]:
        transition = await self.quarantine.violation(agent, f"{rule}{': ' + reason if reason else ''}", by=rule)
        return [_transition_record(transition)] if transition else []

    async def _observe(self, agent: str, decision: Decision) -> list[dict[str, Any]]:
        """Feed the decision to drift. A detector that scored nothing new has no run: every
        message was remembered from an earlier turn (an agent resends its history; a retry
        resends all of it), no rule of this direction needs it, or it failed. Such a metric
        is not observed: a remembered message was observed when it was new, and a 0.0 for
        it would pull the baseline down, so that an agent could wash out its drift by
        repeating itself. `violations` is measured by every decision."""
        if self.drift is None:
            return []
        scores = {run.detector: run.top for run in decision.detectors}
        alerts = await self.drift.observe(agent, scores, decision.action is Action.BLOCK, measured=_measured(decision))
        records: list[dict[str, Any]] = [{**alert.as_record(), "agent": agent} for alert in alerts]
        if alerts and self.policy.spec.quarantine.on_drift:
            transition = await self.quarantine.quarantine(agent, _drift_reason(alerts), by="drift")
            if transition:
                records.append(_transition_record(transition))
        return records

    # -- by hand -----------------------------------------------------------------------

    async def agents(self) -> list[AgentStatus]:
        return await self.quarantine.agents()


def _measured(decision: Decision) -> set[str]:
    """The detectors that scored at least one text of this decision and did not fail."""
    failed = {finding.rule.removeprefix(_DETECTOR_ERROR) for finding in decision.findings
              if finding.rule.startswith(_DETECTOR_ERROR)}
    return {run.detector for run in decision.detectors if run.texts} - failed


def _intended_block(decision: Decision) -> bool:
    return any(finding.action is Action.BLOCK for finding in decision.findings)


def _quarantined(status: AgentStatus) -> str:
    until = (f"until {_iso(status.until)}" if status.until is not None
             else f"until released: agent-firewall agents release {status.agent}")
    return f"agent {status.agent!r} is quarantined since {_iso(status.since)} ({status.reason}), {until}"


def _drift_reason(alerts: Iterable[DriftAlert]) -> str:
    return "drift: " + "; ".join(f"{a.metric} {a.value:.3g} against a baseline of {a.baseline_mean:.3g} ± "
                                 f"{a.baseline_std:.3g}" for a in alerts)


def _transition_record(transition: Transition) -> dict[str, Any]:
    return {"event": "quarantine", **transition.as_record()}


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _tool_names(exchange: Exchange) -> Iterable[str]:
    """Tools the request offers its model, and tools its history shows called."""
    if exchange.direction is not Direction.REQUEST:
        return
    tools = exchange.body.get("tools") if isinstance(exchange.body, dict) else None
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")  # OpenAI chat; Anthropic and Responses name the tool itself
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str):
            yield name
        # Gemini: one tool holds a list of function declarations (camelCase or snake_case, as the API reads both).
        for key in ("functionDeclarations", "function_declarations"):
            declared = tool.get(key)
            for declaration in declared if isinstance(declared, list) else ():
                if isinstance(declaration, dict) and isinstance(declaration.get("name"), str):
                    yield declaration["name"]
    for message in exchange.messages:
        for call in message.tool_calls:
            yield call.name
