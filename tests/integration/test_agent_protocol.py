"""How agents may talk to each other, end to end through the proxy with the official SDKs:
edges (`agents.<a>.may_send_to`), loops, `protocol.max_hops`, tools, rate limits,
throttling, monitor mode, drift, and agent state that cannot be reached.

Each test writes a small policy. Agents are named by the `X-Agent-Id` header where keys
are beside the point, and by their own `afw_…` keys where they are not (the Anthropic
tests: the key travels in `x-api-key`, or wherever the SDK puts its `api_key`, and the
firewall swaps the provider key in).
Whose words a request carries is found by lineage: an agent's recorded answer, quoted
in another agent's request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import pytest

from firewall.agents.drift import DriftStats, drift_key
from firewall.agents.keys import hash_key, new_key
from firewall.testing import free_port

PROVIDER_KEY = "sk-ant-provider-key-held-by-the-firewall"
MODEL = "gpt-4o-mini"

# Answers long enough to be fingerprinted, each with words of its own.
FINDINGS = ("The archive holds eleven reports on the harbour project; the two from 2019 disagree on the budget, "
            "and the auditors sided with the later one after a long review of the invoices.")
ORDERS = ("Unload the blue containers at pier four before noon, then move the forklifts to the north yard "
          "and lock the gate behind the last truck of the evening shift.")
PLAN = ("Step one: interview the five regional managers about the delayed shipments. Step two: compare their "
        "accounts with the warehouse logs from March. Step three: draft a short memo with the likely causes.")
RESEARCH = (f"I checked the plan against the archive. {PLAN} The warehouse logs confirm two of the causes, "
            "and the third one needs a site visit next week.")

EDGES = """
version: 1
name: edges
identity: {unidentified: allow}
agents:
  researcher: {may_send_to: [executor]}
  planner: {}
  executor: {}
"""


# -- helpers -----------------------------------------------------------------------------


def agent(running: Any, name: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_base, api_key="sk-agent-own-provider-key", max_retries=0,
                         default_headers={"X-Agent-Id": name, **headers})


def ask(client: openai.OpenAI, *texts: str, **options: Any) -> str:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text} for text in texts], **options)
    return completion.choices[0].message.content or ""


def claude(running: Any, key: str) -> anthropic.Anthropic:
    """An Anthropic client that sends the agent's key in `x-api-key`, where the API takes
    it (recent SDKs send `api_key` as a bearer token instead; that path is tested too)."""
    return anthropic.Anthropic(base_url=running.url, api_key=None, default_headers={"x-api-key": key}, max_retries=0)


def events(running: Any, kind: str) -> list[dict[str, Any]]:
    return [record for record in running.records() if record.get("event") == kind]


def refusal(running: Any, code: str, rule: str, *, agent: str) -> dict[str, Any]:
    """The one audit record of a refusal: its event is the refusal's code, its rule the
    guard's rule."""
    (record,) = events(running, code)
    assert record["agent"] == agent and record["rules"] == [{"id": rule}] and record["action"] == "block"
    return record


# -- edges ---------------------------------------------------------------------------------


def test_words_carried_over_a_disallowed_edge_are_refused_before_the_upstream(start_firewall, fake):
    running = start_firewall(EDGES)
    fake.add_reply(FINDINGS, times=1)
    assert ask(agent(running, "researcher"), "What does the archive say about the harbour?") == FINDINGS

    forwarded = len(fake.received)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(agent(running, "planner"), f"Plan the next step. The researcher wrote: {FINDINGS}")
    assert refused.value.body["code"] == "edge_not_allowed"
    assert "agent 'researcher' may not send to 'planner'" in refused.value.message
    assert "agents.researcher.may_send_to: executor" in refused.value.message
    assert len(fake.received) == forwarded
    record = refusal(running, "edge_not_allowed", "protocol:edge", agent="planner")
    assert record["status"] == 403
    (edge,) = events(running, "lineage")
    assert (edge["source"], edge["agent"], edge["hops"]) == ("researcher", "planner", 1)

    # The same words, to the agent the researcher may send to.
    fake.add_reply("Noted, on it.", times=1)
    assert ask(agent(running, "executor"), f"Act on this. The researcher wrote: {FINDINGS}") == "Noted, on it."
    assert len(fake.received) == forwarded + 1
    assert FINDINGS in fake.received[-1].body.decode()


