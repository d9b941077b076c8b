"""The Gemini wire format: routes, bodies, streams, and what the google-genai SDK makes
of every answer the firewall writes (fed to the SDK through an httpx transport)."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from firewall.agents.keys import presented_key
from firewall.model import Message, Part, PartKind, Rewrite, ToolCall
from firewall.protocols import WIRE_FORMATS, BodyShapeError, GeminiGenerateContent, wire_format_for_path
from firewall.protocols._paths import set_at
from firewall.protocols._sse import SSEDecoder
from firewall.protocols.base import StreamEvent
from firewall.protocols.gemini import GeminiStreamReader

FMT = GeminiGenerateContent("gemini-2.0-flash")
TEXT, ARGS, RESULT = PartKind.TEXT, PartKind.TOOL_ARGUMENTS, PartKind.TOOL_RESULT


def sdk(content: bytes, *, status: int = 200, content_type: str = "text/event-stream") -> genai.Client:
    """The SDK, answered with `content` whatever it asks."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"content-type": content_type})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url="http://upstream.test",
                                                                         httpx_client=http))


def stream(content: bytes) -> list[types.GenerateContentResponse]:
    client = sdk(content)
    return list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"))


def generate(content: bytes, *, status: int = 200) -> types.GenerateContentResponse:
    client = sdk(content, status=status, content_type="application/json")
    return client.models.generate_content(model="gemini-2.0-flash", contents="hi")


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


def decode(data: bytes) -> list[StreamEvent]:
    decoder = SSEDecoder()
    return decoder.feed(data) + decoder.close()


# --- routes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "model", "streams"), [
    ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash", False),
    ("/v1/models/gemini-2.5-pro-preview-05-06:streamGenerateContent", "gemini-2.5-pro-preview-05-06", True),
    ("/v1alpha/models/gemini-exp-1206:generateContent", "gemini-exp-1206", False),
    ("/v1beta/tunedModels/my-tuned-7:streamGenerateContent", "tunedModels/my-tuned-7", True),
])
def test_for_route_binds_the_model_and_the_stream_flag(route: str, model: str, streams: bool) -> None:
    bound = GeminiGenerateContent().for_route(route)
    assert bound is not None and (bound.model, bound.stream) == (model, streams)
    parsed = bound.parse_request({"contents": [], "stream": not streams, "model": "other"})
    assert (parsed.model, parsed.stream) == (model, streams)  # the route says, not the body


@pytest.mark.parametrize("route", [
    "/v1beta/models/gemini-2.0-flash:countTokens",
    "/v1beta/models/gemini-2.0-flash:generateContentX",
    "/v1beta/models/a/b:generateContent",
    "/v1beta/models/:generateContent",
    "/v2/models/gemini-2.0-flash:generateContent",
    "/proxy/v1beta/models/gemini-2.0-flash:generateContent",
    "/v1beta/cachedContents/c1:generateContent",
])
def test_routes_that_are_not_generate_content_are_not_its_own(route: str) -> None:
    assert GeminiGenerateContent().for_route(route) is None
    assert wire_format_for_path(route) is None


def test_the_registry_finds_it_with_the_sdks_query_string() -> None:
    found = wire_format_for_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
    assert isinstance(found, GeminiGenerateContent) and found.stream and found.provider == "gemini"
    assert any(isinstance(fmt, GeminiGenerateContent) for fmt in WIRE_FORMATS)


def test_an_agents_firewall_key_is_found_in_x_goog_api_key() -> None:
    assert presented_key({"x-goog-api-key": " afw_abc "}) == "afw_abc"
    assert presented_key({"x-goog-api-key": "AIza-provider"}) is None


# --- requests --------------------------------------------------------------------------


