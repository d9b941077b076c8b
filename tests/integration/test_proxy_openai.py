"""The proxy in front of the official openai SDK, against the fake upstream on loopback."""

from __future__ import annotations

import json
from typing import Any


import openai
import pytest

from firewall.proxy import EXCHANGE_HEADER, TAGS_HEADER

OPENAI_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"


def client(base_url: str, **kwargs: Any) -> openai.OpenAI:
    # An agent the firewall can name: these tests are about content, not identity.
    # (a test that sets headers or a path names its agent itself)
    if "/agents/" not in base_url and "default_headers" not in kwargs:
        kwargs["default_headers"] = {"X-Agent-Id": "tester"}
    return openai.OpenAI(base_url=base_url, api_key="sk-test-agent-key", max_retries=0, **kwargs)


def test_allowed_request_is_forwarded_with_body_and_headers_unchanged(start_firewall, fake):
    fake.add_reply("Paris.")
    running = start_firewall()
    sent: list[Any] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [sent.append]})
    agent = client(running.openai_base, http_client=http, default_headers={"X-Agent-Id": "planner", "X-Trace": "t-1"})

    completion = agent.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0.2,
    )

    assert completion.choices[0].message.content == "Paris."
    (received,) = fake.received
    request = sent[0]
    assert received.body == request.content
    assert received.path == "/v1/chat/completions"
    for name in ("authorization", "x-trace", "x-agent-id", "user-agent", "content-type", "x-stainless-lang"):
        assert received.headers[name] == request.headers[name], name
    assert received.headers["authorization"] == "Bearer sk-test-agent-key"

    request_record, response_record = running.records()
    assert request_record["action"] == response_record["action"] == "allow"
    assert request_record["agent"] == "planner" and request_record["identified_by"] == "header"
    assert request_record["exchange"] == response_record["exchange"]


def test_blocked_request_never_reaches_upstream(start_firewall, fake):
    running = start_firewall()
    agent = client(running.openai_base, default_headers={"X-Agent-Id": "executor"})

    with pytest.raises(openai.PermissionDeniedError) as raised:
        agent.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "You execute plans."},
            {"role": "user", "content": f"The planner says: {VIOLENT}."},
        ])

    assert "violent-suggestion" in raised.value.message
    assert raised.value.body["code"] == "firewall_blocked"
    assert fake.received == []
    (record,) = running.records()
    assert record["action"] == "block" and record["blocking_rule"] == "violent-suggestion"
    span = record["rules"][0]["spans"][0]
    assert (span["message"], span["label"]) == (1, "violent_acts")
    assert record["exchange"] == raised.value.response.headers[EXCHANGE_HEADER]


def test_every_role_is_inspected_not_only_the_last_user_message(start_firewall, fake):
    running = start_firewall()
    with pytest.raises(openai.PermissionDeniedError):
        client(running.openai_base).chat.completions.create(model="m", messages=[
            {"role": "system", "content": f"Background: {VIOLENT}"},
            {"role": "user", "content": "Summarise the background."},
        ])
    assert fake.received == []


def test_blocked_response_raises_and_is_recorded(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall()
    with pytest.raises(openai.PermissionDeniedError) as raised:
        client(running.openai_base).chat.completions.create(model="m", messages=[{"role": "user", "content": "ideas?"}])
    assert "violent-suggestion" in raised.value.message
    assert len(fake.received) == 1
    request_record, response_record = running.records()
    assert request_record["action"] == "allow"
    assert response_record["direction"] == "response" and response_record["action"] == "block"


def test_block_with_refusal_keeps_the_agent_loop_going(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall("""
        version: 1
        name: refusals
        lists: {violent_acts: [murder]}
        rules:
          - id: no-violence
            direction: response
            match: {lists: [violent_acts]}
            action: block
            respond: refusal
            message: violent content
    """)
    completion = client(running.openai_base).chat.completions.create(model="m", messages=[{"role": "user", "content": "?"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert "no-violence" in (choice.message.content or "") and "murder" not in (choice.message.content or "")


def test_redacted_request_arrives_redacted_upstream(start_firewall, fake):
    running = start_firewall()
    client(running.openai_base).chat.completions.create(model="m", messages=[
        {"role": "user", "content": [{"type": "text", "text": f"deploy with {OPENAI_KEY} please"}]},
    ])
    (received,) = fake.received
    assert OPENAI_KEY not in received.body.decode()
    assert received.json["messages"][0]["content"][0]["text"] == "deploy with [REDACTED:openai_key] please"
    assert int(received.headers["content-length"]) == len(received.body)
    (request_record, _) = running.records()
    assert request_record["action"] == "redact"
    assert OPENAI_KEY not in running.audit_path.read_text()


def test_redacted_response(start_firewall, fake):
    fake.add_reply(f"Your key is {OPENAI_KEY}.")
    running = start_firewall()
    completion = client(running.openai_base).chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}])
    assert completion.choices[0].message.content == "Your key is [REDACTED:openai_key]."


def test_tag_header_on_ai_to_ai_traffic(start_firewall, fake):
    running = start_firewall()
    agent = client(running.url + "/agents/executor/v1", default_headers={"X-Agent-Source": "planner"})
    raw = agent.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "step 1 done"}])
    assert raw.headers[TAGS_HEADER] == "ai-to-ai"
    (received,) = fake.received
    assert received.path == "/v1/chat/completions"  # the /agents/<id> prefix is not forwarded
    record = running.records()[0]
    assert (record["agent"], record["identified_by"], record["source"]) == ("executor", "path", "planner")
    assert record["action"] == "tag" and record["tags"] == ["ai-to-ai"]


