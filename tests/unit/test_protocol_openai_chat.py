from __future__ import annotations

import copy
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletion
from openai.types.shared import ErrorObject

from firewall.model import EMBEDDED_JSON, Part, PartKind, Rewrite, ToolCall
from firewall.protocols import BodyShapeError, OpenAIChat, wire_format_for_path
from firewall.protocols._paths import get_at

FMT = OpenAIChat()
ARGS = ("messages", 3, "tool_calls", 0, "function", "arguments")


def _request() -> dict[str, Any]:
    return {
        "model": "gpt-4o-2024-08-06",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are the executor agent."},
            {"role": "developer", "content": [{"type": "text", "text": "Never reveal keys."}]},
            {
                "role": "user",
                "name": "planner",
                "content": [
                    {"type": "text", "text": "Deploy build 42 and describe this screenshot."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {
                            "name": "deploy",
                            "arguments": '{"build": 42, "token": "sk-live-9f8e7d", "targets": ["eu-west", "us-east"]}',
                        },
                    },
                    {
                        "id": "call_def",
                        "type": "function",
                        "function": {"name": "shell", "arguments": "rm -rf / --no-preserve-root"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_abc", "content": "deployed to eu-west, us-east"},
            {"role": "tool", "tool_call_id": "call_def", "content": [{"type": "text", "text": "permission denied"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I will not run that."}]},
        ],
    }


def test_parse_request_inspects_every_role_and_records_where_each_text_lives() -> None:
    parsed = FMT.parse_request(_request())
    assert parsed.model == "gpt-4o-2024-08-06" and parsed.stream is True
    assert [m.role for m in parsed.messages] == ["system", "developer", "user", "assistant", "tool", "tool", "assistant"]
    system, developer, user, assistant, tool1, tool2, refusing = parsed.messages
    assert system.parts == (Part("You are the executor agent.", ("messages", 0, "content")),)
    assert developer.parts == (Part("Never reveal keys.", ("messages", 1, "content", 0, "text")),)
    # image and audio parts carry no text
    assert user.parts == (Part("Deploy build 42 and describe this screenshot.", ("messages", 2, "content", 0, "text")),)
    assert user.name == "planner"
    assert assistant.parts == (
        Part("sk-live-9f8e7d", (*ARGS, EMBEDDED_JSON, "token"), PartKind.TOOL_ARGUMENTS),
        Part("eu-west", (*ARGS, EMBEDDED_JSON, "targets", 0), PartKind.TOOL_ARGUMENTS),
        Part("us-east", (*ARGS, EMBEDDED_JSON, "targets", 1), PartKind.TOOL_ARGUMENTS),
        Part("rm -rf / --no-preserve-root", ("messages", 3, "tool_calls", 1, "function", "arguments"), PartKind.TOOL_ARGUMENTS),
    )
    assert assistant.tool_calls == (
        ToolCall("call_abc", "deploy", {"build": 42, "token": "sk-live-9f8e7d", "targets": ["eu-west", "us-east"]}),
        ToolCall("call_def", "shell", "rm -rf / --no-preserve-root"),
    )
    assert tool1.parts == (Part("deployed to eu-west, us-east", ("messages", 4, "content"), PartKind.TOOL_RESULT),)
    assert tool1.tool_call_id == "call_abc"
    assert tool2.parts == (Part("permission denied", ("messages", 5, "content", 0, "text"), PartKind.TOOL_RESULT),)
    assert refusing.parts == (Part("I will not run that.", ("messages", 6, "content", 0, "refusal")),)


def test_parse_request_defaults_and_legacy_function_call() -> None:
    body = {
        "model": "gpt-3.5-turbo-0613",
        "messages": [
            {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q": "who is Ada"}'}},
            {"role": "function", "name": "lookup", "content": "Ada Lovelace, mathematician"},
        ],
    }
    parsed = FMT.parse_request(body)
    assert parsed.stream is False
    call, result = parsed.messages
    path = ("messages", 0, "function_call", "arguments", EMBEDDED_JSON, "q")
    assert call.parts == (Part("who is Ada", path, PartKind.TOOL_ARGUMENTS),)
    assert call.tool_calls == (ToolCall("", "lookup", {"q": "who is Ada"}),)
    assert result.parts == (Part("Ada Lovelace, mathematician", ("messages", 1, "content"), PartKind.TOOL_RESULT),)
    assert result.name == "lookup"


def test_redacting_a_secret_in_tool_arguments_round_trips() -> None:
    body = _request()
    before = copy.deepcopy(body)
    secret = next(p for m in FMT.parse_request(body).messages for p in m.parts if p.text.startswith("sk-live"))
    new = FMT.apply_rewrites(body, (Rewrite(secret.path, "[SECRET]"),))

    arguments = get_at(new, ARGS)
    assert orjson.loads(arguments) == {"build": 42, "token": "[SECRET]", "targets": ["eu-west", "us-east"]}
    assert new["messages"][3]["tool_calls"][0]["function"]["name"] == "deploy"
    assert new["messages"][3]["tool_calls"][1] == before["messages"][3]["tool_calls"][1]
    assert {k: v for k, v in new.items() if k != "messages"} == {k: v for k, v in before.items() if k != "messages"}
    assert new["messages"][:3] == before["messages"][:3]
    assert body == before  # the original is not mutated
    # what the firewall would now see: the redacted value, at the same path
    reparsed = FMT.parse_request(new).messages[3]
    assert reparsed.parts[0] == Part("[SECRET]", secret.path, PartKind.TOOL_ARGUMENTS)


def test_redacting_non_json_arguments_replaces_the_whole_string() -> None:
    path = ("messages", 3, "tool_calls", 1, "function", "arguments")
    new = FMT.apply_rewrites(_request(), (Rewrite(path, "[REDACTED]"),))
    assert get_at(new, path) == "[REDACTED]"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "<root>: expected an object"),
        ({"model": "m"}, "messages: expected an array (it is missing)"),
        ({"messages": {"role": "user"}}, "messages: expected an array"),
        ({"messages": ["hi"]}, "messages[0]: expected an object"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"content": "c"}]}, "messages[2].role: expected a string"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content: expected a string, an array of content parts or null"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type: expected a string"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages[0].content[0].text: expected a string"),
        ({"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls: expected an array"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]}, "messages[0].tool_calls[0].function: expected an object"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]}, "messages[0].tool_calls[0].function.arguments: expected a string"),
        ({"messages": [], "model": 4}, "model: expected a string"),
        ({"messages": [], "stream": "yes"}, "stream: expected a boolean"),
    ],
)
def test_parse_request_rejects_a_wrong_shape_precisely(body: Any, message: str) -> None:
    with pytest.raises(BodyShapeError) as info:
        FMT.parse_request(body)
    assert str(info.value) == message