def request_body() -> dict[str, Any]:
    """Every part kind, in the shapes the SDK sends (camelCase)."""
    return {
        "systemInstruction": {"role": "user", "parts": [{"text": "You are the executor."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather in Paris? key sk-SECRET"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "https://files.test/1"}},
            ]},
            {"role": "model", "parts": [
                {"text": "They want weather.", "thought": True, "thoughtSignature": "EqQB"},
                {"functionCall": {"id": "call-1", "name": "get_weather",
                                  "args": {"location": "Paris", "auth": {"keys": ["sk-SECRET", 7]}, "days": 3}}},
                {"executableCode": {"language": "PYTHON", "code": "print(1 + 1)"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "2\n"}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "call-1", "name": "get_weather", "response": {"forecast": "15 degrees"}}},
            ]},
            {"role": "model", "parts": [
                {"toolCall": {"id": "t1", "toolType": "GOOGLE_SEARCH", "args": {"query": "paris weather"}}},
                {"toolResponse": {"id": "t1", "toolType": "GOOGLE_SEARCH", "response": {"top": "Sunny in Paris"}}},
            ]},
            {"parts": [{"text": "Thanks, now summarise."}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather."}]}],
        "generationConfig": {"temperature": 0.2},
    }


def test_parse_request_reads_every_text_with_its_path_kind_and_role() -> None:
    parsed = FMT.parse_request(request_body())
    assert parsed.model == "gemini-2.0-flash" and parsed.stream is False
    system, ask, thinking, answer, search, thanks = parsed.messages
    assert system == Message("system", (Part("You are the executor.", ("systemInstruction", "parts", 0, "text")),))
    assert ask == Message("user", (Part("Weather in Paris? key sk-SECRET", ("contents", 0, "parts", 0, "text")),))
    call = ("contents", 1, "parts", 1, "functionCall", "args")
    assert thinking == Message("assistant", (
        Part("They want weather.", ("contents", 1, "parts", 0, "text")),
        Part("Paris", (*call, "location"), ARGS),
        Part("sk-SECRET", (*call, "auth", "keys", 0), ARGS),
        Part("print(1 + 1)", ("contents", 1, "parts", 2, "executableCode", "code"), ARGS),
        Part("2\n", ("contents", 1, "parts", 3, "codeExecutionResult", "output"), RESULT),
    ), tool_calls=(ToolCall("call-1", "get_weather", {"location": "Paris", "auth": {"keys": ["sk-SECRET", 7]}, "days": 3}),))
    # A user turn made only of function responses is a tool turn.
    assert answer == Message("tool", (Part("15 degrees", ("contents", 2, "parts", 0, "functionResponse", "response",
                                                            "forecast"), RESULT),), tool_call_id="call-1", name="get_weather")
    assert [(p.text, p.kind) for p in search.parts] == [("paris weather", ARGS), ("Sunny in Paris", RESULT)]
    assert search.tool_calls == ()  # server-side tools are Google's own, not the agent's
    assert thanks == Message("user", (Part("Thanks, now summarise.", ("contents", 4, "parts", 0, "text")),))


def test_a_user_turn_with_text_beside_its_function_responses_stays_user() -> None:
    (message,) = FMT.parse_request({"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": "a", "response": {"x": "one"}}},
        {"functionResponse": {"name": "b", "response": {"x": "two"}}},
        {"text": "and what now?"}]}]}).messages
    assert message.role == "user" and message.tool_call_id is None and message.name is None
    assert [p.kind for p in message.parts] == [RESULT, RESULT, TEXT]


def test_redacting_leaves_writes_them_back_at_their_place() -> None:
    body = request_body()
    before = copy.deepcopy(body)
    parts = [part for message in FMT.parse_request(body).messages for part in message.parts if "sk-SECRET" in part.text]
    assert len(parts) == 2
    rewritten = FMT.apply_rewrites(body, tuple(Rewrite(p.path, p.text.replace("sk-SECRET", "[REDACTED]")) for p in parts))
    assert rewritten["contents"][0]["parts"][0]["text"] == "Weather in Paris? key [REDACTED]"
    assert rewritten["contents"][1]["parts"][1]["functionCall"]["args"]["auth"] == {"keys": ["[REDACTED]", 7]}
    assert body == before  # the original is not changed


def test_proto_field_names_are_read_and_written_where_they_are() -> None:
    body = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "model", "parts": [
            {"function_call": {"name": "send", "args": {"note": "sk-SECRET"}}},
            {"executable_code": {"code": "rm -rf /"}},
        ]}, {"role": "user", "parts": [{"function_response": {"name": "send", "response": {"ok": "yes"}}}]}],
    }
    system, model, tool = FMT.parse_request(body).messages
    assert system.parts == (Part("Be brief.", ("system_instruction", "parts", 0, "text")),)
    assert [p.path for p in model.parts] == [("contents", 0, "parts", 0, "function_call", "args", "note"),
                                            ("contents", 0, "parts", 1, "executable_code", "code")]
    assert model.tool_calls == (ToolCall("", "send", {"note": "sk-SECRET"}),) and tool.role == "tool"
    rewritten = FMT.apply_rewrites(body, (Rewrite(model.parts[0].path, "[REDACTED]"),))
    assert rewritten["contents"][0]["parts"][0]["function_call"]["args"] == {"note": "[REDACTED]"}


