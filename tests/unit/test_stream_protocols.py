"""The incremental SSE decoder and both providers' stream readers, checked against the
official SDKs' streaming iterators: what `blocked`, `failed` and `render` produce must
be what the SDKs accept."""

from __future__ import annotations

import random
import time
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from firewall.model import PartKind
from firewall.protocols import AnthropicMessages, BodyShapeError, OpenAIChat
from firewall.protocols._paths import get_at, set_at
from firewall.protocols._sse import SSEDecoder
from firewall.protocols.anthropic_messages import AnthropicStreamReader
from firewall.protocols.base import StreamDelta, StreamEvent, StreamReader

# --- the decoder ---------------------------------------------------------------------

# Every line-end style, a BOM, comments, a keep-alive-only block, a stray blank line,
# multi-line data, multi-byte UTF-8 (2, 3 and 4 bytes), [DONE], data that is not JSON,
# `id:`/`retry:` fields and a last event without its blank line.
WIRE = (
    b"\xef\xbb\xbf"
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","model":"claude-x"}}\r\n'
    b"\r\n"
    b": keep-alive\r\n"
    b"\r\n"
    b"event: content_block_delta\n"
    b"id: 7\n"
    b'data: {"type":"content_block_delta","index":0,\n'
    b'data:"delta":{"type":"text_delta","text":"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}}\n'
    b"\n"
    b"\n"
    b": a comment before the fields\r"
    b"retry: 3000\r"
    b"data: not json\r"
    b"\r"
    b"data: [DONE]\r\n"
    b"\r\n"
    b'data: {"last": "no blank line"}'
)
EXPECTED = [
    (b"event: message_start", "message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x"}}),
    (b": keep-alive", None, None),
    (b"event: content_block_delta", "content_block_delta",
     {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "café € 😀"}}),
    (b"\n", None, None),  # the stray blank line: passed on as its own (empty) event
    (b": a comment", None, None),
    (b"data: [DONE]", None, None),
    (b'data: {"last"', None, {"last": "no blank line"}),
]