def test_a_declared_source_on_a_disallowed_edge_is_refused(start_firewall, fake):
    running = start_firewall(EDGES)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(agent(running, "planner", **{"X-Agent-Source": "researcher"}), "Here is what I was told.")
    assert refused.value.body["code"] == "edge_not_allowed"
    assert "'researcher' may not send to 'planner'" in refused.value.message
    assert fake.received == []
    refusal(running, "edge_not_allowed", "protocol:edge", agent="planner")


def test_every_source_is_checked_not_only_the_declared_or_the_strongest(start_firewall, fake):
    # The executor may send anywhere; the researcher may not send to the planner. A request
    # that carries both, and declares only the executor, is still refused.
    running = start_firewall(EDGES)
    fake.add_reply(ORDERS, times=1)
    ask(agent(running, "executor"), "What are the orders for today?")
    fake.add_reply(FINDINGS, times=1)
    ask(agent(running, "researcher"), "What does the archive say about the harbour?")

    forwarded = len(fake.received)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(agent(running, "planner", **{"X-Agent-Source": "executor"}),
            f"The executor wrote: {ORDERS}", f"And the researcher wrote: {FINDINGS}")
    assert refused.value.body["code"] == "edge_not_allowed"
    assert "'researcher' may not send to 'planner'" in refused.value.message
    assert len(fake.received) == forwarded
    assert {(edge["source"], edge["agent"]) for edge in events(running, "lineage")} == {
        ("executor", "planner"), ("researcher", "planner")}