@pytest.mark.parametrize(("body", "message"), [
    ([], r"^<root>: expected an object$"),
    ({}, r"^contents: expected an array \(it is missing\)$"),
    ({"contents": {"parts": []}}, r"^contents: expected an array$"),
    ({"contents": ["hi"]}, r"^contents\[0\]: expected an object$"),
    ({"contents": [{"role": "system", "parts": []}]}, r"^contents\[0\]\.role: expected 'user' or 'model', not 'system'$"),
    ({"contents": [{"role": 1, "parts": []}]}, r"^contents\[0\]\.role: expected a string$"),
    ({"contents": [{"parts": {"text": "hi"}}]}, r"^contents\[0\]\.parts: expected an array$"),
    ({"contents": [{"parts": [{"text": 5}]}]}, r"^contents\[0\]\.parts\[0\]\.text: expected a string$"),
    ({"contents": [{"parts": [{"functionCall": {"args": {}}}]}]},
     r"^contents\[0\]\.parts\[0\]\.functionCall\.name: expected a string$"),
    ({"contents": [{"parts": [{"functionCall": {"name": "f", "args": ["x"]}}]}]},
     r"^contents\[0\]\.parts\[0\]\.functionCall\.args: expected an object$"),
    ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": "done"}}]}]},
     r"^contents\[0\]\.parts\[0\]\.functionResponse\.response: expected an object$"),
    ({"contents": [{"parts": [{"executableCode": {"code": ["x"]}}]}]},
     r"^contents\[0\]\.parts\[0\]\.executableCode\.code: expected a string$"),
    ({"contents": [], "systemInstruction": "be nice"}, r"^systemInstruction: expected an object$"),
    ({"contents": [{"parts": [{"functionCall": {"name": "f"}, "function_call": {"name": "g"}}]}]},
     r"^contents\[0\]\.parts\[0\]: both functionCall and function_call are set"),
    ({"contents": [], "systemInstruction": {}, "system_instruction": {}},
     r"^<root>: both systemInstruction and system_instruction are set"),
])
def test_parse_request_rejects_a_wrong_shape_precisely(body: Any, message: str) -> None:
    with pytest.raises(BodyShapeError, match=message):
        FMT.parse_request(body)


# --- responses -------------------------------------------------------------------------


def test_parse_response_gives_one_assistant_message_per_candidate() -> None:
    body = {"candidates": [
        {"content": {"role": "model", "parts": [{"text": "Paris."}, {"functionCall": {"name": "f", "args": {"a": "b"}}}]},
         "finishReason": "STOP", "index": 0},
        {"finishReason": "SAFETY", "index": 1},  # stopped before any content
    ], "usageMetadata": {"totalTokenCount": 3}}
    first, second = FMT.parse_response(body)
    assert first.role == "assistant" and [p.path for p in first.parts] == [
        ("candidates", 0, "content", "parts", 0, "text"), ("candidates", 0, "content", "parts", 1, "functionCall", "args", "a")]
    assert first.tool_calls == (ToolCall("", "f", {"a": "b"}),)
    assert second == Message("assistant")


def test_a_blocked_prompt_has_no_candidates_and_nothing_to_read() -> None:
    assert FMT.parse_response({"promptFeedback": {"blockReason": "SAFETY"}}) == ()


