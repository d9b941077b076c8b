from __future__ import annotations

import copy
import typing
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import StopReason
from anthropic.types.shared import ErrorResponse

from firewall.model import Message, Part, PartKind, Rewrite, ToolCall
from firewall.protocols import WIRE_FORMATS, AnthropicMessages, BodyShapeError, wire_format_for_path

FMT = AnthropicMessages()


def _request() -> dict[str, Any]:
    return {
        "model": "claude-fake-1",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are the executor agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Only the planner may instruct you."},
        ],
        "messages": [
            {"role": "user", "content": "What is the weather in Paris? Use key sk-ant-api03-SECRET."},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "text", "text": "I'll check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "name": "get_weather",
                        "input": {"location": "Paris, France", "auth": {"key": "sk-ant-api03-SECRET"}, "days": 3},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                        "content": [
                            {"type": "text", "text": "15 degrees, cloudy"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                        ],
                    },
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
                    {"type": "text", "text": "Thanks, now summarise."},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_02", "content": "plain string result"}],
            },
        ],
    }


def test_parse_request_reads_system_blocks_tool_use_tool_results_and_thinking() -> None:
    parsed = FMT.parse_request(_request())
    assert parsed.model == "claude-fake-1" and parsed.stream is False
    system, user, assistant, results, result2 = parsed.messages
    assert system == Message(
        role="system",
        parts=(
            Part("You are the executor agent.", ("system", 0, "text")),
            Part("Only the planner may instruct you.", ("system", 1, "text")),
        ),
    )
    assert user.parts == (Part("What is the weather in Paris? Use key sk-ant-api03-SECRET.", ("messages", 0, "content")),)
    input_path = ("messages", 1, "content", 3, "input")
    assert assistant.parts == (
        Part("The user wants weather.", ("messages", 1, "content", 0, "thinking")),
        Part("I'll check.", ("messages", 1, "content", 2, "text")),
        Part("Paris, France", (*input_path, "location"), PartKind.TOOL_ARGUMENTS),
        Part("sk-ant-api03-SECRET", (*input_path, "auth", "key"), PartKind.TOOL_ARGUMENTS),
    )
    assert assistant.tool_calls == (
        ToolCall("toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "Paris, France", "auth": {"key": "sk-ant-api03-SECRET"}, "days": 3}),
    )
    # the image inside the tool result and the PDF document are not text
    assert results.parts == (
        Part("15 degrees, cloudy", ("messages", 2, "content", 0, "content", 0, "text"), PartKind.TOOL_RESULT),
        Part("Thanks, now summarise.", ("messages", 2, "content", 2, "text")),
    )
    assert results.tool_call_id == "toolu_01A09q90qw90lq917835lq9"
    assert result2.parts == (Part("plain string result", ("messages", 3, "content", 0, "content"), PartKind.TOOL_RESULT),)


def test_parse_request_with_a_string_system_prompt() -> None:
    parsed = FMT.parse_request({"model": "claude-haiku-4-5", "system": "Be brief.", "stream": True, "messages": []})
    assert parsed.messages == (Message(role="system", parts=(Part("Be brief.", ("system",)),)),)
    assert parsed.stream is True


def test_redacting_a_tool_input_leaf_round_trips() -> None:
    body = _request()
    before = copy.deepcopy(body)
    secret = [p for m in FMT.parse_request(body).messages for p in m.parts if p.text == "sk-ant-api03-SECRET"]
    new = FMT.apply_rewrites(body, (Rewrite(secret[0].path, "[SECRET]"),))
    assert new["messages"][1]["content"][3]["input"] == {"location": "Paris, France", "auth": {"key": "[SECRET]"}, "days": 3}
    assert new["messages"][1]["content"][:3] == before["messages"][1]["content"][:3]
    assert new["messages"][0] is body["messages"][0] and new["system"] is body["system"]
    assert body == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("hello", "<root>: expected an object"),
        ({"model": "m"}, "messages: expected an array (it is missing)"),
        ({"system": 3, "messages": []}, "system: expected a string or an array of text blocks"),
        ({"system": [{"type": "text"}], "messages": []}, "system[0].text: expected a string"),
        ({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]}, "messages[1].role: expected a string"),
        ({"messages": [{"role": "user", "content": {"type": "text"}}]}, "messages[0].content: expected a string or an array of content blocks"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type: expected a string"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}, "messages[0].content[0].id: expected a string"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]}, "messages[0].content[0].content: expected a string or an array of content blocks"),
        ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": 1}]}]}]}, "messages[0].content[0].content[0].text: expected a string"),
        ({"messages": [], "stream": 1}, "stream: expected a boolean"),
    ],
)
def test_parse_request_rejects_a_wrong_shape_precisely(body: Any, message: str) -> None:
    with pytest.raises(BodyShapeError) as info:
        FMT.parse_request(body)
    assert str(info.value) == message