def _decode(pieces: list[bytes]) -> list[StreamEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def _summary(events: list[StreamEvent]) -> list[tuple[str | None, str, Any]]:
    return [(e.event, e.data, e.json) for e in events]


def test_decoder_reads_every_line_end_comment_bom_and_a_last_event_without_blank_line() -> None:
    events = _decode([WIRE])
    assert b"".join(e.raw for e in events) == WIRE
    assert len(events) == len(EXPECTED)
    for event, (raw_start, name, parsed) in zip(events, EXPECTED, strict=True):
        assert event.raw.lstrip(b"\xef\xbb\xbf").startswith(raw_start), event.raw
        assert event.event == name
        assert event.json == parsed
    assert events[0].raw.startswith(b"\xef\xbb\xbf") and events[0].raw.endswith(b"}}\r\n\r\n")
    assert events[1] == StreamEvent(raw=b": keep-alive\r\n\r\n", event=None, data="", json=None)
    assert events[2].data.startswith('{"type":"content_block_delta","index":0,\n"delta"')  # data lines joined by \n
    assert (events[4].data, events[4].json) == ("not json", None)
    assert events[4].raw.endswith(b"data: not json\r\r")
    assert (events[5].data, events[5].json) == ("[DONE]", None)


def test_decoder_split_at_every_byte_position_gives_the_same_events_and_bytes() -> None:
    whole = _decode([WIRE])
    for cut in range(len(WIRE) + 1):
        events = _decode([WIRE[:cut], WIRE[cut:]])
        assert events == whole, f"split at byte {cut}"
    one_by_one = _decode([WIRE[i : i + 1] for i in range(len(WIRE))])
    assert one_by_one == whole


def test_decoder_random_splits_give_the_same_events_and_bytes() -> None:
    rng = random.Random(20240611)
    stream = WIRE[:-31] + b"\n\n" + OPENAI_WIRE + ANTHROPIC_WIRE + WIRE[3:]
    whole = _decode([stream])
    assert b"".join(e.raw for e in whole) == stream
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        events = _decode(pieces)
        assert events == whole, cuts


def test_a_cr_at_the_end_of_a_read_and_a_lf_at_the_start_of_the_next_are_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    (event,) = decoder.feed(b"\ndata: b\r\n\r\n")
    assert (event.data, event.raw) == ("a\nb", b"data: a\r\ndata: b\r\n\r\n")  # no spurious blank line

    # An event ended by \r at the end of a read waits for a possible \n, which is its own.
    assert decoder.feed(b"data: c\r\n\r") == []
    first, second = decoder.feed(b"\ndata: d\n\n")
    assert first.raw == b"data: c\r\n\r\n" and second.raw == b"data: d\n\n"

    # With bare \r line ends the next read decides: not a \n, so the event was complete.
    assert decoder.feed(b"data: e\r\r") == []
    (event,) = decoder.feed(b"data: f\r\r")
    assert event.raw == b"data: e\r\r"
    (last,) = decoder.close()
    assert (last.raw, last.data) == (b"data: f\r\r", "f")


def test_decoder_keeps_a_multibyte_character_split_across_reads() -> None:
    data = 'data: {"text": "naïve — ok"}\n\n'.encode()
    split = data.index(b"\xc3") + 1  # between the two bytes of ï
    decoder = SSEDecoder()
    assert decoder.feed(data[:split]) == []
    (event,) = decoder.feed(data[split:])
    assert event.json == {"text": "naïve — ok"}


def test_a_bom_split_across_reads_is_still_stripped() -> None:
    assert _summary(_decode([b"\xef", b"\xbb", b"\xbfdata: 1\n\n"])) == [(None, "1", 1)]


def test_invalid_utf8_names_its_byte_offset_in_the_stream() -> None:
    good = b'data: {"a": 1}\n\n'
    decoder = SSEDecoder()
    assert len(decoder.feed(good)) == 1
    decoder.feed(b"data: ab")
    with pytest.raises(BodyShapeError, match=rf"^stream: not valid UTF-8 at byte {len(good) + 8}$"):
        decoder.feed(b"\xff\n\n")


def test_close_flushes_a_partial_event_and_then_nothing_more() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: ping\ndata: {}\n") == []
    assert decoder.buffered == len(b"event: ping\ndata: {}\n")
    assert decoder.close() == [StreamEvent(raw=b"event: ping\ndata: {}\n", event="ping", data="{}", json={})]
    assert decoder.close() == []
    with pytest.raises(RuntimeError, match="feed"):
        decoder.feed(b"data: x\n\n")
    assert SSEDecoder().close() == []


def test_decoder_is_linear_in_a_long_line_fed_in_small_reads() -> None:
    # A 4 MB event in 512-byte reads: rescanning the buffer per read would take minutes.
    payload = b'data: {"text": "' + b"x" * (4 << 20) + b'"}\n\n'
    decoder = SSEDecoder()
    started = time.perf_counter()
    events: list[StreamEvent] = []
    for i in range(0, len(payload), 512):
        events.extend(decoder.feed(payload[i : i + 512]))
    assert time.perf_counter() - started < 3.0
    assert len(events) == 1 and events[0].raw == payload and len(events[0].json["text"]) == 4 << 20


# --- OpenAI --------------------------------------------------------------------------

OAI = OpenAIChat()
_HEAD = {"id": "chatcmpl-B9x", "object": "chat.completion.chunk", "created": 1741570283,
         "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_fc9f1d7035"}


def _oai_choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _tool(index: int, arguments: str, **head: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, **head, "function": {"arguments": arguments}}
    if "name" in head:
        call["function"] = {"name": call.pop("name"), "arguments": arguments}
    return call


# n=2 (shape from the API reference's chunk object and the function-calling guide): the
# choices interleave, a chunk may carry both in either order, choice 1 refuses, choice 0
# makes two parallel tool calls whose arguments arrive split mid-token.
OPENAI_CHOICES: list[list[dict[str, Any]]] = [
    [_oai_choice(0, {"role": "assistant", "content": "", "refusal": None})],
    [_oai_choice(1, {"role": "assistant", "content": "", "refusal": None})],
    [_oai_choice(0, {"content": "The capital "})],
    [_oai_choice(1, {"refusal": "I can’t help"}), _oai_choice(0, {"content": "of France is Paris."})],
    [_oai_choice(1, {"refusal": " with that."})],
    [_oai_choice(0, {"tool_calls": [_tool(0, "", id="call_A", type="function", name="get_weather"),
                                    _tool(1, "", id="call_B", type="function", name="notify")]})],
    [_oai_choice(0, {"tool_calls": [_tool(0, '{"loc')]})],
    [_oai_choice(0, {"tool_calls": [_tool(0, 'ation":"Paris')]})],
    [_oai_choice(0, {"tool_calls": [_tool(1, '{"to":"ops"}')]})],
    [_oai_choice(0, {"tool_calls": [_tool(0, ', France"}')]})],
    [_oai_choice(1, {}, "stop"), _oai_choice(0, {}, "tool_calls")],
]
OPENAI_EVENTS = [b"data: " + orjson.dumps({**_HEAD, "choices": c}) + b"\n\n" for c in OPENAI_CHOICES]
OPENAI_USAGE = b"data: " + orjson.dumps({**_HEAD, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 30,
                                                                           "total_tokens": 39}}) + b"\n\n"
