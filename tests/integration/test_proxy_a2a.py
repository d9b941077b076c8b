"""A2A through the proxy: the a2a-sdk client (the planner) talks to a2a-sdk agent servers
on loopback (the researcher, and a planner agent of its own) through the firewall, which
fronts each at /a2a/<agent>. The same rules as for LLM calls apply to what one agent says
to the other and to what it answers, `may_send_to` edges hold, and lineage sees A2A
traffic and LLM calls (the openai SDK, through the same firewall) as one graph."""

from __future__ import annotations

import base64

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from a2a.client.errors import A2AClientError
from a2a.types.a2a_pb2 import TaskState

from firewall.agents.keys import hash_key, new_key
from firewall.protocols._sse import parse_events
from tests.a2a_agents import ScriptedAgent, ask, connect, reply_text

PLANNER_KEY = new_key()
POLICY = f"""
version: 1
name: a2a
agents:
  planner: {{keys: ["{hash_key(PLANNER_KEY)}"], may_send_to: [researcher]}}
  researcher: {{may_send_to: [planner]}}
  intern: {{may_send_to: []}}
quarantine: {{violations: 2, window: 600}}
lists:
  violent_acts: [poison the well, murder]
  sabotage: [sabotage the launch]
rules:
  - id: violent
    description: a violent suggestion
    match: {{lists: [violent_acts]}}
    action: block
  - id: sabotage
    description: talk of sabotage is answered, not raised
    match: {{lists: [sabotage]}}
    action: block
    respond: refusal
  - id: disclose-ai-to-ai
    if: "source.kind == 'agent'"
    action: {{tag: ai-to-ai}}
"""
FINDINGS = ("The three sources agree: the northern warehouse shipped forty crates in March, "
            "and the audit found no missing inventory at all.")


@pytest.fixture(scope="module")
def agents() -> Iterator[dict[str, ScriptedAgent]]:
    with ScriptedAgent("researcher") as researcher, ScriptedAgent("planner", "plans the work") as planner:
        yield {"researcher": researcher, "planner": planner}


@pytest.fixture
def running(agents: dict[str, ScriptedAgent], start_firewall: Any, upstream_server: Any, fake: Any) -> Any:
    for agent in agents.values():
        agent.reset()
    _, llm = upstream_server
    upstreams = {"openai": llm.url, **{f"a2a-{name}": agent.url for name, agent in agents.items()}}
    return start_firewall(POLICY, upstreams=upstreams, provider_keys={"a2a-researcher": "researcher-own-token"})


def route(running: Any, agent: str = "researcher") -> str:
    return f"{running.url}/a2a/{agent}"


AS_PLANNER = {"X-Agent-Id": "planner"}


def records(running: Any, **match: Any) -> list[dict[str, Any]]:
    return [r for r in running.records() if all(r.get(key) == value for key, value in match.items())]


# -- the Agent Card ---------------------------------------------------------------------


async def test_the_agent_card_passes_with_its_endpoint_at_the_firewall(running: Any) -> None:
    async with connect(route(running), headers=AS_PLANNER) as (_, card):
        assert card.name == "researcher"
        # only the JSON-RPC interface, pointed at the firewall: the HTTP+JSON one would go around it
        assert [(i.protocol_binding, i.url) for i in card.supported_interfaces] == [("JSONRPC", route(running))]
    # a caller that names itself by its path keeps that path in the endpoint it is given
    async with connect(f"{running.url}/agents/planner/a2a/researcher", headers={}) as (_, card):
        assert card.supported_interfaces[0].url == f"{running.url}/agents/planner/a2a/researcher"
    (passed, _) = records(running, event="uninspected_method")
    assert passed["route"] == "GET /a2a/researcher/.well-known/agent-card.json" and passed["status"] == 200


# -- messages between agents -------------------------------------------------------------


async def test_a_benign_message_passes_and_is_recorded_from_the_caller_to_the_agent(running: Any, agents: Any) -> None:
    agents["researcher"].reply(FINDINGS, when="sources")
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        answer = await ask(client, "What do the sources say about the warehouse?")
    assert reply_text(answer) == FINDINGS
    assert [r.text for r in agents["researcher"].received] == ["What do the sources say about the warehouse?"]
    request, response = records(running, route="a2a")
    assert (request["direction"], request["agent"], request["source"], request["target"]) == (
        "request", "researcher", "planner", "planner")
    assert request["provider"] == "a2a-researcher" and "ai-to-ai" in request["tags"]
    assert (response["direction"], response["action"]) == ("response", "allow")
    assert FINDINGS in response["response"]["text"].values()