def test_the_json_array_of_a_stream_without_alt_sse_is_read_chunk_by_chunk() -> None:
    body = [{"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}, {"candidates": [{"content": {"parts": [{"text": "lo"}]}}]}]
    first, second = FMT.parse_response(body)
    assert second.parts == (Part("lo", (1, "candidates", 0, "content", "parts", 0, "text")),)
    assert FMT.apply_rewrites(body, (Rewrite(second.parts[0].path, "LO"),))[1]["candidates"][0]["content"]["parts"][0] == {
        "text": "LO"}


def test_parse_response_rejects_a_wrong_shape() -> None:
    with pytest.raises(BodyShapeError, match=r"^candidates\[0\]\.content\.parts: expected an array$"):
        FMT.parse_response({"candidates": [{"content": {"parts": "x"}}]})


def test_the_sdk_reads_a_refusal_as_an_answer_stopped_for_safety() -> None:
    refusal = FMT.refusal_body("This message was blocked by agent-firewall (rule r).", model=None)
    answer = generate(orjson.dumps(refusal))
    assert answer.text == "This message was blocked by agent-firewall (rule r)."
    assert answer.candidates[0].finish_reason == types.FinishReason.SAFETY and answer.model_version == "gemini-2.0-flash"


@pytest.mark.parametrize(("status", "name"), [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                              (403, "PERMISSION_DENIED"), (404, "NOT_FOUND"), (413, "INVALID_ARGUMENT"),
                                              (429, "RESOURCE_EXHAUSTED"), (418, "INVALID_ARGUMENT"), (500, "INTERNAL"),
                                              (502, "UNAVAILABLE"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")])
def test_error_bodies_carry_googles_status_names(status: int, name: str) -> None:
    assert FMT.error_body(status, "why") == {"error": {"code": status, "message": "why", "status": name}}


def test_the_sdk_raises_the_error_body_with_its_reason() -> None:
    body = FMT.error_body(403, "blocked by agent-firewall: rule r", code="firewall_blocked")
    with pytest.raises(errors.ClientError) as raised:
        generate(orjson.dumps(body), status=403)
    assert (raised.value.code, raised.value.status, raised.value.message) == (
        403, "PERMISSION_DENIED", "blocked by agent-firewall: rule r")
    assert raised.value.details["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FIREWALL_BLOCKED", "domain": "agent-firewall"}]


# --- streams ---------------------------------------------------------------------------

# Two candidates (candidateCount 2; proto3 JSON leaves out the first one's zero index),
# a thought, text split mid-word, a function call arriving whole, usage at the end.
CHUNKS: list[dict[str, Any]] = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "The user asks", "thought": True}]}}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "The capi"}]}},
                    {"content": {"role": "model", "parts": [{"text": "Paris"}]}, "index": 1}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "tal is Paris."}]}, "index": 0}]},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "c1", "name": "notify", "args": {"to": "ops", "body": {"lines": ["a", "b"]}}}}]},
        "index": 0}]},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0},
                    {"finishReason": "STOP", "index": 1}],
     "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 9, "totalTokenCount": 13},
     "modelVersion": "gemini-2.0-flash-001", "responseId": "resp-1"},
]
WIRE = b"".join(sse(chunk) for chunk in CHUNKS)


def test_parse_stream_reassembles_the_candidates() -> None:
    body = FMT.parse_stream(WIRE)
    first, second = body["candidates"]
    assert first["content"] == {"role": "model", "parts": [
        {"text": "The user asks", "thought": True},
        {"text": "The capital is Paris."},
        {"functionCall": {"id": "c1", "name": "notify", "args": {"to": "ops", "body": {"lines": ["a", "b"]}}}},
        {"text": ""},
    ]}
    assert first["finishReason"] == second["finishReason"] == "STOP" and second["content"]["parts"] == [{"text": "Paris"}]
    assert body["usageMetadata"]["totalTokenCount"] == 13 and body["modelVersion"] == "gemini-2.0-flash-001"
    assert [m.text for m in FMT.parse_response(body)] == ["The user asks\nThe capital is Paris.\nops\na\nb", "Paris"]


def test_parse_stream_returns_the_error_a_stream_turned_into() -> None:
    error = {"error": {"code": 500, "message": "overloaded", "status": "INTERNAL"}}
    assert FMT.parse_stream(sse(CHUNKS[1]) + sse(error)) == error


@pytest.mark.parametrize(("data", "message"), [
    (b"data: {not json\r\n\r\n", r"^stream event 0: data is not JSON"),
    (b"data: [1, 2]\r\n\r\n", r"^stream event 0: expected a JSON object$"),
    (sse({"candidates": [{"index": "0"}]}), r"^stream event 0\.candidates\[0\]\.index: expected a non-negative integer$"),
])
def test_parse_stream_rejects_a_broken_stream(data: bytes, message: str) -> None:
    with pytest.raises(BodyShapeError, match=message):
        FMT.parse_stream(data)


