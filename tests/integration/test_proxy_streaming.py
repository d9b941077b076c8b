"""Streams through the proxy, read by the SDKs' own streaming iterators."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import anthropic
import openai
import orjson
import pytest

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"


def oai(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})


def ant(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})


def openai_stream(client: openai.OpenAI) -> tuple[str, dict[int, dict[str, str]], str | None]:
    text, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    return text, calls, finish


def raw_post(url: str, body: dict[str, Any]) -> bytes:
    request = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                     headers={"Content-Type": "application/json", "X-Agent-Id": "tester"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.read()


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def chunk(content: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


def test_a_benign_stream_arrives_as_it_does_direct(start_firewall, fake, upstream_server):
    _, upstream = upstream_server
    reply = {"text": "Three findings: latency is flat, errors are rare, costs fell.", "tool": "save",
             "arguments": {"path": "notes.md", "lines": ["a", "b"]}}
    fake.script([reply, reply])
    running = start_firewall()
    direct = openai_stream(oai(upstream.url + "/v1"))
    through = openai_stream(oai(running.openai_base))
    assert through == direct and direct[0].startswith("Three findings")
    records = running.records(at_least=2)
    answers = [r for r in records if r.get("direction") == "response" and "event" not in r]
    assert len(answers) == 1, [(r.get("direction"), r.get("event")) for r in records]  # which record, if another came
    record = answers[0]
    assert record["stream"] is True and record["action"] == "allow"
    assert record["response"]["text"]["choices.0.content"] == direct[0]
    assert record["response"]["tool_calls"][0]["name"] == "save"
    assert "holdback_max_chars" in record


def test_a_benign_anthropic_stream_arrives_as_it_does_direct(start_firewall, fake, upstream_server):
    _, upstream = upstream_server
    reply = {"text": "Short answer. Then a longer second sentence follows.", "tool": "lookup", "arguments": {"q": "x"}}
    fake.script([reply, reply])
    running = start_firewall()

    def final(client: anthropic.Anthropic) -> Any:
        with client.messages.stream(model="claude-fake-1", max_tokens=64, messages=[{"role": "user", "content": "go"}]) as s:
            return s.get_final_message()

    direct, through = final(ant(upstream.url)), final(ant(running.url))
    assert [b.model_dump(exclude={"id"}) for b in through.content] == [b.model_dump(exclude={"id"}) for b in direct.content]
    assert through.stop_reason == direct.stop_reason == "tool_use"


@pytest.mark.parametrize("split", ["across-events", "inside-utf8-character", "inside-the-blank-line"])
def test_a_phrase_split_across_reads_never_reaches_the_client(start_firewall, fake, split):
    stream = b"".join([sse(chunk("Zoë reports: ")), sse(chunk("I know where ")), sse(chunk("you live, Ünsal.")),
                       b"data: [DONE]\n\n"])
    if split == "across-events":
        cut = stream.index(b"data: ", stream.index(b"where"))
    elif split == "inside-utf8-character":
        cut = stream.index("Ü".encode()) + 1
    else:
        cut = stream.index(b"\n\n", stream.index(b"you live")) + 1
    fake.script([{"raw": [stream[:cut], stream[cut:]]}, {"raw": [stream[:cut], stream[cut:]]}])
    running = start_firewall()
    body = raw_post(running.url + "/v1/chat/completions",
                    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    assert b"where" not in body and b"live" not in body
    text, _, finish = openai_stream(oai(running.openai_base))
    assert text == "Zoë reports: " and finish == "content_filter"
    record = running.records(at_least=4)[-1]
    assert record.get("blocking_rule") == "direct-threat"
    assert record["withheld"][0]["start"] == len("Zoë reports: ")


def test_a_secret_in_streamed_tool_arguments_is_redacted_and_stays_json(start_firewall, fake):
    fake.add_reply("Sending now.", tool="send_email", arguments={"to": "ops@example.com", "body": f"key {KEY}"})
    running = start_firewall()
    _, calls, _ = openai_stream(oai(running.openai_base))
    assert json.loads(calls[0]["arguments"]) == {"to": "ops@example.com", "body": "key [REDACTED:openai_key]"}
    assert KEY not in running.audit_path.read_text()


def test_a_secret_in_anthropic_input_json_delta_is_redacted(start_firewall, fake):
    fake.add_reply("Stored.", tool="store", arguments={"secret": KEY, "n": 1})
    running = start_firewall()
    with ant(running.url).messages.stream(model="claude-fake-1", max_tokens=64,
                                          messages=[{"role": "user", "content": "go"}]) as stream:
        message = stream.get_final_message()
    tool = next(block for block in message.content if block.type == "tool_use")
    assert tool.input == {"secret": "[REDACTED:openai_key]", "n": 1}


def test_a_block_in_the_middle_of_a_long_stream(start_firewall, fake):
    before = " ".join(f"Step {i} is routine." for i in range(40))
    fake.add_reply(f"{before} Finally, {VIOLENT}. Then the report.")
    running = start_firewall()
    text, _, finish = openai_stream(oai(running.openai_base))
    assert text.startswith(before) and "murder" not in text
    assert text == f"{before} Finally, the best solution is to "  # everything before the span
    assert finish == "content_filter"


def test_an_anthropic_block_raises_the_sdk_error_unless_the_rule_asks_for_a_refusal(start_firewall, fake):
    fake.script([{"text": f"Sure. {VIOLENT}."}, {"text": f"Sure. {VIOLENT}."}])
    running = start_firewall()
    received = ""
    with pytest.raises(anthropic.APIError, match="violent-suggestion"):
        with ant(running.url).messages.stream(model="claude-fake-1", max_tokens=64,
                                              messages=[{"role": "user", "content": "go"}]) as stream:
            for piece in stream.text_stream:
                received += piece
    assert "murder" not in received
    refusing = start_firewall("""
        version: 1
        name: refuse
        lists: {violent_acts: [murder]}
        rules: [{id: no-violence, match: {lists: [violent_acts]}, action: block, respond: refusal}]
    """)
    with ant(refusing.url).messages.stream(model="claude-fake-1", max_tokens=64,
                                           messages=[{"role": "user", "content": "go"}]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "refusal" and "murder" not in str(message.content)


def test_upstream_drops_mid_stream(start_firewall, fake):
    fake.add_reply("one two three four five six seven eight nine ten eleven twelve", drop_after=6)
    running = start_firewall()
    received = ""
    with pytest.raises(openai.APIError, match="broke off the stream"):
        stream = oai(running.openai_base).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go"}], stream=True)
        for part in stream:
            received += (part.choices[0].delta.content or "") if part.choices else ""
    assert "one two" in received
    record = running.records(at_least=2)[-1]
    assert record["direction"] == "response" and "broke off" in record["error"]


def test_stream_buffer_mode_still_inspects_everything(start_firewall, fake):
    fake.add_reply(f"key {KEY} here")
    running = start_firewall("""
        version: 1
        name: buffered
        stream: buffer
        patterns: {openai_key: 'sk-proj-[A-Za-z0-9]{20,}'}
        rules: [{id: keys, match: {patterns: [openai_key]}, action: {redact: "[KEY]"}}]
    """)
    text, _, _ = openai_stream(oai(running.openai_base))
    assert text == "key [KEY] here"
    record = running.records(at_least=2)[-1]
    assert "holdback_max_chars" not in record  # the buffered path records like a whole response
    assert record["response"]["text"]["choices.0.message.content"] == "key [KEY] here"


def test_a_stream_the_firewall_cannot_read_ends_in_an_error_not_in_silence(start_firewall, fake):
    fake.add_reply(raw=[sse(chunk("Fine so far. ")), b"data: {\"broken\xff\xfe\n\n", sse(chunk("never seen"))])
    running = start_firewall()
    received = ""
    with pytest.raises(openai.APIError, match="cannot inspect"):
        for part in oai(running.openai_base).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "go"}], stream=True):
            received += (part.choices[0].delta.content or "") if part.choices else ""
    assert "never seen" not in received
    assert "cannot inspect" in running.records(at_least=2)[-1]["error"]


def test_a_client_that_goes_away_mid_stream_is_recorded(start_firewall, fake):
    import socket
    from urllib.parse import urlsplit

    fake.add_reply("word " * 200, events=100, chunk_delay=0.01)
    running = start_firewall()
    host, port = urlsplit(running.url).hostname, urlsplit(running.url).port
    body = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Agent-Id: tester\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert b"200 OK" in sock.recv(4096)
    record = running.records(at_least=2, timeout=10)[-1]
    assert record["direction"] == "response" and record.get("note") == "the client went away mid-stream"
    assert record["events"]["in"] < 100