def test_anthropic_agents_with_their_own_keys_get_anthropics_error_on_a_disallowed_edge(start_firewall, fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    keys = {name: new_key() for name in ("researcher", "planner")}
    running = start_firewall(f"""
        version: 1
        name: edges-with-keys
        agents:
          researcher: {{keys: ["{hash_key(keys["researcher"])}"], may_send_to: [executor]}}
          planner: {{keys: ["{hash_key(keys["planner"])}"]}}
        """, provider_keys={"anthropic": PROVIDER_KEY})

    fake.add_reply(FINDINGS, times=1)
    answer = claude(running, keys["researcher"]).messages.create(
        model="claude-fake-1", max_tokens=256, messages=[{"role": "user", "content": "What does the archive say?"}])
    assert answer.content[0].text == FINDINGS
    (received,) = fake.received
    assert received.headers["x-api-key"] == PROVIDER_KEY  # the agent's afw_ key never leaves the firewall
    assert "authorization" not in received.headers
    assert not any("afw_" in value for value in received.headers.values())

    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude(running, keys["planner"]).messages.create(model="claude-fake-1", max_tokens=256, messages=[
            {"role": "user", "content": f"Plan the next step. The researcher wrote: {FINDINGS}"}])
    error = refused.value.body["error"]
    assert refused.value.body["type"] == "error" and error["type"] == "permission_error"
    assert "agent 'researcher' may not send to 'planner'" in error["message"]
    assert "agents.researcher.may_send_to: executor" in error["message"]
    assert len(fake.received) == 1
    record = refusal(running, "edge_not_allowed", "protocol:edge", agent="planner")
    assert record["route"] == "anthropic_messages"


# -- loops and hops -----------------------------------------------------------------------


def planner_then_researcher(running: Any, fake: Any) -> None:
    """The planner proposes PLAN; the researcher, given it, answers RESEARCH, which quotes
    it: RESEARCH is recorded as having travelled planner → researcher."""
    fake.add_reply(PLAN, times=1)
    assert ask(agent(running, "planner"), "How do we find out why shipments are late?") == PLAN
    fake.add_reply(RESEARCH, times=1)
    assert ask(agent(running, "researcher"), f"Check this plan: {PLAN}") == RESEARCH
    (request,) = [r for r in running.records() if r.get("agent") == "researcher" and r.get("direction") == "request"]
    assert request["provenance"]["path"] == ["planner"] and request["provenance"]["hops"] == 1


@pytest.mark.parametrize("loops", ["block", "allow"])
def test_words_coming_back_to_an_agent_they_passed_are_a_loop(start_firewall, fake, loops):
    running = start_firewall(f"""
        version: 1
        name: loops
        identity: {{unidentified: allow}}
        protocol: {{loops: {loops}}}
        """)
    planner_then_researcher(running, fake)
    forwarded = len(fake.received)
    planner = agent(running, "planner")
    if loops == "block":
        with pytest.raises(openai.PermissionDeniedError) as refused:
            ask(planner, f"The researcher answered: {RESEARCH}")
        assert refused.value.body["code"] == "agent_loop"
        assert "coming back to 'planner': planner → researcher → planner" in refused.value.message
        assert len(fake.received) == forwarded
        refusal(running, "agent_loop", "protocol:loop", agent="planner")
    else:
        fake.add_reply("Then we visit the site.", times=1)
        assert ask(planner, f"The researcher answered: {RESEARCH}") == "Then we visit the site."
        assert len(fake.received) == forwarded + 1
        request = [r for r in running.records() if r.get("agent") == "planner" and r.get("direction") == "request"][-1]
        assert request["source"] == "researcher"
        assert (request["provenance"]["path"], request["provenance"]["hops"]) == (["planner", "researcher"], 2)
        assert events(running, "agent_loop") == []


def test_words_past_max_hops_are_refused(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: hops
        identity: {unidentified: allow}
        protocol: {max_hops: 1}
        """)
    planner_then_researcher(running, fake)  # planner → researcher: one hop, allowed
    forwarded = len(fake.received)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(agent(running, "executor"), f"Do what the researcher says: {RESEARCH}")
    assert refused.value.body["code"] == "max_hops_exceeded"
    message = refused.value.message
    assert "passed through 2 agents (planner → researcher → executor)" in message
    assert "the policy allows 1 (protocol.max_hops)" in message
    assert len(fake.received) == forwarded
    refusal(running, "max_hops_exceeded", "protocol:max_hops", agent="executor")


# -- tools -----------------------------------------------------------------------------------


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def test_tools_an_agent_may_not_use_are_refused_whether_offered_or_in_its_history(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: tools
        identity: {unidentified: allow}
        agents:
          executor: {tools: [search]}
        """)
    executor = agent(running, "executor")
    with pytest.raises(openai.PermissionDeniedError) as offered:
        ask(executor, "Tidy up the disk.", tools=[tool("search"), tool("delete_files")])
    assert offered.value.body["code"] == "tool_not_allowed"
    assert "may not use the tool(s) delete_files (agents.executor.tools: search)" in offered.value.message
    assert fake.received == []

    fake.add_reply("Found three results.", times=1)
    assert ask(executor, "Look it up.", tools=[tool("search")]) == "Found three results."
    assert len(fake.received) == 1

    history = [
        {"role": "user", "content": "Tidy up the disk."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "delete_files", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "deleted 40 files"},
        {"role": "user", "content": "What next?"},
    ]
    with pytest.raises(openai.PermissionDeniedError) as called:
        executor.chat.completions.create(model=MODEL, messages=history, tools=[tool("search")])
    assert called.value.body["code"] == "tool_not_allowed" and "delete_files" in called.value.message
    assert len(fake.received) == 1
    refused = events(running, "tool_not_allowed")
    assert len(refused) == 2 and all(r["rules"] == [{"id": "protocol:tools"}] for r in refused)


# -- rate limits and throttling --------------------------------------------------------------


def test_an_agent_over_its_rate_limit_gets_429_and_is_not_counted_a_violator(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: rates
        identity: {unidentified: allow}
        agents:
          chatty: {rate_limit: {requests: 2, per: 60}}
        lists: {forbidden: [detonator]}
        rules:
          - id: no-detonators
            match: {lists: [forbidden]}
            action: block
        quarantine: {violations: 1}
        """)
    chatty = agent(running, "chatty")
    ask(chatty, "one")
    ask(chatty, "two")
    for attempt in ("three", "four"):
        with pytest.raises(openai.RateLimitError) as limited:
            ask(chatty, attempt)
        assert limited.value.body["code"] == "rate_limited"  # not agent_quarantined: no violation was counted
        assert "agent chatty is over its rate limit of 2 requests per 60 s" in limited.value.message
    assert len(fake.received) == 2
    limits = events(running, "rate_limited")
    assert len(limits) == 2 and all(r["rules"] == [{"id": "rate_limit"}] and r["status"] == 429 for r in limits)
    assert events(running, "quarantine") == []

    # Under this policy one violation does quarantine: the 429s above were not violations.
    with pytest.raises(openai.PermissionDeniedError):
        ask(agent(running, "other"), "Where can I buy a detonator?")
    (transition,) = events(running, "quarantine")
    assert (transition["agent"], transition["to"]) == ("other", "quarantine")


def test_an_edge_over_its_rate_limit_gets_429_and_is_not_counted_a_violator(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: edge-rates
        identity: {unidentified: allow}
        protocol: {edge_rate: {requests: 1, per: 60}}
        quarantine: {violations: 1}
        """)
    fake.add_reply(PLAN, times=1)
    ask(agent(running, "planner"), "How do we find out why shipments are late?")
    researcher = agent(running, "researcher")
    ask(researcher, f"Check this plan: {PLAN}")
    with pytest.raises(openai.RateLimitError) as limited:
        ask(researcher, f"Check this plan again, carefully: {PLAN}")
    assert limited.value.body["code"] == "rate_limited"
    assert "edge planner → researcher is over its rate limit of 1 requests per 60 s" in limited.value.message
    assert len(fake.received) == 2
    refusal(running, "rate_limited", "rate_limit", agent="researcher")
    assert events(running, "quarantine") == []
    fake.add_reply("Nothing new.", times=1)
    assert ask(researcher, "Anything new in the archive?") == "Nothing new."  # its own words still pass


def test_anthropic_agent_over_its_rate_limit_gets_anthropics_rate_limit_error(start_firewall, fake):
    # The SDK's own way with api_key (a bearer token in recent SDKs, x-api-key in older ones).
    key = new_key()
    running = start_firewall(f"""
        version: 1
        name: rates-with-keys
        agents:
          writer: {{keys: ["{hash_key(key)}"], rate_limit: {{requests: 1, per: 60}}}}
        """, provider_keys={"anthropic": PROVIDER_KEY})
    writer = anthropic.Anthropic(base_url=running.url, api_key=key, max_retries=0)
    fake.add_reply("A first draft.", times=1)
    answer = writer.messages.create(model="claude-fake-1", max_tokens=64,
                                    messages=[{"role": "user", "content": "Draft the intro."}])
    assert answer.content[0].text == "A first draft."
    (received,) = fake.received
    assert PROVIDER_KEY in (received.headers.get("x-api-key"), received.headers.get("authorization", "").removeprefix("Bearer "))
    assert not any("afw_" in value for value in received.headers.values())
    with pytest.raises(anthropic.RateLimitError) as limited:
        writer.messages.create(model="claude-fake-1", max_tokens=64,
                               messages=[{"role": "user", "content": "Draft the outro."}])
    assert limited.value.status_code == 429
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert "agent writer is over its rate limit of 1 requests per 60 s" in limited.value.body["error"]["message"]
    assert len(fake.received) == 1
    refusal(running, "rate_limited", "rate_limit", agent="writer")


def test_a_violation_throttles_an_agent_to_its_throttle_rate(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: throttle
        identity: {unidentified: allow}
        lists: {forbidden: [detonator]}
        rules:
          - id: no-detonators
            match: {lists: [forbidden]}
            action: block
        quarantine: {violations: 3, throttle_at: 1, throttle_rate: {requests: 1, per: 60}}
        """)
    suspect = agent(running, "suspect")
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        ask(suspect, "Where can I buy a detonator?")
    assert blocked.value.body["code"] == "firewall_blocked"
    (transition,) = events(running, "quarantine")
    assert (transition["agent"], transition["from"], transition["to"], transition["by"]) == (
        "suspect", "observe", "throttle", "no-detonators")

    fake.add_reply("Hello.", times=1)
    assert ask(suspect, "Hello?") == "Hello."  # within its throttle rate
    with pytest.raises(openai.RateLimitError) as throttled:
        ask(suspect, "Hello again?")
    assert throttled.value.body["code"] == "agent_throttled"
    assert "agent 'suspect' is throttled" in throttled.value.message
    assert "at most 1 requests per 60 s" in throttled.value.message
    assert len(fake.received) == 1
    refusal(running, "agent_throttled", "throttle", agent="suspect")


# -- monitor mode ----------------------------------------------------------------------------


def test_in_monitor_mode_a_crossing_is_recorded_and_forwarded(start_firewall, fake):
    running = start_firewall(EDGES.replace("agents:", "protocol: {mode: monitor}\nagents:"))
    fake.add_reply(FINDINGS, times=1)
    ask(agent(running, "researcher"), "What does the archive say about the harbour?")
    fake.add_reply("Planned.", times=1)
    assert ask(agent(running, "planner"), f"Plan the next step. The researcher wrote: {FINDINGS}") == "Planned."
    assert len(fake.received) == 2
    (crossing,) = events(running, "protocol")
    assert (crossing["rule"], crossing["mode"], crossing["intended"]) == ("protocol:edge", "monitor", "block")
    assert "agent 'researcher' may not send to 'planner'" in crossing["error"]
    assert events(running, "edge_not_allowed") == [] and events(running, "quarantine") == []


# -- drift -----------------------------------------------------------------------------------


class Conversation:
    """An agent's chat as agents hold one: every turn resends the whole history."""

    def __init__(self, client: openai.OpenAI) -> None:
        self.client = client
        self.messages: list[dict[str, Any]] = []

    def say(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        answer = self.send()
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def send(self) -> str:
        """The history as it stands (`say` adds a turn first; alone, it is a client's retry)."""
        completion = self.client.chat.completions.create(model=MODEL, messages=self.messages)
        return completion.choices[0].message.content or ""


INSULTS = ["You are a worthless idiot and everyone hates you.", "Shut up, you stupid pathetic moron.",
           "What a dumb useless piece of crap you are.", "You disgusting loser, nobody cares about your ideas.",
           "You are a brainless idiot, shut your stupid mouth."]


def drift_samples(running: Any, name: str) -> int:
    """How many toxicity observations the agent's drift baseline has taken."""
    raw = asyncio.run(running.firewall.state.get(drift_key(name, "toxicity")))
    return DriftStats.from_json(raw).n if raw is not None else 0


def test_an_agent_drifting_into_insults_is_quarantined_and_a_steady_one_is_not(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: drift
        identity: {unidentified: allow}
        detectors:
          toxicity: {backend: embedded}
        rules:
          - id: abusive
            match: {scores: {toxicity: 0.9}}
            action: {tag: abusive}
        drift: {metrics: [toxicity], min_samples: 10, method: cusum}
        """)
    mallory = Conversation(agent(running, "mallory"))
    alice = Conversation(agent(running, "alice"))
    for turn in range(12):
        mallory.say(f"Please summarise chapter {turn} of the quarterly report for the team.")
        alice.say(f"Please list the open tasks for sprint {turn} in priority order.")
    assert events(running, "drift") == []

    # A retry resends only what was already scored: drift is not fed a 0.0 for it.
    before = drift_samples(running, "alice")
    alice.messages.pop()  # the last answer, as if it never arrived
    alice.send()
    assert drift_samples(running, "alice") == before

    refused = None
    for insult in INSULTS:
        alice.say("Please list the open tasks for the next sprint in priority order.")
        try:
            mallory.say(insult)
        except openai.PermissionDeniedError as error:
            refused = error
            break
    assert refused is not None, "mallory was never refused"
    assert refused.body["code"] == "agent_quarantined" and "drift: toxicity" in refused.message

    alerts = events(running, "drift")
    assert alerts and {alert["agent"] for alert in alerts} == {"mallory"}  # none for alice
    first = alerts[0]
    assert (first["metric"], first["method"]) == ("toxicity", "cusum")
    assert first["value"] > 0.9 and first["baseline"]["mean"] < 0.1 and first["statistic"] > first["threshold"]
    (transition,) = events(running, "quarantine")
    assert (transition["agent"], transition["from"], transition["to"], transition["by"]) == (
        "mallory", "observe", "quarantine", "drift")
    refusal(running, "agent_quarantined", "quarantine", agent="mallory")
    alice.say("Thanks, that is all for today.")  # alice is served as before


# -- state that cannot be reached ------------------------------------------------------------


@pytest.mark.parametrize("on_error", ["block", "allow"])
def test_agent_state_that_cannot_be_reached_follows_defaults_on_error(start_firewall, fake, on_error):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    running = start_firewall(f"""
        version: 1
        name: state-{on_error}
        identity: {{unidentified: allow}}
        defaults: {{on_error: {on_error}}}
        """, state=url)
    planner = agent(running, "planner")
    if on_error == "block":
        with pytest.raises(openai.InternalServerError) as unavailable:
            ask(planner, "What is the plan?")
        assert unavailable.value.status_code == 503
        assert f"agent state is unavailable (redis at {url} unreachable" in unavailable.value.message
        assert "(defaults.on_error: block)" in unavailable.value.message
        assert fake.received == []
        (record,) = events(running, "state_unavailable")
        assert (record["agent"], record["status"], record["action"]) == ("planner", 503, "block")
    else:
        fake.add_reply("Here is the plan.", times=1)
        assert ask(planner, "What is the plan?") == "Here is the plan."
        assert len(fake.received) == 1
        (record, *_) = events(running, "state_unavailable")
        assert (record["agent"], record["action"]) == ("planner", "allow")
        assert url in record["error"] and "inspected without agent state (defaults.on_error: allow)" in record["error"]
        assert [r["direction"] for r in running.records() if "event" not in r] == ["request", "response"]


# -- when an answer is fingerprinted --------------------------------------------------------


def test_an_answer_is_fingerprinted_once_sent_and_never_missed_by_the_next_request(start_firewall, fake) -> None:
    # Memory state: the planner gets its answer before lineage fingerprints it (the work
    # waits until the answer is out), yet the fingerprint is written on its own soon after,
    # and a request that comes first still finds the answer's words.
    running = start_firewall(EDGES)
    lineage = running.firewall.guard.lineage
    fake.script([{"when": "plan the audit", "text": PLAN}, {"text": "Noted."}])
    raw = agent(running, "planner").chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "plan the audit"}])
    exchange = raw.headers["X-Firewall-Exchange-Id"]
    state = running.firewall.state

    async def recorded() -> list[str]:
        return await state.keys("lineage:rec:")

    # The background write, with no further request to prompt it.
    assert asyncio.run(_settled(lineage)), "the deferred fingerprint was never written"
    assert asyncio.run(recorded()) == [f"lineage:rec:planner:{exchange}"]

    # A write still waiting when the next request comes is done before that request is looked up.
    lineage.defer("planner", "ex_late", ORDERS)
    raw = agent(running, "researcher").chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": f"Check this: {ORDERS}"}])
    assert raw.headers.get("X-Firewall-Source-Agent") == "planner"
    (edge,) = [record for record in events(running, "lineage") if record["source_exchange"] == "ex_late"]
    assert edge["agent"] == "researcher"


async def _settled(lineage: Any, timeout: float = 5.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while lineage.deferred and loop.time() < end:
        await asyncio.sleep(0.01)
    return lineage.deferred == 0