def test_the_sdk_reads_a_rendered_stream_as_it_read_the_original() -> None:
    original = stream(WIRE)
    rendered = stream(FMT.render_stream(FMT.parse_stream(WIRE)))
    text = "".join(chunk.text or "" for chunk in original)
    assert text == "".join(chunk.text or "" for chunk in rendered) == "The capital is Paris."
    assert [call.name for chunk in rendered for call in chunk.function_calls or ()] == ["notify"]


def test_stream_deltas_name_channels_by_candidate_index_and_paths_by_position() -> None:
    reader = FMT.stream_reader()
    deltas = [reader.deltas(event) for event in decode(WIRE)]
    assert [(d.channel, d.text, d.path) for d in deltas[1]] == [
        (("candidates", 0, "text"), "The capi", ("candidates", 0, "content", "parts", 0, "text")),
        (("candidates", 1, "text"), "Paris", ("candidates", 1, "content", "parts", 0, "text")),
    ]
    assert [(d.channel, d.kind) for d in deltas[0]] == [(("candidates", 0, "thought"), TEXT)]
    call = ("candidates", 0, "content", "parts", 0, "functionCall", "args")
    assert [(d.channel, d.kind, d.text, d.path) for d in deltas[3]] == [
        (("candidates", 0, "functionCall", 0, "args", "to"), ARGS, "ops", (*call, "to")),
        (("candidates", 0, "functionCall", 0, "args", "body", "lines", 0), ARGS, "a", (*call, "body", "lines", 0)),
        (("candidates", 0, "functionCall", 0, "args", "body", "lines", 1), ARGS, "b", (*call, "body", "lines", 1)),
    ]
    assert deltas[4] == []  # an empty text adds nothing
    assert reader.tool_calls() == [{"channel": ("candidates", 0, "functionCall", 0), "id": "c1", "name": "notify"}]


def test_a_second_call_of_a_candidate_is_a_channel_of_its_own_even_without_text() -> None:
    reader = FMT.stream_reader()
    chunk = {"candidates": [{"content": {"parts": [{"function_call": {"name": "ping"}},
                                                   {"functionCall": {"name": "send", "args": {"to": "x"}}}]}}]}
    (event,) = decode(sse(chunk))
    assert [d.channel for d in reader.deltas(event)] == [("candidates", 0, "functionCall", 1, "args", "to")]
    assert [(c["channel"], c["name"]) for c in reader.tool_calls()] == [
        (("candidates", 0, "functionCall", 0), "ping"), (("candidates", 0, "functionCall", 1), "send")]


@pytest.mark.parametrize(("data", "message"), [
    # What the SDK would still read, and so what the firewall must not let pass unread:
    (b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"hi\"}]}}], \"x\": NaN}\r\n\r\n",
     r"^stream event: data is not a JSON object$"),
    (b'data: ["a"]\r\n\r\n', r"^stream event: data is not a JSON object$"),
    (b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}\r\n\r\n', r"a line that is no SSE field"),
    (sse({"candidates": {"content": {}}}), r"^stream event: candidates: expected an array$"),
    (sse({"candidates": [{"index": True}]}), r"^stream event: candidates\[0\]\.index: expected a non-negative integer$"),
    (sse({"candidates": [{"content": {"parts": {"text": "x"}}}]}),
     r"^stream event: candidates\[0\]\.content\.parts: expected an array$"),
    (sse({"candidates": [{"content": {"parts": [{"text": ["x"]}]}}]}),
     r"^stream event: candidates\[0\]\.content\.parts\[0\]\.text: expected a string$"),
    (sse({"candidates": [{"content": {"parts": [{"text": "a", "text_": 1}, {"functionCall": {"name": "f", "args": "x"}}]}}]}),
     r"^stream event: candidates\[0\]\.content\.parts\[1\]\.functionCall\.args: expected an object$"),
])
def test_a_stream_the_reader_cannot_attribute_is_an_error_not_a_pass(data: bytes, message: str) -> None:
    (event,) = decode(data)
    with pytest.raises(BodyShapeError, match=message):
        GeminiStreamReader().deltas(event)


def test_comments_and_keep_alives_carry_nothing() -> None:
    assert [GeminiStreamReader().deltas(e) for e in decode(b": keep-alive\r\n\r\n")] == [[]]