def test_secret_inside_tool_call_arguments_is_redacted(start_firewall, fake):
    running = start_firewall()
    client(running.openai_base).chat.completions.create(model="m", messages=[
        {"role": "user", "content": "call the deploy tool"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "deploy", "arguments": json.dumps({"env": "prod", "token": OPENAI_KEY, "replicas": 3})},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "deployed"},
    ])
    (received,) = fake.received
    arguments = json.loads(received.json["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"env": "prod", "token": "[REDACTED:openai_key]", "replicas": 3}


def test_secret_in_a_tool_call_the_model_makes_is_redacted(start_firewall, fake):
    fake.add_reply(tool="send_email", arguments={"to": "ops@example.com", "body": f"the key is {OPENAI_KEY}"})
    running = start_firewall()
    completion = client(running.openai_base).chat.completions.create(model="m", messages=[{"role": "user", "content": "mail it"}])
    call = completion.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"to": "ops@example.com", "body": "the key is [REDACTED:openai_key]"}


def test_tool_results_are_inspected(start_firewall, fake):
    running = start_firewall()
    with pytest.raises(openai.PermissionDeniedError):
        client(running.openai_base).chat.completions.create(model="m", messages=[
            {"role": "user", "content": "what did the search return?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": f"forum post: {VIOLENT}"},
        ])
    assert fake.received == []


def test_streamed_response_is_buffered_inspected_and_released(start_firewall, fake):
    fake.add_reply("one two three four")
    running = start_firewall()
    stream = client(running.openai_base).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "count"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "one two three four"
    assert running.records(at_least=2)[1]["stream"] is True


def test_streamed_violent_response_is_never_released(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall()
    stream = client(running.openai_base).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "ideas?"}], stream=True)
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "murder" not in text and chunks[-1].choices[0].finish_reason == "content_filter"
    assert running.records(at_least=2)[1]["action"] == "block"


def test_streamed_secret_is_redacted(start_firewall, fake):
    fake.add_reply(f"key: {OPENAI_KEY} done")
    running = start_firewall()
    stream = client(running.openai_base).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "key?"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "key: [REDACTED:openai_key] done"


def test_monitor_mode_forwards_and_records_what_would_have_happened(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: trial
        agents:
          planner: {match: {header: {X-Team: planning}}}
        lists: {violent_acts: [murder]}
        rules:
          - id: no-violence
            match: {lists: [violent_acts]}
            action: block
            mode: monitor
    """)
    agent = client(running.openai_base, default_headers={"X-Team": "planning"})
    agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "murder mystery plot ideas"}])
    assert len(fake.received) == 1
    record = running.records()[0]
    assert (record["agent"], record["identified_by"]) == ("planner", "policy")
    assert (record["action"], record["intended"]) == ("allow", "block")
    assert record["rules"][0]["mode"] == "monitor"


def test_the_response_record_holds_what_the_agent_received(start_firewall, fake):
    fake.add_reply(f"Your key is {OPENAI_KEY}.", tool="save", arguments={"note": "ok"})
    running = start_firewall()
    client(running.openai_base).chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}])
    response = running.records()[1]["response"]
    assert response["text"]["choices.0.message.content"] == "Your key is [REDACTED:openai_key]."
    assert response["tool_calls"][0]["name"] == "save"
    assert OPENAI_KEY not in running.audit_path.read_text()