OPENAI_WIRE = b": OPENROUTER PROCESSING\n\n" + b"".join(OPENAI_EVENTS) + OPENAI_USAGE + b"data: [DONE]\n\n"


def _read(reader: StreamReader, data: bytes) -> tuple[list[StreamEvent], list[list[StreamDelta]]]:
    events = _decode([data])
    return events, [reader.deltas(event) for event in events]


def _channels(deltas: list[list[StreamDelta]]) -> dict[tuple[str | int, ...], str]:
    texts: dict[tuple[str | int, ...], str] = {}
    for delta in (d for ds in deltas for d in ds):
        texts[delta.channel] = texts.get(delta.channel, "") + delta.text
    return texts


def test_openai_deltas_name_channels_by_choice_index_and_paths_by_position() -> None:
    reader = OAI.stream_reader()
    events, deltas = _read(reader, OPENAI_WIRE)
    assert deltas[0] == deltas[1] == deltas[2] == []  # the comment; role chunks with empty text
    assert deltas[4] == [
        StreamDelta(("choices", 1, "refusal"), PartKind.TEXT, "I can’t help", ("choices", 0, "delta", "refusal")),
        StreamDelta(("choices", 0, "content"), PartKind.TEXT, "of France is Paris.", ("choices", 1, "delta", "content")),
    ]
    assert deltas[8] == [
        StreamDelta(("choices", 0, "tool_calls", 0, "arguments"), PartKind.TOOL_ARGUMENTS, 'ation":"Paris',
                    ("choices", 0, "delta", "tool_calls", 0, "function", "arguments")),
    ]
    for event, ds in zip(events, deltas, strict=True):
        for delta in ds:
            assert get_at(event.json, delta.path) == delta.text
    assert _channels(deltas) == {
        ("choices", 0, "content"): "The capital of France is Paris.",
        ("choices", 1, "refusal"): "I can’t help with that.",
        ("choices", 0, "tool_calls", 0, "arguments"): '{"location":"Paris, France"}',
        ("choices", 0, "tool_calls", 1, "arguments"): '{"to":"ops"}',
    }
    assert deltas[-2:] == [[], []]  # usage chunk, [DONE]
    assert reader.tool_calls() == [
        {"channel": ("choices", 0, "tool_calls", 0, "arguments"), "id": "call_A", "name": "get_weather"},
        {"channel": ("choices", 0, "tool_calls", 1, "arguments"), "id": "call_B", "name": "notify"},
    ]


def test_openai_legacy_function_call_arguments_are_a_channel_too() -> None:
    reader = OAI.stream_reader()
    chunk = {**_HEAD, "choices": [_oai_choice(0, {"function_call": {"name": "lookup", "arguments": '{"q": "Ada'}})]}
    (event,) = _decode([b"data: " + orjson.dumps(chunk) + b"\n\n"])
    assert reader.deltas(event) == [
        StreamDelta(("choices", 0, "function_call", "arguments"), PartKind.TOOL_ARGUMENTS, '{"q": "Ada',
                    ("choices", 0, "delta", "function_call", "arguments")),
    ]
    assert reader.tool_calls() == [{"channel": ("choices", 0, "function_call", "arguments"), "id": None, "name": "lookup"}]


@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"index": 0}, r"choices: expected an array"),
        ([{"delta": {"content": "x"}}], r"choices\[0\]\.index: expected an integer"),
        ([{"index": 0, "delta": {"content": ["x"]}}], r"choices\[0\]\.delta\.content: expected a string or null"),
        ([{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{"}}]}}],
         r"choices\[0\]\.delta\.tool_calls\[0\]\.index: expected an integer"),
        ([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 1}}]}}],
         r"choices\[0\]\.delta\.tool_calls\[0\]\.function\.arguments: expected a string or null"),
    ],
)
def test_openai_text_it_cannot_attribute_is_an_error_not_a_pass(choices: Any, message: str) -> None:
    (event,) = _decode([b"data: " + orjson.dumps({**_HEAD, "choices": choices}) + b"\n\n"])
    with pytest.raises(BodyShapeError, match="^stream event: " + message):
        OAI.stream_reader().deltas(event)