async def test_an_agent_identified_by_its_key_reaches_the_agent_with_the_agents_own_token(running: Any,
                                                                                       agents: Any) -> None:
    async with connect(route(running), headers={"Authorization": f"Bearer {PLANNER_KEY}"}) as (client, _):
        await ask(client, "hello")
    (received,) = agents["researcher"].received
    assert received.headers["authorization"] == "Bearer researcher-own-token"  # the firewall key never leaves it
    assert records(running, route="a2a", direction="request")[0]["identified_by"] == "key"


async def test_a_message_that_breaks_a_rule_is_refused_before_it_reaches_the_agent(running: Any, agents: Any) -> None:
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        with pytest.raises(A2AClientError, match="blocked by agent-firewall: rule violent"):
            await ask(client, "Tell the team we should poison the well tonight.")
    assert agents["researcher"].received == []
    (blocked,) = records(running, route="a2a")
    assert (blocked["action"], blocked["blocking_rule"], blocked["source"]) == ("block", "violent", "planner")


async def test_an_answer_that_breaks_a_rule_is_refused(running: Any, agents: Any) -> None:
    agents["researcher"].reply("Simple: murder the competitor's courier.")
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        with pytest.raises(A2AClientError, match="rule violent"):
            await ask(client, "How do we win the contract?")
    response = records(running, route="a2a", direction="response")[0]
    assert (response["action"], response["agent"]) == ("block", "researcher")


async def test_a_refusal_is_a_failed_task_or_a_reply_that_says_why(running: Any, agents: Any) -> None:
    agents["researcher"].reply("Then we sabotage the launch on Friday.")
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        (answer,) = await ask(client, "What if the partner backs out?")
        # the answer was about a task: that task has failed, its artifacts withheld
        assert answer.task.status.state == TaskState.TASK_STATE_FAILED and not answer.task.artifacts
        assert "rule sabotage" in answer.task.status.message.parts[0].text
        assert answer.task.id and answer.task.context_id  # the agent's own task, not one made up
        # a request refused before any task exists is answered by a reply message
        (refused,) = await ask(client, "Should we sabotage the launch?")
    assert refused.HasField("message") and "rule sabotage" in refused.message.parts[0].text
    assert [r.text for r in agents["researcher"].received] == ["What if the partner backs out?"]


async def test_a_streamed_answer_is_inspected_event_by_event(running: Any, agents: Any) -> None:
    agents["researcher"].reply(FINDINGS, when="sources", chunks=5)
    agents["researcher"].reply("Our plan: we sabotage the launch and blame the vendor.", when="plan", chunks=4)
    async with connect(route(running), headers=AS_PLANNER, streaming=True) as (client, _):
        events = await ask(client, "What do the sources say?")
        assert reply_text(events) == FINDINGS and events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
        events = await ask(client, "What is the plan?")
        # a streamed request refused before it reaches the agent is answered by one reply message
        (refused,) = await ask(client, "Shall we sabotage the launch?")
    assert "rule sabotage" in refused.message.parts[0].text
    # the words, split across the artifact's chunks, never reached the caller; the task failed saying why
    assert "sabotage" not in reply_text(events) and "abotage the la" not in reply_text(events)
    last = events[-1].status_update.status
    assert last.state == TaskState.TASK_STATE_FAILED and "rule sabotage" in last.message.parts[0].text
    streamed = records(running, route="a2a", direction="response", stream=True)
    assert [r["action"] for r in streamed] == ["allow", "block"]
    assert streamed[1]["withheld"][0]["rule"] == "sabotage"


# -- edges, lineage ---------------------------------------------------------------------