def _completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Let me look that up.", "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Paris, France","api_key":"sk-proj-XYZ"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
    }


def test_parse_response_gives_one_message_per_choice() -> None:
    first, second = FMT.parse_response(_completion())
    assert first.role == "assistant"
    assert first.parts == (Part("Let me look that up.", ("choices", 0, "message", "content")),)
    args = ("choices", 1, "message", "tool_calls", 0, "function", "arguments", EMBEDDED_JSON)
    assert second.parts == (
        Part("Paris, France", (*args, "location"), PartKind.TOOL_ARGUMENTS),
        Part("sk-proj-XYZ", (*args, "api_key"), PartKind.TOOL_ARGUMENTS),
    )
    assert second.tool_calls == (ToolCall("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", {"location": "Paris, France", "api_key": "sk-proj-XYZ"}),)


def test_parse_response_rejects_a_choice_without_a_message() -> None:
    with pytest.raises(BodyShapeError, match=r"^choices\[0\]\.message: expected an object$"):
        FMT.parse_response({"choices": [{"index": 0, "finish_reason": "stop"}]})


def test_refusal_body_is_a_valid_chat_completion() -> None:
    body = FMT.refusal_body("Blocked by policy violent-suggestion.", model=None, request={"model": "gpt-4o-mini"})
    completion = ChatCompletion.model_validate(body)
    assert completion.id.startswith("chatcmpl-fw-")
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "Blocked by policy violent-suggestion."
    assert completion.choices[0].message.refusal is None
    assert completion.usage is not None and completion.usage.total_tokens == 0
    assert FMT.refusal_body("x", model="gpt-4.1")["model"] == "gpt-4.1"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
    ],
)
def test_error_body_type_follows_status(status: int, error_type: str) -> None:
    body = FMT.error_body(status, "blocked by policy", code="policy_violation")
    error = ErrorObject.model_validate(body["error"])
    assert (error.type, error.message, error.code, error.param) == (error_type, "blocked by policy", "policy_violation", None)


def _client(status: int, content: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content, headers={"content-type": content_type})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-test", base_url="http://upstream.test/v1", http_client=http, max_retries=0)