def _openai(content: bytes) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-test", base_url="http://upstream.test/v1", http_client=http, max_retries=0)


_ASK: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _oai_prefix(n: int) -> tuple[StreamReader, bytes]:
    """A reader that has read the first n events, and those events' bytes."""
    reader = OAI.stream_reader()
    prefix = b"".join(OPENAI_EVENTS[:n])
    for event in _decode([prefix]):
        reader.deltas(event)
    return reader, prefix


@pytest.mark.parametrize("respond", [None, "refusal"])
def test_openai_sdk_ends_cleanly_on_a_refusal_block(respond: str | None) -> None:
    reader, prefix = _oai_prefix(4)
    wire = prefix + reader.blocked("blocked by agent-firewall: rule r", respond)
    chunks = list(_openai(wire).chat.completions.create(**_ASK, stream=True))
    assert chunks[-2].choices[0].finish_reason == "content_filter" and chunks[-2].choices[0].index == 0
    assert chunks[-1].choices[0].finish_reason == "content_filter" and chunks[-1].choices[0].index == 1
    assert {c.id for c in chunks} == {"chatcmpl-B9x"} and chunks[-1].model == "gpt-4o-2024-08-06"

    # The streaming helper iterates to the end too; its final parse raises on any
    # content_filter finish (a real content filter's too), carrying what was received.
    with _openai(wire).chat.completions.stream(**_ASK) as stream:
        kinds = [event.type for event in stream]
        with pytest.raises(openai.ContentFilterFinishReasonError) as info:
            stream.get_final_completion()
    assert "content.done" in kinds and "refusal.done" in kinds
    final = info.value.completion
    assert [(c.index, c.finish_reason) for c in final.choices] == [(0, "content_filter"), (1, "content_filter")]
    assert final.choices[0].message.content == "The capital of France is Paris."
    assert final.choices[1].message.refusal == "I can’t help"


def test_openai_refusal_before_any_chunk_still_ends_the_stream() -> None:
    wire = OAI.stream_reader().blocked("blocked", "refusal")
    (chunk,) = list(_openai(wire).chat.completions.create(**_ASK, stream=True))
    assert chunk.choices[0].finish_reason == "content_filter" and chunk.id.startswith("chatcmpl-fw-")


def test_openai_sdk_raises_on_an_error_block() -> None:
    reader, prefix = _oai_prefix(6)
    wire = prefix + reader.blocked("blocked by agent-firewall: rule violent-suggestion", "error")
    received = []
    with pytest.raises(openai.APIError, match="rule violent-suggestion") as info:
        for chunk in _openai(wire).chat.completions.create(**_ASK, stream=True):
            received.append(chunk)
    assert len(received) == 6
    assert info.value.code == "firewall_blocked" and info.value.type == "permission_error"


def test_openai_sdk_raises_when_the_upstream_failed() -> None:
    reader, prefix = _oai_prefix(3)
    with pytest.raises(openai.APIError, match="upstream closed the connection") as info:
        list(_openai(prefix + reader.failed("upstream closed the connection")).chat.completions.create(**_ASK, stream=True))
    assert info.value.code == "upstream_disconnected" and info.value.type == "api_error"


def _rewrite(reader: StreamReader, data: bytes, new_text: dict[tuple[int, int], str]) -> bytes:
    """The stream with the text of delta j of event i replaced, rendered by the reader."""
    out = []
    for i, event in enumerate(_decode([data])):
        deltas = reader.deltas(event)
        json = event.json
        changed = False
        for j, delta in enumerate(deltas):
            if (i, j) in new_text:
                json, changed = set_at(json, delta.path, new_text[(i, j)]), True
        out.append(reader.render(event, json) if changed else event.raw)
    return b"".join(out)


def test_openai_rewritten_deltas_are_what_the_sdk_accumulates() -> None:
    # event 0 is the comment; event 4 carries choice 1 then choice 0
    rewrites = {
        (3, 0): "[REDACTED] ",  # "The capital " -> a redacted prefix
        (4, 1): "",  # "of France is Paris." emptied
        (8, 0): 'ation":"[REDACTED]',  # tool arguments: "Paris, France" redacted across two fragments
        (10, 0): '"}',
    }
    wire = _rewrite(OAI.stream_reader(), OPENAI_WIRE, rewrites)
    events = _decode([wire])
    assert all(e.json is not None for e in events[1:-1])  # every rewritten event is valid JSON
    again = OAI.stream_reader()
    assert _channels([again.deltas(e) for e in events])[("choices", 0, "content")] == "[REDACTED] "

    with _openai(wire).chat.completions.stream(**_ASK) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "[REDACTED] "
    assert message.tool_calls is not None
    assert orjson.loads(message.tool_calls[0].function.arguments) == {"location": "[REDACTED]"}
    assert orjson.loads(message.tool_calls[1].function.arguments) == {"to": "ops"}
    assert final.choices[1].message.refusal == "I can’t help with that."