async def test_an_allowed_edge_passes_and_a_disallowed_one_is_refused_against_the_caller(running: Any,
                                                                                        agents: Any) -> None:
    async with connect(route(running, "planner"), headers={"X-Agent-Id": "researcher"}) as (client, _):
        assert reply_text(await ask(client, "Findings are in.")) == "ack: Findings are in."
    async with connect(route(running, "planner"), headers={"X-Agent-Id": "intern"}) as (client, _):
        for _ in range(2):
            with pytest.raises(A2AClientError, match="agent 'intern' may not send to 'planner'"):
                await ask(client, "Here is a plan of my own.")
    assert [r.text for r in agents["planner"].received] == ["Findings are in."]
    refusals = records(running, event="edge_not_allowed")
    assert len(refusals) == 2 and refusals[0]["rules"] == [{"id": "protocol:edge"}]
    # the caller crossed the edge: it is the one quarantined, not the agent it wrote to
    (transition,) = records(running, event="quarantine")
    assert (transition["agent"], transition["to"]) == ("intern", "quarantine")


async def test_a_quarantined_caller_reaches_no_agent_over_a2a(running: Any, agents: Any) -> None:
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        for _ in range(2):  # two blocked messages: the policy's number of violations
            with pytest.raises(A2AClientError):
                await ask(client, "We could poison the well tonight.")
        # Quarantined, the planner's words reach no agent, however harmless, on an edge it may use.
        with pytest.raises(A2AClientError, match="carries words of agent 'planner'.*quarantined"):
            await ask(client, "What do the sources say?")
    assert agents["researcher"].received == []
    (transition,) = records(running, event="quarantine")
    assert (transition["agent"], transition["to"]) == ("planner", "quarantine")
    (refusal,) = records(running, event="source_quarantined")
    assert refusal["rules"] == [{"id": "quarantine:source"}]


async def test_an_a2a_answer_quoted_in_an_llm_request_is_one_lineage_edge(running: Any, agents: Any, fake: Any) -> None:
    agents["researcher"].reply(FINDINGS)
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        said = reply_text(await ask(client, "What do the sources say?"))
    fake.add_reply("Noted.", times=1)
    llm = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", default_headers=AS_PLANNER, max_retries=0)
    llm.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"The researcher says: {said}"}])
    (edge,) = records(running, event="lineage")
    assert (edge["source"], edge["agent"], edge["hops"]) == ("researcher", "planner", 1)
    assert records(running, route="openai_chat", direction="request")[0]["source"] == "researcher"


async def test_an_llm_answer_sent_over_a2a_is_one_lineage_edge(running: Any, agents: Any, fake: Any) -> None:
    fake.add_reply(FINDINGS, times=1)
    llm = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", default_headers=AS_PLANNER, max_retries=0)
    said = llm.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Sum up."}])
    async with connect(route(running), headers=AS_PLANNER) as (client, _):
        await ask(client, f"Please check this: {said.choices[0].message.content}")
    (edge,) = records(running, event="lineage")
    assert (edge["source"], edge["agent"]) == ("planner", "researcher")


# -- JSON-RPC on the wire: 0.3 methods, errors -----------------------------------------


def rpc(running: Any, body: Any, headers: dict[str, str] = AS_PLANNER, agent: str = "researcher") -> httpx.Response:
    return httpx.post(route(running, agent), json=body, headers=headers, timeout=30)


def v03(text: str, request_id: Any = 41, method: str = "message/send") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {"message": {"kind": "message", "messageId": "m1", "role": "user",
                                   "parts": [{"kind": "text", "text": text}]}}}


def test_a2a_0_3_methods_are_inspected_too(running: Any, agents: Any) -> None:
    agents["researcher"].reply("An old-style answer.")
    answered = rpc(running, v03("hello from 0.3"))
    assert answered.status_code == 200 and answered.json()["result"]["artifacts"][0]["parts"][0]["text"] == "An old-style answer."
    blocked = rpc(running, v03("we will poison the well", request_id="q-7"))
    assert blocked.status_code == 200  # a JSON-RPC error travels with 200, as the agent's own server sends it
    assert blocked.json()["id"] == "q-7" and blocked.json()["error"]["code"] == -32050
    assert "rule violent" in blocked.json()["error"]["message"]
    assert [r.text for r in agents["researcher"].received] == ["hello from 0.3"]


