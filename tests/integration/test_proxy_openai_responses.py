"""The proxy in front of the openai SDK's Responses API (`client.responses.create`, streamed
and not), against the fake upstream's `/v1/responses` on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import RunningFirewall

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"

POLICY = """\
version: 1
name: responses
lists: {violent_acts: [murder]}
patterns: {openai_key: 'sk-(?:proj-)?[A-Za-z0-9_-]{20,}'}
rules:
  - id: no-violence
    description: violent content
    match: {lists: [violent_acts]}
    action: block
  - id: redact-keys
    match: {patterns: [openai_key]}
    action: {redact: "[REDACTED:{label}]"}
"""
REFUSING = POLICY.replace("action: block", "action: block\n    respond: refusal")
ERRORING = POLICY.replace("action: block", "action: block\n    respond: error")
# A request rule: what the model said on an earlier turn is read by it when it comes back as
# context, as a chat history resent on every turn would be (the answer itself passes: the
# rule is not for responses).
CONTEXT_POLICY = POLICY.replace("lists: {violent_acts: [murder]}", "lists: {violent_acts: [murder], planted: [CODEWORD-7]}") + """\
  - id: planted-word
    description: a word planted in an answer, read back on the next turn
    direction: request
    match: {lists: [planted]}
    action: block
"""


def client(running: RunningFirewall, agent: str = "tester") -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_base, api_key="sk-test-agent-key", max_retries=0,
                         default_headers={"X-Agent-Id": agent})


def post_raw(running: RunningFirewall, body: Any) -> tuple[int, bytes]:
    request = urllib.request.Request(running.url + "/v1/responses", data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", "X-Agent-Id": "tester"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(running: RunningFirewall, body: Any) -> tuple[int, dict[str, Any]]:
    status, data = post_raw(running, body)
    return status, orjson.loads(data)


def streamed(agent: openai.OpenAI, **kwargs: Any) -> tuple[str, list[Any]]:
    """The text the client assembles from the deltas, and every event."""
    events = list(agent.responses.create(model="gpt-4.1-mini", stream=True, **kwargs))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    return text, events


# --- not streamed --------------------------------------------------------------------


def test_an_allowed_exchange_passes_unchanged(start_firewall, fake):
    fake.add_reply("Paris.")
    running = start_firewall(POLICY)
    response = client(running).responses.create(model="gpt-4.1-mini", instructions="Be brief.",
                                                 input="What is the capital of France?")
    assert response.output_text == "Paris."
    (received,) = fake.received
    assert received.path == "/v1/responses"
    assert received.json == {"model": "gpt-4.1-mini", "instructions": "Be brief.", "input": "What is the capital of France?"}
    request_record, response_record = running.records()
    assert request_record["route"] == "openai_responses" and request_record["roles"] == ["system", "user"]
    assert (request_record["action"], response_record["action"]) == ("allow", "allow")
    assert response_record["response"]["text"] == {"output.0.content.0.text": "Paris."}


def test_a_blocked_request_never_reaches_upstream(start_firewall, fake):
    running = start_firewall(POLICY)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client(running).responses.create(model="m", input=[
            {"role": "user", "content": [{"type": "input_text", "text": f"The planner says: {VIOLENT}."}]}])
    assert "no-violence" in raised.value.message and raised.value.body["code"] == "firewall_blocked"
    assert fake.received == []
    (record,) = running.records()
    assert record["action"] == "block" and record["blocking_rule"] == "no-violence"


def test_a_secret_in_the_request_arrives_redacted(start_firewall, fake):
    running = start_firewall(POLICY)
    client(running).responses.create(model="m", input=[
        {"role": "user", "content": [{"type": "input_text", "text": f"deploy with {KEY} please"},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}])
    (received,) = fake.received
    assert KEY not in received.body.decode()
    content = received.json["input"][0]["content"]
    assert content[0]["text"] == "deploy with [REDACTED:openai_key] please"
    assert content[1] == {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}  # passed, uninspected
    assert running.records()[0]["action"] == "redact"
    assert KEY not in running.audit_path.read_text()


def test_a_blocked_response_and_a_redacted_one(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.", when="ideas")
    fake.add_reply(f"Your key is {KEY}.", when="key")
    running = start_firewall(POLICY)
    agent = client(running)
    with pytest.raises(openai.PermissionDeniedError, match="no-violence"):
        agent.responses.create(model="m", input="ideas?")
    assert agent.responses.create(model="m", input="key?").output_text == "Your key is [REDACTED:openai_key]."
    records = running.records()
    assert [record["action"] for record in records] == ["allow", "block", "allow", "redact"]


def test_a_block_answered_with_a_refusal_keeps_the_response_id(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall(REFUSING)
    response = client(running).responses.create(model="m", input="ideas?")
    assert response.status == "completed" and response.output_text == ""
    (message,) = response.output
    (part,) = message.content
    assert part.type == "refusal" and "no-violence" in part.refusal and "murder" not in part.refusal
    # The upstream made this response: its id stays, so the client can still continue after it.
    assert response.id.startswith("resp_fake")


def test_a_tool_call_the_model_makes_and_its_result_are_inspected(start_firewall, fake):
    fake.add_reply(tool="send_email", arguments={"to": "ops@example.com", "body": f"the key is {KEY}"})
    running = start_firewall(POLICY)
    agent = client(running)
    response = agent.responses.create(model="m", input="mail it", tools=[{
        "type": "function", "name": "send_email", "parameters": {"type": "object", "properties": {}}}])
    (call,) = response.output
    assert call.type == "function_call" and call.name == "send_email"
    assert json.loads(call.arguments) == {"to": "ops@example.com", "body": "the key is [REDACTED:openai_key]"}

    # The result goes back as a function_call_output item: a tool result, inspected.
    with pytest.raises(openai.PermissionDeniedError, match="no-violence"):
        agent.responses.create(model="m", input=[
            {"role": "user", "content": "mail it"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": f"bounced: {VIOLENT}"},
        ])
    record = running.records()[-1]
    assert record["roles"] == ["user", "assistant", "tool"] and record["rules"][0]["spans"][0]["message"] == 2


def test_a_secret_in_function_call_arguments_in_the_input_is_redacted_and_stays_json(start_firewall, fake):
    running = start_firewall(POLICY)
    client(running).responses.create(model="m", input=[
        {"role": "user", "content": "deploy"},
        {"type": "function_call", "call_id": "c1", "name": "deploy",
         "arguments": json.dumps({"env": "prod", "token": KEY, "replicas": 3})},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "done"}]},
    ])
    (received,) = fake.received
    assert json.loads(received.json["input"][1]["arguments"]) == {"env": "prod", "token": "[REDACTED:openai_key]",
                                                                  "replicas": 3}


def test_a_tool_the_agent_may_not_use_is_refused(start_firewall, fake):
    running = start_firewall(POLICY + "agents: {tester: {match: {header: {X-Agent-Id: tester}}, tools: [search]}}\n")
    with pytest.raises(openai.PermissionDeniedError, match="may not use the tool"):
        client(running).responses.create(model="m", input="go", tools=[
            {"type": "function", "name": "delete_everything", "parameters": {"type": "object", "properties": {}}}])
    assert fake.received == []


@pytest.mark.parametrize(("body", "where"), [
    ({"model": "m", "input": 42}, "input: expected a string or an array of input items"),
    ({"model": "m", "input": [{"role": "user", "content": 7}]}, "input[0].content: expected a string or an array"),
    ({"model": "m", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role: expected one of user"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].arguments: expected a string"),
    ({"model": "m", "input": "hi", "instructions": ["not", "a", "string"]}, "instructions: expected a string"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream: expected a boolean"),
])
def test_a_body_of_the_wrong_shape_is_refused_and_not_forwarded(start_firewall, fake, body, where):
    running = start_firewall(POLICY)
    status, answer = post(running, body)
    assert status == 400 and where in answer["error"]["message"]
    assert answer["error"]["message"].startswith("agent-firewall: unsupported openai_responses request body")
    assert fake.received == []
    (record,) = running.records()
    assert record["event"] == "bad_body_shape"


def test_an_answer_the_firewall_cannot_read_is_not_released(start_firewall, fake):
    fake.add_reply(raw=['data: {"type": "response.output_text.delta", "output_index": "zero", "delta": "hi"}\n\n'])
    running = start_firewall(POLICY + "stream: {mode: buffer}\n")
    status, answer = post(running, {"model": "m", "input": "hi", "stream": True})
    assert status == 502 and "output_index: expected an integer" in answer["error"]["message"]
    assert running.records()[-1]["event"] == "bad_upstream_response"


# --- streamed ------------------------------------------------------------------------


def test_a_benign_stream_arrives_as_it_does_direct(start_firewall, fake, upstream_server):
    _, upstream = upstream_server
    reply = {"text": "Three findings: latency is flat, errors are rare.", "tool": "save", "arguments": {"path": "n.md"}}
    fake.script([reply, reply])
    running = start_firewall(POLICY)
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0)
    via = client(running)
    kwargs = {"model": "m", "input": "go"}
    with direct.responses.stream(**kwargs) as s:
        expected = s.get_final_response()
    with via.responses.stream(**kwargs) as s:
        events = [event.type for event in s]
        got = s.get_final_response()
    assert got.output_text == expected.output_text == "Three findings: latency is flat, errors are rare."
    assert got.output[1].model_dump(exclude={"id", "call_id"}) == expected.output[1].model_dump(exclude={"id", "call_id"})
    assert events[0] == "response.created" and events[-1] == "response.completed"
    record = running.records(at_least=2)[-1]
    assert record["stream"] is True and record["action"] == "allow"
    assert record["response"]["text"]["output.0.content.0.text"] == expected.output_text
    assert record["response"]["tool_calls"] == [{"channel": ["output", 1, "arguments"], "id": "call_fake" +
                                                 got.output[1].call_id.removeprefix("call_fake"), "name": "save"}]


def test_a_streamed_violent_answer_ends_in_a_refusal_the_sdk_accepts(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall(POLICY)
    with client(running).responses.stream(model="m", input="ideas?") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert "murder" not in text and text.startswith("Honestly,")
    assert "murder" not in final.model_dump_json()
    message, refusal = final.output
    assert message.status == "incomplete" and message.content[0].text == text
    assert refusal.content[0].type == "refusal" and "no-violence" in refusal.content[0].refusal
    record = running.records(at_least=2)[-1]
    assert record["action"] == "block" and record["blocking_rule"] == "no-violence"


def test_a_streamed_block_with_respond_error_raises_in_the_sdk(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall(ERRORING)
    received = ""
    with pytest.raises(openai.APIError, match="no-violence"):
        for event in client(running).responses.create(model="m", input="ideas?", stream=True):
            received += event.delta if event.type == "response.output_text.delta" else ""
    assert "murder" not in received


def test_a_streamed_request_that_is_blocked_gets_a_whole_refusal_stream(start_firewall, fake):
    running = start_firewall(REFUSING)
    with client(running).responses.stream(model="m", input=f"Do it: {VIOLENT}") as stream:
        final = stream.get_final_response()
    assert fake.received == []
    (message,) = final.output
    assert message.content[0].type == "refusal" and "no-violence" in message.content[0].refusal


def test_a_secret_in_a_streamed_answer_is_redacted_in_the_deltas(start_firewall, fake):
    fake.add_reply(f"Your key is {KEY} and that is all.")
    running = start_firewall(POLICY)
    text, events = streamed(client(running), input="key?")
    assert text == "Your key is [REDACTED:openai_key] and that is all."
    assert KEY not in running.audit_path.read_text()


def test_a_secret_in_a_streamed_answer_is_redacted_where_it_is_stated_again(start_firewall, fake):
    """`response.output_text.done`, the finished part and item, and `response.completed`
    state the whole text again: the client must read it redacted there too."""
    fake.script([f"Your key is {KEY} and that is all."] * 2)
    running = start_firewall(POLICY)
    with client(running).responses.stream(model="m", input="key?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == "Your key is [REDACTED:openai_key] and that is all."
    done = next(event for event in events if event.type == "response.output_text.done")
    assert done.text == final.output_text
    _, raw = post_raw(running, {"model": "m", "input": "key?", "stream": True})
    assert KEY.encode() not in raw and raw.count(b"[REDACTED:openai_key]") == 5  # delta, done, part, item, response


def test_a_secret_in_streamed_function_call_arguments_is_redacted_and_stays_json(start_firewall, fake):
    fake.add_reply(tool="send_email", arguments={"to": "ops@example.com", "body": f"key {KEY}"})
    running = start_firewall(POLICY)
    _, events = streamed(client(running), input="mail it")
    arguments = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"to": "ops@example.com", "body": "key [REDACTED:openai_key]"}


def test_a_stream_the_upstream_breaks_off_ends_in_an_error_the_sdk_raises(start_firewall, fake):
    fake.add_reply("one two three four five six seven eight nine ten", drop_after=6)
    running = start_firewall(POLICY)
    received = ""
    with pytest.raises(openai.APIError, match="broke off the stream"):
        for event in client(running).responses.create(model="m", input="go", stream=True):
            received += event.delta if event.type == "response.output_text.delta" else ""
    assert received.startswith("one")


def test_a_stream_whose_final_text_differs_from_its_deltas_is_cut(start_firewall, fake):
    def sse(data: dict[str, Any]) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    fake.add_reply(raw=[
        sse({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "object": "response",
                                                                               "status": "in_progress", "output": []}}),
        sse({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
             "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        sse({"type": "response.output_text.delta", "sequence_number": 2, **at, "delta": "All is fine."}),
        sse({"type": "response.output_text.done", "sequence_number": 3, **at, "text": f"All is fine. {VIOLENT}"}),
    ])
    running = start_firewall(POLICY)
    with pytest.raises(openai.APIError, match="cannot inspect"):
        list(client(running).responses.create(model="m", input="go", stream=True))


def test_buffered_stream_mode_reads_the_same_texts(start_firewall, fake):
    fake.add_reply(f"Your key is {KEY}.", when="key")
    fake.add_reply(f"Honestly, {VIOLENT}.", when="ideas")
    running = start_firewall(POLICY + "stream: {mode: buffer}\n")
    with client(running).responses.stream(model="m", input="key?") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Your key is [REDACTED:openai_key]."
    _, raw = post_raw(running, {"model": "m", "input": "key?", "stream": True})
    assert KEY.encode() not in raw and raw.count(b"[REDACTED:openai_key]") == 5  # delta, done, part, item, response
    with pytest.raises(openai.PermissionDeniedError, match="no-violence"):
        list(client(running).responses.create(model="m", input="ideas?", stream=True))


# --- previous_response_id: earlier turns the body does not carry ---------------------


def test_a_continued_conversation_is_inspected_with_its_earlier_turns(start_firewall, fake):
    fake.add_reply("Noted. The word is CODEWORD-7.", when="word")
    fake.add_reply("Sunny.")
    running = start_firewall(CONTEXT_POLICY)
    agent = client(running)
    first = agent.responses.create(model="m", instructions="Be brief.", input="Give me a word.")
    assert first.output_text == "Noted. The word is CODEWORD-7."  # an answer: the request rule does not apply
    # Without the firewall's memory this request is only "What is the weather like?".
    with pytest.raises(openai.PermissionDeniedError, match="planted-word"):
        agent.responses.create(model="m", input="What is the weather like?", previous_response_id=first.id)
    assert len(fake.received) == 1
    records = [record for record in running.records() if record["direction"] == "request"]
    assert "context" not in records[0]
    assert records[1]["context"] == {"continues": first.id, "seen": True, "earlier_messages": 3, "agent": "tester"}
    assert records[1]["roles"] == ["system", "user", "assistant", "user"]
    assert records[1]["rules"][0]["spans"][0]["message"] == 2  # the earlier answer


def test_every_earlier_turn_is_carried_along_the_chain(start_firewall, fake):
    fake.add_reply("The word is CODEWORD-7.", when="word", times=1)
    fake.add_reply("Noted.")
    running = start_firewall(POLICY)  # no rule about the word: every turn passes
    agent = client(running)
    first = agent.responses.create(model="m", input="Give me a word.")
    second = agent.responses.create(model="m", input="Thanks.", previous_response_id=first.id)
    third = agent.responses.create(model="m", input="Anything else?", previous_response_id=second.id)
    assert third.output_text == "Noted."
    records = [record for record in running.records() if record["direction"] == "request"]
    assert [record.get("context", {}).get("earlier_messages") for record in records] == [None, 2, 4]
    assert records[2]["roles"] == ["user", "assistant", "user", "assistant", "user"]


def test_a_streamed_turn_is_remembered_as_the_client_received_it(start_firewall, fake):
    fake.add_reply(f"Key: {KEY}. The word is CODEWORD-7.")
    running = start_firewall(CONTEXT_POLICY)
    agent = client(running)
    with agent.responses.stream(model="m", input="hello") as stream:
        first = stream.get_final_response()
    with pytest.raises(openai.PermissionDeniedError, match="planted-word"):
        agent.responses.create(model="m", input="go on", previous_response_id=first.id)
    # What the state backend holds is what the client received: the key redacted.
    state = running.firewall.state
    (key,) = asyncio.run(state.keys("turns:"))
    stored = asyncio.run(state.get(key))
    assert key == f"turns:openai_responses:{first.id}"
    assert KEY.encode() not in stored and b"[REDACTED:openai_key]" in stored


def test_an_earlier_turn_is_never_rewritten_into_this_body(start_firewall, fake):
    running = start_firewall(POLICY.replace("action: {redact:", "direction: request\n    action: {redact:"))
    agent = client(running)
    fake.add_reply(f"echo {KEY}")  # the answer is not redacted (the redaction is for requests only)
    first = agent.responses.create(model="m", input="hi")
    agent.responses.create(model="m", input="and now?", previous_response_id=first.id)
    second = fake.received[1]
    assert second.json == {"model": "m", "input": "and now?", "previous_response_id": first.id}
    record = [record for record in running.records() if record["direction"] == "request"][1]
    assert record["action"] == "redact" and "redacted_parts" in record  # seen, and nothing written back


def test_a_turn_this_firewall_did_not_see_is_said_so(start_firewall, fake):
    fake.add_reply("The word is CODEWORD-7.", when="word")
    fake.add_reply("Sunny.")
    elsewhere = start_firewall(CONTEXT_POLICY)
    first = client(elsewhere).responses.create(model="m", input="Give me a word.")
    running = start_firewall(CONTEXT_POLICY)
    response = client(running).responses.create(model="m", input="Weather?", previous_response_id=first.id)
    assert response.output_text == "Sunny."  # the rule could not see the earlier answer: it did not fire
    assert fake.received[-1].json["previous_response_id"] == first.id
    (record, _) = running.records()
    assert record["context"]["seen"] is False and record["context"]["continues"] == first.id
    assert "unknown previous turn" in record["context"]["note"]


def test_a_conversation_id_is_followed_too(start_firewall, fake):
    fake.add_reply("The word is CODEWORD-7.", when="word")
    fake.add_reply("Sunny.")
    running = start_firewall(CONTEXT_POLICY)
    agent = client(running)
    agent.responses.create(model="m", input="Give me a word.", conversation="conv_1")
    with pytest.raises(openai.PermissionDeniedError, match="planted-word"):
        agent.responses.create(model="m", input="Weather?", conversation={"id": "conv_1"})
    assert len(fake.received) == 1


@pytest.mark.parametrize("on_error", ["block", "allow"])
def test_state_that_cannot_be_read_follows_on_error(start_firewall, fake, on_error):
    fake.add_reply("Noted.")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"  # nothing listens there once closed
    running = start_firewall(POLICY.replace("name: responses", f"name: responses\ndefaults: {{on_error: {on_error}}}"),
                             state=url)
    agent = client(running)
    if on_error == "block":
        with pytest.raises(openai.InternalServerError, match="agent state is unavailable") as raised:
            agent.responses.create(model="m", input="go on", previous_response_id="resp_1")
        assert raised.value.status_code == 503 and fake.received == []
    else:
        assert agent.responses.create(model="m", input="go on", previous_response_id="resp_1").output_text == "Noted."
    assert any(record.get("event") == "state_unavailable" for record in running.records())


# --- going on after a refusal the firewall made (an id the upstream never issued) -----


def _requests(running: RunningFirewall) -> list[dict[str, Any]]:
    return [record for record in running.records() if record["direction"] == "request"]


def test_the_fake_refuses_a_previous_response_it_did_not_issue(start_firewall, fake):
    fake.known_responses_only = True
    running = start_firewall(POLICY)
    with pytest.raises(openai.BadRequestError, match="Previous response with id 'resp_fw_nowhere' not found") as raised:
        client(running).responses.create(model="m", input="go on", previous_response_id="resp_fw_nowhere")
    assert raised.value.code == "previous_response_not_found"


def _refused_second_turn(start_firewall, fake) -> tuple[RunningFirewall, openai.OpenAI, Any, Any]:
    """A strict upstream (unknown ids are refused, as OpenAI does); one turn it answers,
    then one the firewall refuses: the firewall, the client and the two responses."""
    fake.known_responses_only = True
    fake.add_reply("Noted.")
    running = start_firewall(REFUSING)
    agent = client(running)
    first = agent.responses.create(model="m", input="Plan the rollout.")
    refused = agent.responses.create(model="m", input=f"Also, {VIOLENT}.", previous_response_id=first.id)
    assert refused.id.startswith("resp_fw_") and refused.output[0].content[0].type == "refusal"
    return running, agent, first, refused


def test_a_conversation_goes_on_after_a_refusal_the_firewall_made(start_firewall, fake):
    running, agent, first, refused = _refused_second_turn(start_firewall, fake)
    third = agent.responses.create(model="m", input="Back to the rollout: what comes first?",
                                   previous_response_id=refused.id)
    assert third.output_text == "Noted." and len(fake.received) == 2
    # The upstream is told the turn it knows: the blocked one never reached it.
    assert fake.received[-1].json == {"model": "m", "input": "Back to the rollout: what comes first?",
                                      "previous_response_id": first.id}
    assert _requests(running)[2]["context"] == {"continues": refused.id, "seen": True, "earlier_messages": 2,
                                                "agent": "tester", "answered_by_firewall": True,
                                                "sent_on_as": first.id}
    # The turn after is the upstream's own again, and is continued as it is.
    agent.responses.create(model="m", input="And then?", previous_response_id=third.id)
    assert fake.received[-1].json["previous_response_id"] == third.id
    assert _requests(running)[3]["context"]["earlier_messages"] == 4  # the blocked request is not among them


def test_two_refusals_in_a_row_one_streamed_still_resume_the_upstreams_turn(start_firewall, fake):
    _, agent, first, refused = _refused_second_turn(start_firewall, fake)
    with agent.responses.stream(model="m", input=f"I insist: {VIOLENT}.", previous_response_id=refused.id) as stream:
        again = stream.get_final_response()
    assert again.id.startswith("resp_fw_") and again.id != refused.id
    assert agent.responses.create(model="m", input="Fine. The rollout?", previous_response_id=again.id).output_text \
        == "Noted."
    assert fake.received[-1].json["previous_response_id"] == first.id and len(fake.received) == 2


def test_after_a_refused_first_turn_the_next_request_starts_afresh(start_firewall, fake):
    fake.known_responses_only = True
    fake.add_reply("Noted.")
    running = start_firewall(REFUSING)
    agent = client(running)
    refused = agent.responses.create(model="m", input=VIOLENT)
    assert agent.responses.create(model="m", input="Sorry. Plan the rollout.",
                                  previous_response_id=refused.id).output_text == "Noted."
    assert fake.received[-1].json == {"model": "m", "input": "Sorry. Plan the rollout."}
    assert _requests(running)[1]["context"]["sent_on_as"] is None


def test_an_answer_refused_on_its_way_back_keeps_the_upstreams_id_and_is_continued_as_it_is(start_firewall, fake):
    fake.known_responses_only = True
    fake.add_reply(f"Honestly, {VIOLENT}.", when="ideas")
    fake.add_reply("Noted.")
    running = start_firewall(REFUSING)
    agent = client(running)
    refused = agent.responses.create(model="m", input="ideas?")
    assert refused.id.startswith("resp_fake")  # the upstream's: it knows this turn
    agent.responses.create(model="m", input="Something kinder?", previous_response_id=refused.id)
    assert fake.received[-1].json["previous_response_id"] == refused.id
    assert "answered_by_firewall" not in _requests(running)[1]["context"]