# --- Anthropic -----------------------------------------------------------------------

ANT = AnthropicMessages()


def _ant(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


# Shapes from the streaming docs: extended thinking (thinking_delta, signature_delta), a
# text block, a tool_use block whose input arrives as input_json_delta fragments; and a
# text block that starts with text already in content_block_start.
ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_01Bx", "type": "message", "role": "assistant",
                                          "model": "claude-haiku-4-5", "content": [], "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 50, "output_tokens": 1}}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "The user wants "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "the weather."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": "Let me "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "check the weather "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "in Zürich."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2,
     "content_block": {"type": "tool_use", "id": "toolu_01T1", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"location": "Zü'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'rich, CH"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]
ANTHROPIC_WIRE = b"".join(_ant(e) for e in ANTHROPIC_EVENTS)


def test_anthropic_deltas_for_thinking_text_start_text_and_tool_input() -> None:
    reader = ANT.stream_reader()
    events, deltas = _read(reader, ANTHROPIC_WIRE)
    assert deltas[3] == [StreamDelta(("content", 0, "thinking"), PartKind.TEXT, "The user wants ", ("delta", "thinking"))]
    assert deltas[5] == []  # signature_delta
    assert deltas[7] == [StreamDelta(("content", 1, "text"), PartKind.TEXT, "Let me ", ("content_block", "text"))]
    assert deltas[8] == [StreamDelta(("content", 1, "text"), PartKind.TEXT, "check the weather ", ("delta", "text"))]
    assert deltas[13] == [StreamDelta(("content", 2, "input"), PartKind.TOOL_ARGUMENTS, '{"location": "Zü',
                                      ("delta", "partial_json"))]
    assert deltas[12] == []  # an empty fragment adds nothing
    for event, ds in zip(events, deltas, strict=True):
        for delta in ds:
            assert get_at(event.json, delta.path) == delta.text
    assert _channels(deltas) == {
        ("content", 0, "thinking"): "The user wants the weather.",
        ("content", 1, "text"): "Let me check the weather in Zürich.",
        ("content", 2, "input"): '{"location": "Zürich, CH"}',
    }
    assert reader.tool_calls() == [{"channel": ("content", 2, "input"), "id": "toolu_01T1", "name": "get_weather"}]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}, r"index: expected a content block index"),
        ({"type": "content_block_delta", "index": 0, "delta": "x"}, r"delta: expected an object"),
        ({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}, r"delta\.text: expected a string"),
        ({"type": "content_block_start", "index": 0, "content_block": None}, r"content_block: expected an object"),
    ],
)
def test_anthropic_text_it_cannot_attribute_is_an_error_not_a_pass(event: dict[str, Any], message: str) -> None:
    (sse,) = _decode([_ant(event)])
    with pytest.raises(BodyShapeError, match="^stream event: " + message):
        ANT.stream_reader().deltas(sse)


def _anthropic(content: bytes) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=content, headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="sk-ant-test", base_url="http://upstream.test", http_client=http, max_retries=0)


_ANT_ASK: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def _ant_prefix(n: int) -> tuple[AnthropicStreamReader, bytes]:
    reader = ANT.stream_reader()
    prefix = b"".join(_ant(e) for e in ANTHROPIC_EVENTS[:n])
    for event in _decode([prefix]):
        reader.deltas(event)
    return reader, prefix


def test_anthropic_sdk_sees_stop_reason_refusal_after_a_refusal_block() -> None:
    reader, prefix = _ant_prefix(9)  # block 1 (text) is open
    end = reader.blocked("blocked by agent-firewall: rule r", "refusal")
    assert end.count(b"event: content_block_stop") == 1 and b'"index":1' in end
    with _anthropic(prefix + end).messages.stream(**_ANT_ASK) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and final.id == "msg_01Bx"
    assert "".join(texts) == "check the weather "
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "Let me check the weather "  # type: ignore[union-attr]