def test_a2a_0_3_streams_end_as_a_failed_task_when_blocked(running: Any, agents: Any) -> None:
    agents["researcher"].reply("We could sabotage the launch quietly.", chunks=3)
    with httpx.stream("POST", route(running), json=v03("and then?", method="message/stream"), headers=AS_PLANNER,
                      timeout=30) as answer:
        events = [orjson.loads(event.data) for event in parse_events(answer.read())]
    assert [event["result"]["kind"] for event in events][-1] == "status-update"
    final = events[-1]["result"]
    assert (final["status"]["state"], final["final"]) == ("failed", True)
    assert "rule sabotage" in final["status"]["message"]["parts"][0]["text"]
    assert b"sabotage the" not in orjson.dumps(events[:-1])


def text_file(text: str, *, media: str = "text/plain", request_id: Any = 51) -> dict[str, Any]:
    """A 1.0 SendMessage carrying `text` as an inline file, not as a text part."""
    raw = base64.b64encode(text.encode()).decode()
    return {"jsonrpc": "2.0", "id": request_id, "method": "SendMessage",
            "params": {"message": {"messageId": "m2", "role": "ROLE_USER",
                                   "parts": [{"raw": raw, "mediaType": media, "filename": "notes.txt"}]}}}


def test_a_text_file_carries_no_words_past_the_rules(running: Any, agents: Any) -> None:
    agents["researcher"].reply("Read it.")
    v10 = {**AS_PLANNER, "A2A-Version": "1.0"}
    blocked = rpc(running, text_file("Plan B: we poison the well at dawn."), v10)
    assert blocked.json()["error"]["code"] == -32050 and "rule violent" in blocked.json()["error"]["message"]
    passed = rpc(running, text_file("Quarterly notes: shipments are on time."), v10)
    assert "result" in passed.json(), passed.json()
    # a binary file is not text; bytes under a text type that are not UTF-8 are refused, never passed unread
    rpc(running, text_file("ignored", media="image/png") | {"id": 52}, v10)
    broken = text_file("x")
    broken["params"]["message"]["parts"][0]["raw"] = base64.b64encode(b"\xff\xfe\x00").decode()
    refused = rpc(running, broken, v10)
    assert refused.json()["error"]["code"] == -32600 and "base64 of UTF-8 text" in refused.json()["error"]["message"]
    assert len(agents["researcher"].received) == 2  # the benign file and the image


@pytest.mark.parametrize(("body", "error"), [
    ({"jsonrpc": "2.0", "id": 3, "method": "tasks/send", "params": {}}, "'tasks/send' is not an A2A method"),
    ({"jsonrpc": "2.0", "id": 3, "method": "SendMessage", "params": {"message": {"parts": [{"text": 1}]}}},
     "params.message.parts[0].text: expected a string"),
    ([{"jsonrpc": "2.0", "id": 3, "method": "GetTask"}], "batch"),
])
def test_a_body_the_firewall_cannot_read_is_refused_with_its_id_and_never_forwarded(running: Any, agents: Any,
                                                                                   body: Any, error: str) -> None:
    answer = rpc(running, body)
    assert answer.status_code == 200 and answer.json()["error"]["code"] == -32600
    assert error in answer.json()["error"]["message"]
    assert answer.json()["id"] == (3 if isinstance(body, dict) else None)
    assert agents["researcher"].received == []
    assert records(running, event="bad_body_shape")


def test_the_caller_must_say_who_it_is_and_cannot_speak_for_another(running: Any, agents: Any) -> None:
    anonymous = rpc(running, v03("hello", request_id=5), headers={})
    assert anonymous.json()["id"] == 5 and "X-Agent-Id" in anonymous.json()["error"]["message"]
    relayed = rpc(running, v03("hello"), headers={**AS_PLANNER, "X-Agent-Source": "researcher"})
    assert "the calling agent ('planner') is the source" in relayed.json()["error"]["message"]
    assert agents["researcher"].received == []


def test_an_agent_without_an_upstream_and_methods_other_than_post_are_refused(running: Any) -> None:
    missing = rpc(running, v03("hello"), headers={"X-Agent-Id": "auditor"}, agent="stranger")
    assert "no upstream is configured for 'a2a-stranger'" in missing.json()["error"]["message"]
    assert httpx.get(route(running), headers=AS_PLANNER).status_code == 405
