"""StreamGuard on its own: bytes in, bytes out, nothing unchecked released."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pytest

from firewall import Direction, Engine, Exchange
from firewall.protocols import AnthropicMessages, OpenAIChat
from firewall.protocols._sse import SSEDecoder
from firewall.stream import HoldBack, StreamGuard

OPENAI, ANTHROPIC = OpenAIChat(), AnthropicMessages()
REQUEST = Exchange(id="ex_test", direction=Direction.REQUEST, provider="openai", route="openai_chat", messages=(),
                   model="m", agent="researcher", stream=True)
KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def openai_events(pieces: Sequence[str], *, tool_args: Sequence[str] = ()) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    if tool_args:
        events.append(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                             "function": {"name": "send", "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in tool_args]
    events.append(chunk({}, "tool_calls" if tool_args else "stop"))
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_events(pieces: Sequence[str], *, input_json: Sequence[str] = ()) -> list[bytes]:
    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"

    events = [event("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-fake-1", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0}}})]
    events.append(event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}))
    events += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": p}}) for p in pieces]
    events.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if input_json:
        events.append(event("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}}))
        events += [event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                 "delta": {"type": "input_json_delta", "partial_json": p}})
                   for p in input_json]
        events.append(event("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                             "stop_sequence": None},
                                          "usage": {"output_tokens": 5}}))
    events.append(event("message_stop", {"type": "message_stop"}))
    return events


def guard(policy: Any, wire: Any = OPENAI, **holdback: Any) -> StreamGuard:
    engine = Engine(policy)
    chosen = HoldBack(**holdback) if holdback else None
    return StreamGuard(engine, wire.stream_reader(), REQUEST, chosen)


def run(stream_guard: StreamGuard, chunks: Iterable[bytes]) -> tuple[bytes, list[bytes]]:
    """Feed every chunk; return all output and the output after each feed."""
    steps = [stream_guard.feed(chunk) for chunk in chunks]
    steps.append(stream_guard.close())
    return b"".join(steps), steps


def texts(output: bytes, wire: Any = OPENAI) -> dict[str, str]:
    """What a client reassembles from the output, per channel; also checks every event is JSON."""
    reader, out = wire.stream_reader(), {}
    decoder = SSEDecoder()
    for event in [*decoder.feed(output), *decoder.close()]:
        if event.data and event.data != "[DONE]":
            json.loads(event.data)
        for delta in reader.deltas(event):
            key = ".".join(map(str, delta.channel))
            out[key] = out.get(key, "") + delta.text
    return out


@pytest.fixture
def default_policy():
    from pathlib import Path

    from firewall import load_policy_file

    return load_policy_file(Path(__file__).resolve().parents[2] / "policies" / "default.yaml")


def test_a_benign_stream_passes_byte_for_byte_whatever_the_read_boundaries(default_policy):
    stream = b"".join(openai_events(["The report ", "is ready. ", "Three charts, ", "one table."]))
    for size in (1, 2, 3, 7, 64, len(stream)):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        output, _ = run(guard(default_policy), chunks)
        assert output == stream, size


def test_text_is_released_before_the_stream_ends(default_policy):
    words = [f"word{i} " for i in range(60)]
    stream_guard = guard(default_policy)
    _, steps = run(stream_guard, openai_events(words))
    released_before_close = b"".join(steps[:-1])
    assert len(texts(released_before_close)["choices.0.content"]) > 200
    assert stream_guard.outcome().holdback_max < 120


def test_a_banned_phrase_is_never_released_and_the_stream_ends_cleanly(default_policy):
    words = "Honestly , the best solution is to murder him in his sleep and be done .".split()
    stream_guard = guard(default_policy)
    output, steps = run(stream_guard, openai_events([w + " " for w in words]))
    for i in range(1, len(steps) + 1):
        assert b"murder" not in b"".join(steps[:i])
    received = texts(output)["choices.0.content"]
    assert received == "Honestly , the best solution is to "
    assert output.endswith(b"data: [DONE]\n\n") and b'"finish_reason":"content_filter"' in output
    outcome = stream_guard.outcome()
    assert outcome.decision.blocking_rule == "violent-suggestion"
    (withheld,) = outcome.withheld  # the stream is cut as soon as the rule is sure: "murder him" seen
    assert withheld == {"channel": "choices.0.content", "start": len(received),
                        "end": len("Honestly , the best solution is to murder him "), "rule": "violent-suggestion"}


@pytest.mark.parametrize("split", ["between-events", "inside-utf8", "inside-blank-line"])
def test_a_phrase_split_across_reads_is_caught(default_policy, split):
    stream = b"".join(openai_events(["Élodie says: ", "I know where ", "you live, ", "Ünsal."]))
    if split == "between-events":
        cut = stream.index(b"you live")
    elif split == "inside-utf8":
        cut = stream.index("Ü".encode()) + 1
    else:
        cut = stream.index(b"\n\n", stream.index(b"you live")) + 1
    output, steps = run(guard(default_policy), [stream[:cut], stream[cut:]])
    assert b"where" not in output and "you live" not in texts(output).get("choices.0.content", "")
    assert b"content_filter" in output


def test_a_secret_split_over_many_events_is_redacted(default_policy):
    pieces = ["my key is ", KEY[:5], KEY[5:12], KEY[12:30], KEY[30:], " and more text follows here."]
    output, _ = run(guard(default_policy), openai_events(pieces))
    assert texts(output)["choices.0.content"] == "my key is [REDACTED:openai_key] and more text follows here."
    assert KEY[:12].encode() not in output


def test_a_banned_word_that_ends_the_text_is_decided_when_the_stream_ends(default_policy):
    # "murder" could still grow ("murderous") when it arrives, so it is held; nothing comes
    # after it in its channel, and the end of the stream must decide it, not release it.
    output, steps = run(guard(default_policy), openai_events(["Honestly, the best solution is to murder him", " in his sleep"]))
    assert b"murder" not in output and b"content_filter" in output
    output, _ = run(guard(default_policy), openai_events(["You should ", "murder"]))
    assert b"murder" not in output and b"content_filter" in output


def test_a_secret_that_ends_the_text_is_redacted_when_the_stream_ends(default_policy):
    output, _ = run(guard(default_policy), openai_events(["my key is ", KEY]))
    assert texts(output)["choices.0.content"] == "my key is [REDACTED:openai_key]"
    assert KEY[:12].encode() not in output


def test_a_secret_in_streamed_tool_call_arguments_is_redacted(default_policy):
    arguments = json.dumps({"to": "ops@example.com", "body": f"use {KEY} now"})
    fragments = [arguments[i:i + 7] for i in range(0, len(arguments), 7)]
    output, _ = run(guard(default_policy), openai_events(["Sending."], tool_args=fragments))
    received = texts(output)["choices.0.tool_calls.0.arguments"]
    assert json.loads(received) == {"to": "ops@example.com", "body": "use [REDACTED:openai_key] now"}


def test_a_secret_in_anthropic_input_json_delta_is_redacted(default_policy):
    arguments = json.dumps({"token": KEY, "n": 2})
    fragments = [arguments[i:i + 5] for i in range(0, len(arguments), 5)]
    stream_guard = guard(default_policy, ANTHROPIC)
    output, _ = run(stream_guard, anthropic_events(["Storing it."], input_json=fragments))
    received = texts(output, ANTHROPIC)
    assert json.loads(received["content.1.input"]) == {"token": "[REDACTED:openai_key]", "n": 2}
    assert received["content.0.text"] == "Storing it."
    assert stream_guard.outcome().decision.action == "redact"


def test_anthropic_block_ends_with_an_error_event(default_policy):
    output, _ = run(guard(default_policy, ANTHROPIC), anthropic_events(["Fine. ", "Then poison ", "her ", "tea."]))
    assert texts(output, ANTHROPIC)["content.0.text"] == "Fine. Then "  # everything before the span
    assert output.endswith(b"\n\n") and b"event: error" in output and b"poison" not in output


def test_a_match_that_outgrows_the_cap_blocks(load_policy):
    policy = load_policy("""
        version: 1
        name: cap
        stream: {max_holdback: 64}
        patterns: {token: 'tok_[a-z]{4,}'}
        rules: [{id: r, match: {patterns: [token]}, action: {redact: "[T]"}}]
    """)
    stream_guard = guard(policy)
    output, _ = run(stream_guard, openai_events(["start tok_", *(["abcdefghij"] * 10), " end"]))
    assert stream_guard.outcome().decision.blocking_rule == "stream-holdback-exceeded"
    assert b"abcdefghij" not in output and b"content_filter" in output


def test_fail_releases_what_was_checked_then_an_error(default_policy):
    stream_guard = guard(default_policy)
    events = openai_events(["All good so far. ", "More text"])
    out = b"".join(stream_guard.feed(event) for event in events[:3])
    out += stream_guard.fail("upstream gone")
    assert texts(out)["choices.0.content"] == "All good so far. More text"
    assert out.rstrip().endswith(b"}") and b"upstream gone" in out
    assert stream_guard.outcome().error == "upstream gone"
    assert stream_guard.feed(b"data: late\n\n") == b""


def test_model_rules_hold_to_a_sentence_boundary(load_policy):
    policy = load_policy("""
        version: 1
        name: model
        rules: [{id: toxic, match: {scores: {toxicity: 0.9}}, action: block}]
    """)
    assert HoldBack.for_policy(policy).sentences
    stream_guard = guard(policy)
    events = openai_events(["Hello there.", " How", " are you?", " Fine."])
    first = b"".join(stream_guard.feed(event) for event in events[:3])
    assert texts(first)["choices.0.content"] == "Hello there."  # " How" waits for its sentence to end
    rest, _ = run(stream_guard, events[3:])
    assert texts(first + rest)["choices.0.content"] == "Hello there. How are you? Fine."


def test_plain_prose_is_released_at_once(default_policy):
    stream_guard = guard(default_policy)
    events = openai_events(["The report ", "is ready ", "and the charts ", "look fine"])
    out = b"".join(stream_guard.feed(event) for event in events[:4])
    assert texts(out)["choices.0.content"] == "The report is ready and the charts "  # nothing could match