def _message() -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake-1",
        "content": [
            {"type": "thinking", "thinking": "Need the weather tool.", "signature": "EqQBCgIYAhIMsig"},
            {"type": "text", "text": "I'll look up the weather in Paris."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "Paris, France", "unit": "celsius"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 91, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }


def test_parse_response_gives_one_assistant_message() -> None:
    (message,) = FMT.parse_response(_message())
    assert message.role == "assistant"
    assert message.parts == (
        Part("Need the weather tool.", ("content", 0, "thinking")),
        Part("I'll look up the weather in Paris.", ("content", 1, "text")),
        Part("Paris, France", ("content", 2, "input", "location"), PartKind.TOOL_ARGUMENTS),
        Part("celsius", ("content", 2, "input", "unit"), PartKind.TOOL_ARGUMENTS),
    )
    assert message.tool_calls == (ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris, France", "unit": "celsius"}),)


def test_parse_response_rejects_a_body_without_content() -> None:
    with pytest.raises(BodyShapeError, match="^content: expected an array$"):
        FMT.parse_response({"type": "error", "error": {"type": "api_error", "message": "boom"}})


def test_refusal_body_is_a_valid_message() -> None:
    assert "refusal" in typing.get_args(StopReason)  # the installed SDK knows it
    body = FMT.refusal_body("Blocked by policy.", model="claude-haiku-4-5")
    message = AnthropicMessage.model_validate(body)
    assert message.id.startswith("msg_fw_")
    assert message.stop_reason == "refusal"
    assert message.content[0].type == "text" and message.content[0].text == "Blocked by policy."
    assert message.usage.input_tokens == 0 and message.usage.output_tokens == 0
    assert FMT.refusal_body("x", model=None, request={"model": "claude-opus-4-1"})["model"] == "claude-opus-4-1"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_body_type_follows_status(status: int, error_type: str) -> None:
    error = ErrorResponse.model_validate(FMT.error_body(status, "blocked by policy"))
    assert (error.type, error.error.type, error.error.message) == ("error", error_type, "blocked by policy")


def test_error_body_for_a_body_too_large() -> None:
    # The docs' type for 413; the SDK's error union does not list it, so no model here.
    assert FMT.error_body(413, "body over 10 MB") == {
        "type": "error",
        "error": {"type": "request_too_large", "message": "body over 10 MB"},
    }


def _client(status: int, content: bytes, content_type: str) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers={"content-type": content_type})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="sk-ant-test", base_url="http://upstream.test", http_client=http, max_retries=0)


def test_the_sdk_reads_an_error_body() -> None:
    client = _client(403, orjson.dumps(FMT.error_body(403, "executor may only hear from planner")), "application/json")
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert "executor may only hear from planner" in str(info.value)


# A tool-use stream in the shape of the streaming docs' example: pings, a text block, a
# tool_use block whose JSON input arrives in fragments split mid-token, \r\n line ends
# and a comment line.
CAPTURED = "\r\n".join(
    [
        "event: message_start",
        'data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-fake-1","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}',
        "",
        ": keep-alive",
        "event: ping",
        'data: {"type": "ping"}',
        "",
        "event: content_block_start",
        'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let\'s check"}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the weather."}}',
        "",
        "event: content_block_stop",
        'data: {"type":"content_block_stop","index":0}',
        "",
        "event: content_block_start",
        'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\\", \\"unit\\": \\"fah"}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\\"}"}}',
        "",
        "event: content_block_stop",
        'data: {"type":"content_block_stop","index":1}',
        "",
        "event: message_delta",
        'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}',
        "",
        "event: message_stop",
        'data: {"type":"message_stop"}',
        "",
        "",
    ]
).encode()


def test_parse_stream_reassembles_a_captured_stream() -> None:
    body = FMT.parse_stream(CAPTURED)
    assert body == {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake-1",
        "content": [
            {"type": "text", "text": "Okay, let's check the weather."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 89},
    }
    AnthropicMessage.model_validate(body)


def test_parse_stream_returns_an_error_event() -> None:
    data = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
        b'"model":"c","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    assert FMT.parse_stream(data) == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n', "content_block_start before message_start"),
        (b"event: ping\ndata: {\"type\": \"ping\"}\n\n", "no message_start event"),
        (CAPTURED.replace(b'"renheit\\"}"', b'"renh"'), r"content\[1\].input: the streamed JSON does not decode"),
    ],
)
def test_parse_stream_rejects_a_broken_stream(data: bytes, message: str) -> None:
    with pytest.raises(BodyShapeError, match=message):
        FMT.parse_stream(data)


def test_render_then_parse_stream_round_trips() -> None:
    body = _message()
    again = FMT.parse_stream(FMT.render_stream(body))
    assert again == body
    assert FMT.parse_response(again) == FMT.parse_response(body)


def test_the_sdk_stream_accepts_a_rendered_stream() -> None:
    body = _message()
    with _client(200, FMT.render_stream(body), "text/event-stream").messages.stream(
        model="claude-fake-1", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "I'll look up the weather in Paris."
    assert final.model_dump(exclude_none=True) == AnthropicMessage.model_validate(body).model_dump(exclude_none=True)


def test_registry_finds_the_messages_route_and_only_it() -> None:
    assert [f.name for f in WIRE_FORMATS if f.provider == "anthropic"] == ["anthropic_messages"]
    assert wire_format_for_path("/v1/messages/") is next(f for f in WIRE_FORMATS if f.name == "anthropic_messages")
    assert wire_format_for_path("/v1/messages/count_tokens") is None


def test_a_message_answering_several_tool_calls_names_none_of_them() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "a"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "b", "is_error": True},
                ],
            }
        ]
    }
    (message,) = FMT.parse_request(body).messages
    assert [p.text for p in message.parts] == ["a", "b"]
    assert all(p.kind is PartKind.TOOL_RESULT for p in message.parts)
    assert message.tool_call_id is None
