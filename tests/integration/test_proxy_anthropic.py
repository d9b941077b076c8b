"""The proxy in front of the official anthropic SDK, against the fake upstream on loopback."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from firewall.proxy import TAGS_HEADER

ANTHROPIC_KEY = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"


def client(base_url: str, **kwargs: Any) -> anthropic.Anthropic:
    # An agent the firewall can name: these tests are about content, not identity.
    # (a test that sets headers or a path names its agent itself)
    if "/agents/" not in base_url and "default_headers" not in kwargs:
        kwargs["default_headers"] = {"X-Agent-Id": "tester"}
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-agent-key", max_retries=0, **kwargs)


def test_allowed_request_passes_with_the_agents_own_key(start_firewall, fake):
    fake.add_reply("Bonjour.")
    running = start_firewall()
    message = client(running.url, default_headers={"X-Agent-Id": "researcher"}).messages.create(
        model="claude-fake-1", max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "Say hello in French."}],
    )
    assert message.content[0].text == "Bonjour."
    (received,) = fake.received
    assert received.path == "/v1/messages"
    assert received.headers["authorization"] == "Bearer sk-ant-agent-key"
    assert received.headers["anthropic-version"]
    records = running.records()
    assert [r["direction"] for r in records] == ["request", "response"]
    assert records[0]["roles"] == ["system", "user"]
    assert "sk-ant-agent-key" not in running.audit_path.read_text()


def test_blocked_request_raises_the_sdks_permission_error(start_firewall, fake):
    running = start_firewall()
    with pytest.raises(anthropic.PermissionDeniedError) as raised:
        client(running.url).messages.create(model="claude-fake-1", max_tokens=64,
                                            system=[{"type": "text", "text": f"Context: {VIOLENT}"}],
                                            messages=[{"role": "user", "content": "go"}])
    assert raised.value.body["error"]["type"] == "permission_error"
    assert "violent-suggestion" in raised.value.body["error"]["message"]
    assert fake.received == []
    assert running.records()[0]["blocking_rule"] == "violent-suggestion"


def test_tool_use_input_secret_is_redacted_and_tool_result_inspected(start_firewall, fake):
    running = start_firewall()
    client(running.url).messages.create(model="claude-fake-1", max_tokens=64, messages=[
        {"role": "user", "content": "deploy"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "deploy", "input": {"token": ANTHROPIC_KEY, "n": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": f"leaked {ANTHROPIC_KEY}"}]}]},
    ])
    (received,) = fake.received
    blocks = received.json["messages"]
    assert blocks[1]["content"][0]["input"] == {"token": "[REDACTED:anthropic_key]", "n": 2}
    assert blocks[2]["content"][0]["content"][0]["text"] == "leaked [REDACTED:anthropic_key]"


def test_violent_tool_result_is_blocked(start_firewall, fake):
    running = start_firewall()
    with pytest.raises(anthropic.PermissionDeniedError):
        client(running.url).messages.create(model="claude-fake-1", max_tokens=64, messages=[
            {"role": "user", "content": "search"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": VIOLENT}]},
        ])
    assert fake.received == []


def test_redacted_response_and_model_tool_call(start_firewall, fake):
    fake.add_reply(f"here: {ANTHROPIC_KEY}", tool="store", arguments={"secret": ANTHROPIC_KEY})
    running = start_firewall()
    message = client(running.url).messages.create(model="claude-fake-1", max_tokens=64,
                                                  messages=[{"role": "user", "content": "store it"}])
    text = next(block for block in message.content if block.type == "text")
    tool = next(block for block in message.content if block.type == "tool_use")
    assert text.text == "here: [REDACTED:anthropic_key]"
    assert tool.input == {"secret": "[REDACTED:anthropic_key]"}


def test_refusal_is_a_well_formed_message(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall("""
        version: 1
        name: refusals
        lists: {violent_acts: [murder]}
        rules:
          - id: no-violence
            match: {lists: [violent_acts]}
            action: block
            respond: refusal
    """)
    message = client(running.url).messages.create(model="claude-fake-1", max_tokens=64,
                                                  messages=[{"role": "user", "content": "ideas?"}])
    assert message.stop_reason == "refusal"
    assert "no-violence" in message.content[0].text


def test_tags_and_streaming(start_firewall, fake):
    fake.add_reply("streamed answer here")
    running = start_firewall()
    agent = client(running.url + "/agents/executor", default_headers={"X-Agent-Source": "planner"})
    with agent.messages.with_streaming_response.create(
        model="claude-fake-1", max_tokens=64, stream=True, messages=[{"role": "user", "content": "go"}],
    ) as response:
        assert response.headers[TAGS_HEADER] == "ai-to-ai"
    with agent.messages.stream(model="claude-fake-1", max_tokens=64, messages=[{"role": "user", "content": "go"}]) as stream:
        assert stream.get_final_text() == "streamed answer here"


def test_streamed_violent_response_is_never_released(start_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = start_firewall()
    with pytest.raises(anthropic.APIStatusError, match="violent-suggestion"):
        with client(running.url).messages.stream(model="claude-fake-1", max_tokens=64,
                                                 messages=[{"role": "user", "content": "ideas?"}]) as stream:
            stream.get_final_text()
    assert running.records(at_least=2)[-1]["action"] == "block"