def test_anthropic_refusal_mid_tool_input_closes_the_tool_block() -> None:
    reader, prefix = _ant_prefix(14)
    with _anthropic(prefix + reader.blocked("blocked", "refusal")).messages.stream(**_ANT_ASK) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and final.content[2].type == "tool_use"


def test_anthropic_refusal_closes_only_blocks_the_client_has_when_releases_are_reported() -> None:
    # The guard read up to the tool block's start but released only up to block 1's
    # first delta; the held events (block 1 stop, block 2 start) are dropped.
    reader, _ = _ant_prefix(12)
    released = b"".join(_ant(e) for e in ANTHROPIC_EVENTS[:9])
    for event in _decode([released]):
        reader.released(event)
    end = reader.blocked("blocked", "refusal")
    assert end.count(b"event: content_block_stop") == 1 and b'"index":1' in end
    with _anthropic(released + end).messages.stream(**_ANT_ASK) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and len(final.content) == 2


def test_anthropic_refusal_before_message_start_reached_the_client_starts_one() -> None:
    reader, _ = _ant_prefix(4)
    reader.released(_decode([b": keep-alive\n\n"])[0])  # released nothing of the message yet
    with _anthropic(reader.blocked("blocked", "refusal")).messages.stream(**_ANT_ASK) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal" and final.id == "msg_01Bx" and final.content == []


@pytest.mark.parametrize("respond", [None, "error"])
def test_anthropic_sdk_raises_on_an_error_block(respond: str | None) -> None:
    reader, prefix = _ant_prefix(9)
    wire = prefix + reader.blocked("blocked by agent-firewall: rule violent-suggestion", respond)
    with pytest.raises(anthropic.APIStatusError, match="rule violent-suggestion") as info:
        with _anthropic(wire).messages.stream(**_ANT_ASK) as stream:
            stream.get_final_message()
    assert info.value.body == {"type": "error", "error": {"type": "permission_error",
                                                          "message": "blocked by agent-firewall: rule violent-suggestion"}}
    with pytest.raises(anthropic.APIStatusError, match="violent-suggestion"):
        list(_anthropic(wire).messages.create(**_ANT_ASK, stream=True))


def test_anthropic_sdk_raises_when_the_upstream_failed() -> None:
    reader, prefix = _ant_prefix(5)
    with pytest.raises(anthropic.APIStatusError, match="upstream closed the connection") as info:
        list(_anthropic(prefix + reader.failed("upstream closed the connection")).messages.create(**_ANT_ASK, stream=True))
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "api_error"


def test_anthropic_rewritten_deltas_are_what_the_sdk_accumulates() -> None:
    rewrites = {
        (7, 0): "",  # the block's starting text emptied
        (9, 0): "in [LOCATION].",  # "in Zürich." redacted
        (13, 0): '{"location": "[LOC',
        (14, 0): 'ATION]"}',
    }
    wire = _rewrite(ANT.stream_reader(), ANTHROPIC_WIRE, rewrites)
    events = _decode([wire])
    assert [e.event for e in events] == [e["type"] for e in ANTHROPIC_EVENTS]
    assert [e.json["type"] for e in events] == [e["type"] for e in ANTHROPIC_EVENTS]
    with _anthropic(wire).messages.stream(**_ANT_ASK) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "check the weather in [LOCATION]."
    assert final.content[1].text == "check the weather in [LOCATION]."  # type: ignore[union-attr]
    assert final.content[2].input == {"location": "[LOCATION]"}  # type: ignore[union-attr]
    assert final.content[0].thinking == "The user wants the weather."  # type: ignore[union-attr]


def test_render_round_trips_through_the_decoder() -> None:
    for reader, data in ((ANT.stream_reader(), ANTHROPIC_WIRE), (OAI.stream_reader(), OPENAI_WIRE)):
        for event in _decode([data]):
            for delta in reader.deltas(event):
                json = set_at(event.json, delta.path, "a \"quoted\"\nline — é")
                (again,) = _decode([reader.render(event, json)])
                assert (again.event, again.json) == (event.event, json)
                lines = again.raw.split(b"\n")
                assert [line[:6] for line in lines] == [b"event:"] * (event.event is not None) + [b"data: ", b"", b""]


@pytest.mark.parametrize("respond", ["block", "Refusal"])
def test_blocked_rejects_an_unknown_respond(respond: str) -> None:
    for reader in (OAI.stream_reader(), ANT.stream_reader()):
        with pytest.raises(ValueError, match="respond must be"):
            reader.blocked("x", respond)