def prefix(n: int) -> tuple[GeminiStreamReader, bytes]:
    """A reader that has read the first n chunks, and those chunks' bytes."""
    reader = FMT.stream_reader()
    data = b"".join(sse(chunk) for chunk in CHUNKS[:n])
    for event in decode(data):
        reader.deltas(event)
    return reader, data


@pytest.mark.parametrize("respond", [None, "refusal"])
def test_a_refusal_block_ends_every_candidate_with_safety(respond: str | None) -> None:
    reader, data = prefix(3)
    chunks = stream(data + reader.blocked("blocked by agent-firewall: rule r", respond))
    last = chunks[-1]
    assert [(c.index, c.finish_reason) for c in last.candidates] == [
        (0, types.FinishReason.SAFETY), (1, types.FinishReason.SAFETY)]
    assert last.text is None and "".join(chunk.text or "" for chunk in chunks) == "The capital is Paris."


def test_a_block_before_any_chunk_still_ends_the_stream() -> None:
    (chunk,) = stream(FMT.stream_reader().blocked("blocked", None))
    assert chunk.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert chunk.model_version == "gemini-2.0-flash" and chunk.response_id.startswith("fw-")


def test_an_error_block_raises_in_the_sdk_after_what_was_released() -> None:
    reader, data = prefix(3)
    received: list[types.GenerateContentResponse] = []
    with pytest.raises(errors.ClientError) as raised:
        for chunk in stream(data + reader.blocked("blocked by agent-firewall: rule violent", "error")):
            received.append(chunk)
    assert (raised.value.code, raised.value.status) == (403, "PERMISSION_DENIED")
    assert "rule violent" in raised.value.message
    assert raised.value.details["error"]["details"][0]["reason"] == "FIREWALL_BLOCKED"


def test_an_upstream_that_broke_off_raises_a_server_error() -> None:
    reader, data = prefix(2)
    with pytest.raises(errors.ServerError) as raised:
        stream(data + reader.failed("the gemini upstream broke off the stream"))
    assert raised.value.code == 502 and "broke off" in raised.value.message


def test_blocked_rejects_an_unknown_respond() -> None:
    with pytest.raises(ValueError, match="respond must be"):
        FMT.stream_reader().blocked("x", "silently")


def test_rewritten_deltas_are_what_the_sdk_reads() -> None:
    reader = FMT.stream_reader()
    out = []
    for n, event in enumerate(decode(WIRE)):
        deltas = reader.deltas(event)
        data = event.json
        if n == 2:
            data = set_at(data, deltas[0].path, "tal is [REDACTED].")
        if n == 3:
            data = set_at(data, deltas[0].path, "[REDACTED]")
        out.append(reader.render(event, data) if data is not event.json else event.raw)
    chunks = stream(b"".join(out))
    assert "".join(chunk.text or "" for chunk in chunks) == "The capital is [REDACTED]."
    (call,) = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert call.args == {"to": "[REDACTED]", "body": {"lines": ["a", "b"]}}


def test_an_inline_text_file_is_read_as_text_and_a_redaction_goes_back_in_base64() -> None:
    import base64

    from firewall.model import EMBEDDED_TEXT

    wire = GeminiGenerateContent("gemini-2.5-flash")
    note = base64.b64encode(b"the key is sk-live-123").decode()
    body = {"contents": [{"role": "user", "parts": [
        {"text": "Summarise the attachment."},
        {"inlineData": {"mimeType": "text/markdown", "data": note}},
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}},
    ]}]}
    (message,) = wire.parse_request(body).messages
    path = ("contents", 0, "parts", 1, "inlineData", "data", EMBEDDED_TEXT)
    assert [(part.text, part.path) for part in message.parts][1:] == [("the key is sk-live-123", path)]
    rewritten = wire.apply_rewrites(body, (Rewrite(path, "the key is [REDACTED]"),))
    assert base64.b64decode(rewritten["contents"][0]["parts"][1]["inlineData"]["data"]).decode() == "the key is [REDACTED]"
    body["contents"][0]["parts"][1]["inlineData"]["data"] = base64.b64encode(b"\xff\xfe").decode()
    with pytest.raises(BodyShapeError, match=r"inlineData\.data: expected base64 of UTF-8 text"):
        wire.parse_request(body)