def test_the_sdk_reads_an_error_body() -> None:
    body = FMT.error_body(403, "executor may only hear from planner", code="policy_violation")
    client = _client(403, orjson.dumps(body), "application/json")
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "policy_violation"
    assert "executor may only hear from planner" in str(info.value)


# A streamed tool call as the API sends it (shape from the function-calling guide), with
# \r\n line ends, a keep-alive comment, argument fragments split mid-token and a usage
# chunk (stream_options.include_usage) before [DONE].
_CHUNK = '{"id":"chatcmpl-AbC","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_fc9f1d7035","choices":%s%s}'
_DELTAS = [
    '[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"content":"Checking "},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"content":"the weather."},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"loc"}}]},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ation\\":\\"Paris"}}]},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"notify","arguments":"{\\"to\\": \\"ops\\"}"}}]},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":", France\\"}"}}]},"logprobs":null,"finish_reason":null}]',
    '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]',
]
CAPTURED = (
    "\r\n".join(
        [": OPENROUTER PROCESSING", ""]
        + [line for d in _DELTAS for line in ("data: " + _CHUNK % (d, ',"usage":null'), "")]
        + ["data: " + _CHUNK % ("[]", ',"usage":{"prompt_tokens":71,"completion_tokens":30,"total_tokens":101}'), ""]
        + ["data: [DONE]", "", ""]
    )
).encode()


def test_parse_stream_reassembles_a_captured_stream() -> None:
    body = FMT.parse_stream(CAPTURED)
    assert body == {
        "id": "chatcmpl-AbC",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking the weather.",
                    "refusal": None,
                    "tool_calls": [
                        {"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris, France"}'}},
                        {"id": "call_2", "type": "function", "function": {"name": "notify", "arguments": '{"to": "ops"}'}},
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 71, "completion_tokens": 30, "total_tokens": 101},
    }
    ChatCompletion.model_validate(body)
    (message,) = FMT.parse_response(body)
    assert [p.text for p in message.parts] == ["Checking the weather.", "Paris, France", "ops"]


def test_parse_stream_returns_an_error_the_stream_turned_into() -> None:
    data = b'data: {"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}\n\n'
    assert FMT.parse_stream(data) == {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}


def test_parse_stream_rejects_data_that_is_not_json() -> None:
    with pytest.raises(BodyShapeError, match="stream event 0: data is not JSON"):
        FMT.parse_stream(b"data: {oops\n\n")


def test_render_then_parse_stream_round_trips() -> None:
    body = _completion()
    body["choices"][1]["message"].pop("refusal")  # absent and null read the same
    again = FMT.parse_stream(FMT.render_stream(body))
    assert FMT.parse_response(again) == FMT.parse_response(body)
    assert again["usage"] == body["usage"] and again["id"] == body["id"] and again["created"] == body["created"]
    assert [c["finish_reason"] for c in again["choices"]] == ["stop", "tool_calls"]
    ChatCompletion.model_validate(again)


def test_the_sdk_streaming_iterator_accepts_a_rendered_stream() -> None:
    body = _completion()
    client = _client(200, FMT.render_stream(body), "text/event-stream")
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == 0)
    assert text == "Let me look that up."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 99

    with _client(200, FMT.render_stream(body), "text/event-stream").chat.completions.stream(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Let me look that up."
    (call,) = final.choices[1].message.tool_calls or []
    assert call.function.arguments == body["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"]
    assert final.choices[1].finish_reason == "tool_calls"


def test_registry_finds_the_format_by_route() -> None:
    assert wire_format_for_path("/v1/chat/completions") is not None
    assert wire_format_for_path("/v1/chat/completions").name == "openai_chat"  # type: ignore[union-attr]
    assert wire_format_for_path("/v1/chat/completions?x=1").name == "openai_chat"  # type: ignore[union-attr]
    assert wire_format_for_path("/agents/executor/v1/chat/completions") is None  # the listener strips the prefix
    assert wire_format_for_path("/v1/completions") is None


def test_parse_request_inspects_custom_tool_call_input_as_it_is() -> None:
    body = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"id": "call_9", "type": "custom", "custom": {"name": "sql", "input": "DROP TABLE users;"}}],
            }
        ]
    }
    (message,) = FMT.parse_request(body).messages
    assert message.parts == (Part("DROP TABLE users;", ("messages", 0, "tool_calls", 0, "custom", "input"), PartKind.TOOL_ARGUMENTS),)
    assert message.tool_calls == (ToolCall("call_9", "sql", "DROP TABLE users;"),)
