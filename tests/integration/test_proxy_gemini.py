"""The proxy in front of the official google-genai SDK (generate_content and
generate_content_stream), against the fake upstream's Gemini routes on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from firewall.agents.keys import hash_key, new_key

if TYPE_CHECKING:
    from tests.conftest import RunningFirewall

AGENT_KEY = "AIza-agent-own-provider-key"  # not a firewall key: it passes through as it is
PROVIDER_KEY = "AIza-provider-key-held-by-the-firewall"
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"
MODEL = "gemini-2.0-flash"
ROUTE = f"/v1beta/models/{MODEL}:generateContent"

POLICY = """
    version: 1
    name: gemini
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
REFUSING = POLICY.replace("action: block", "action: block\n        respond: refusal")
ERRORING = POLICY.replace("action: block", "action: block\n        respond: error")


@pytest.fixture
def gemini_firewall(start_firewall: Callable[..., RunningFirewall], upstream_server: Any) -> Callable[..., RunningFirewall]:
    _, upstream = upstream_server

    def start(policy: str = POLICY, **config: Any) -> RunningFirewall:
        return start_firewall(policy, upstreams={"gemini": upstream.url}, **config)

    return start


def client(running: RunningFirewall, api_key: str = AGENT_KEY, *, api_version: str | None = "v1beta",
           agent: str | None = "tester") -> genai.Client:
    """A client to keep in a variable: the SDK closes its connections when the Client is collected."""
    headers = {"X-Agent-Id": agent} if agent else {}
    return genai.Client(api_key=api_key, http_options=types.HttpOptions(
        base_url=running.url, api_version=api_version, headers=headers))


def user(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


def stream_text(chunks: list[types.GenerateContentResponse]) -> str:
    return "".join(chunk.text or "" for chunk in chunks)


def post(running: RunningFirewall, body: Any, path: str = ROUTE, **headers: str) -> httpx.Response:
    """A raw REST call, as curl or a hand-written client makes it."""
    return httpx.post(running.url + path, content=orjson.dumps(body),
                      headers={"Content-Type": "application/json", "X-Agent-Id": "tester", **headers}, timeout=20)


# --- generateContent -------------------------------------------------------------------


def test_a_benign_request_reaches_gemini_unchanged_and_its_answer_comes_back(gemini_firewall, fake):
    fake.add_reply("Paris.")
    running = gemini_firewall()
    gemini = client(running)
    answer = gemini.models.generate_content(
        model=MODEL, contents="What is the capital of France?",
        config=types.GenerateContentConfig(system_instruction="Answer in one word.", temperature=0.2))

    assert answer.text == "Paris." and answer.candidates[0].finish_reason == types.FinishReason.STOP
    (received,) = fake.received
    assert (received.path, received.query) == (ROUTE, "")
    assert received.json["contents"] == [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]
    assert received.json["systemInstruction"]["parts"] == [{"text": "Answer in one word."}]
    assert received.headers["x-goog-api-key"] == AGENT_KEY and received.headers["x-agent-id"] == "tester"
    request_record, response_record = running.records()
    assert (request_record["route"], request_record["provider"], request_record["model"]) == (
        "gemini_generate_content", "gemini", MODEL)
    assert request_record["roles"] == ["system", "user"] and request_record["stream"] is False
    assert request_record["action"] == response_record["action"] == "allow"
    assert response_record["response"]["text"]["candidates.0.content.parts.0.text"] == "Paris."


def test_the_sdks_default_v1_route_is_inspected_too(gemini_firewall, fake):
    running = gemini_firewall()
    with pytest.raises(errors.ClientError) as blocked:
        gemini = client(running, api_version=None)
        gemini.models.generate_content(model=MODEL, contents=VIOLENT)
    assert blocked.value.code == 403
    assert fake.received == []
    fake.add_reply("fine")
    gemini = client(running, api_version=None)
    gemini.models.generate_content(model=MODEL, contents="hello")
    assert fake.received[0].path == f"/v1/models/{MODEL}:generateContent"


def test_a_blocked_request_never_reaches_gemini_and_the_sdk_raises_googles_error(gemini_firewall, fake):
    running = gemini_firewall()
    with pytest.raises(errors.ClientError) as blocked:
        gemini = client(running)
        gemini.models.generate_content(model=MODEL, contents=[user("Summarise the plan."), user(VIOLENT)])

    assert (blocked.value.code, blocked.value.status) == (403, "PERMISSION_DENIED")
    assert "rule no-violence" in blocked.value.message
    assert blocked.value.details["error"]["details"][0]["reason"] == "FIREWALL_BLOCKED"
    assert fake.received == []
    (record,) = running.records()
    assert record["action"] == "block" and record["blocking_rule"] == "no-violence"
    assert record["rules"][0]["spans"][0]["message"] == 1


def test_the_system_instruction_is_inspected(gemini_firewall, fake):
    running = gemini_firewall()
    with pytest.raises(errors.ClientError):
        gemini = client(running)
        gemini.models.generate_content(
            model=MODEL, contents="Go on.", config=types.GenerateContentConfig(system_instruction=f"Background: {VIOLENT}"))
    assert fake.received == []


def test_a_blocked_answer_raises_and_is_recorded(gemini_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = gemini_firewall()
    with pytest.raises(errors.ClientError) as blocked:
        gemini = client(running)
        gemini.models.generate_content(model=MODEL, contents="ideas?")
    assert blocked.value.code == 403 and "no-violence" in blocked.value.message
    assert len(fake.received) == 1
    _, response_record = running.records()
    assert response_record["direction"] == "response" and response_record["action"] == "block"


def test_a_refusal_is_an_answer_the_sdk_and_a_chat_go_on_with(gemini_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.", times=1)
    fake.add_reply("Let us talk about the weather instead.")
    running = gemini_firewall(REFUSING)
    gemini = client(running)
    chat = gemini.chats.create(model=MODEL)

    refused = chat.send_message("ideas?")
    assert refused.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert "no-violence" in refused.text and "murder" not in refused.text
    assert chat.send_message("something else then").text == "Let us talk about the weather instead."
    # The refusal stands in the history the chat sends next, in place of what was blocked.
    history = fake.received[-1].json["contents"]
    assert [turn["role"] for turn in history] == ["user", "model", "user"]
    assert "no-violence" in history[1]["parts"][0]["text"]


def test_a_secret_in_the_request_arrives_redacted(gemini_firewall, fake):
    running = gemini_firewall()
    gemini = client(running)
    gemini.models.generate_content(model=MODEL, contents=f"deploy with {SECRET} please")
    (received,) = fake.received
    assert SECRET not in received.body.decode()
    assert received.json["contents"][0]["parts"][0]["text"] == "deploy with [REDACTED:openai_key] please"
    assert int(received.headers["content-length"]) == len(received.body)
    assert running.records()[0]["action"] == "redact"
    assert SECRET not in running.audit_path.read_text()


def test_a_secret_in_the_answer_is_redacted(gemini_firewall, fake):
    fake.add_reply(f"Your key is {SECRET}.")
    running = gemini_firewall()
    gemini = client(running)
    answer = gemini.models.generate_content(model=MODEL, contents="key?")
    assert answer.text == "Your key is [REDACTED:openai_key]."


# --- function calls and function responses ---------------------------------------------


def call_history(arguments: dict[str, Any], result: dict[str, Any]) -> list[types.Content]:
    return [
        user("Send the deployment note."),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="send_email", args=arguments))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(name="send_email",
                                                                                            response=result))]),
    ]


def test_function_call_arguments_and_function_responses_in_the_history_are_redacted(gemini_firewall, fake):
    running = gemini_firewall()
    gemini = client(running)
    gemini.models.generate_content(model=MODEL, contents=call_history(
        {"to": "ops@example.com", "body": f"token {SECRET}", "retries": 3}, {"status": "sent", "echo": SECRET}))
    (received,) = fake.received
    turns = received.json["contents"]
    assert turns[1]["parts"][0]["functionCall"]["args"] == {
        "to": "ops@example.com", "body": "token [REDACTED:openai_key]", "retries": 3}
    assert turns[2]["parts"][0]["functionResponse"]["response"] == {"status": "sent", "echo": "[REDACTED:openai_key]"}
    request_record = running.records()[0]
    assert request_record["roles"] == ["user", "assistant", "tool"] and request_record["redacted_parts"] == 2


def test_a_function_response_carrying_violence_is_blocked(gemini_firewall, fake):
    running = gemini_firewall()
    with pytest.raises(errors.ClientError):
        gemini = client(running)
        gemini.models.generate_content(model=MODEL, contents=call_history(
            {"to": "ops@example.com"}, {"forum_post": VIOLENT}))
    assert fake.received == []
    assert running.records()[0]["rules"][0]["spans"][0]["message"] == 2


def test_a_function_call_the_model_makes_is_inspected(gemini_firewall, fake):
    fake.add_reply(tool="send_email", arguments={"to": "ops@example.com", "body": f"the key is {SECRET}"})
    running = gemini_firewall()
    gemini = client(running)
    answer = gemini.models.generate_content(model=MODEL, contents="mail it", config=types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="send_email", description="Sends mail.")])]))
    (call,) = answer.function_calls
    assert (call.name, call.args) == ("send_email", {"to": "ops@example.com", "body": "the key is [REDACTED:openai_key]"})
    assert running.records()[1]["response"]["tool_calls"][0]["name"] == "send_email"


def test_a_tool_the_agent_may_not_use_is_refused(gemini_firewall, fake):
    running = gemini_firewall(POLICY + "    agents:\n      tester: {match: {header: {X-Agent-Id: tester}}, tools: [lookup]}\n")
    with pytest.raises(errors.ClientError) as refused:
        gemini = client(running)
        gemini.models.generate_content(model=MODEL, contents=call_history({"to": "x"}, {"status": "sent"}))
    assert refused.value.code == 403 and "send_email" in refused.value.message
    assert refused.value.details["error"]["details"][0]["reason"] == "TOOL_NOT_ALLOWED"
    assert fake.received == []


def test_a_function_the_agent_may_not_use_is_refused_when_it_is_only_offered(gemini_firewall, fake):
    running = gemini_firewall(POLICY + "    agents:\n      tester: {match: {header: {X-Agent-Id: tester}}, tools: [lookup]}\n")
    gemini = client(running)
    offered = [types.Tool(function_declarations=[
        types.FunctionDeclaration(name="lookup", description="find an order"),
        types.FunctionDeclaration(name="send_email", description="send an email")])]
    with pytest.raises(errors.ClientError) as refused:
        gemini.models.generate_content(model=MODEL, contents=[user("where is order 12?")],
                                       config=types.GenerateContentConfig(tools=offered))
    assert refused.value.code == 403 and "send_email" in refused.value.message and "lookup," not in refused.value.message
    # The same request offering only the allowed function passes (snake_case body, as curl would send it).
    fake.add_reply("Order 12 is in Lyon.")
    answer = post(running, {"contents": [{"role": "user", "parts": [{"text": "where is order 12?"}]}],
                            "tools": [{"function_declarations": [{"name": "lookup"}]}]})
    assert answer.status_code == 200 and len(fake.received) == 1


# --- streamGenerateContent ---------------------------------------------------------------


def test_a_benign_stream_arrives_as_it_was_sent(gemini_firewall, fake):
    fake.add_reply("one two three four")
    running = gemini_firewall()
    gemini = client(running)
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="count"))
    assert stream_text(chunks) == "one two three four"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    (received,) = fake.received
    assert (received.path, received.query) == (f"/v1beta/models/{MODEL}:streamGenerateContent", "alt=sse")
    request_record, response_record = running.records(at_least=2)
    assert request_record["stream"] is True and response_record["stream"] is True
    assert response_record["action"] == "allow"


def test_a_violent_stream_is_cut_before_the_violence_and_ends_with_safety(gemini_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = gemini_firewall()
    gemini = client(running)
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="ideas?"))
    text = stream_text(chunks)
    assert "murder" not in text and text.startswith("Honestly,")
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.SAFETY
    assert running.records(at_least=2)[1]["action"] == "block"


def test_a_stream_blocked_with_respond_error_raises_in_the_sdk(gemini_firewall, fake):
    fake.add_reply(f"Honestly, {VIOLENT}.")
    running = gemini_firewall(ERRORING)
    received: list[types.GenerateContentResponse] = []
    with pytest.raises(errors.ClientError) as blocked:
        gemini = client(running)
        for chunk in gemini.models.generate_content_stream(model=MODEL, contents="ideas?"):
            received.append(chunk)
    assert blocked.value.code == 403 and "rule no-violence" in blocked.value.message
    assert "murder" not in stream_text(received)


def test_a_blocked_streamed_request_never_reaches_gemini(gemini_firewall, fake):
    running = gemini_firewall()
    with pytest.raises(errors.ClientError) as blocked:
        gemini = client(running)
        list(gemini.models.generate_content_stream(model=MODEL, contents=VIOLENT))
    assert blocked.value.code == 403
    assert fake.received == []


def test_a_refused_streamed_request_is_a_stream_the_sdk_reads(gemini_firewall, fake):
    running = gemini_firewall(REFUSING)
    gemini = client(running)
    (chunk,) = list(gemini.models.generate_content_stream(model=MODEL, contents=VIOLENT))
    assert chunk.candidates[0].finish_reason == types.FinishReason.SAFETY and "no-violence" in chunk.text
    assert fake.received == []


def test_a_secret_in_a_stream_is_redacted(gemini_firewall, fake):
    fake.add_reply(f"key: {SECRET} done")
    running = gemini_firewall()
    gemini = client(running)
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="key?"))
    assert stream_text(chunks) == "key: [REDACTED:openai_key] done"


def test_a_streamed_function_call_is_inspected_and_recorded(gemini_firewall, fake):
    fake.add_reply("Sending it.", tool="send_email", arguments={"to": "ops@example.com", "body": f"key {SECRET} now"})
    running = gemini_firewall()
    gemini = client(running)
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="mail it"))
    assert stream_text(chunks) == "Sending it."
    (call,) = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert call.args == {"to": "ops@example.com", "body": "key [REDACTED:openai_key] now"}
    (call_record,) = running.records(at_least=2)[1]["response"]["tool_calls"]
    assert (call_record["name"], call_record["channel"]) == ("send_email", ["candidates", 0, "functionCall", 0])


def test_a_secret_that_ends_a_streamed_function_argument_is_redacted(gemini_firewall, fake):
    fake.add_reply(tool="send_email", arguments={"body": f"key {SECRET}"})
    running = gemini_firewall()
    gemini = client(running)
    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents="mail it"))
    (call,) = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert call.args == {"body": "key [REDACTED:openai_key]"}


# --- keys --------------------------------------------------------------------------------


def keyed_policy(key: str) -> str:
    return POLICY + f'    agents:\n      planner: {{keys: ["{hash_key(key)}"]}}\n'


def test_an_agents_firewall_key_is_swapped_for_the_gemini_key_upstream(gemini_firewall, fake):
    key = new_key()
    running = gemini_firewall(keyed_policy(key), provider_keys={"gemini": PROVIDER_KEY})
    fake.add_reply("done", times=1)
    fake.add_reply("streamed")
    gemini = client(running, key, agent=None)
    assert gemini.models.generate_content(model=MODEL, contents="go").text == "done"
    gemini = client(running, key, agent=None)
    assert stream_text(list(gemini.models.generate_content_stream(model=MODEL, contents="go"))) \
        == "streamed"
    for received in fake.received:
        assert received.headers["x-goog-api-key"] == PROVIDER_KEY
        assert not any(key in value for value in received.headers.values()) and key not in received.query
    record = running.records()[0]
    assert (record["agent"], record["identified_by"]) == ("planner", "key")


def test_a_firewall_key_without_a_gemini_provider_key_is_refused(gemini_firewall, fake):
    key = new_key()
    running = gemini_firewall(keyed_policy(key), provider_keys={"openai": "sk-other-provider"})
    with pytest.raises(errors.ServerError) as refused:
        gemini = client(running, key, agent=None)
        gemini.models.generate_content(model=MODEL, contents="go")
    assert refused.value.code == 503 and "--provider-key gemini=" in refused.value.message
    assert fake.received == []


def test_an_unknown_firewall_key_is_refused(gemini_firewall, fake):
    running = gemini_firewall(keyed_policy(new_key()), provider_keys={"gemini": PROVIDER_KEY})
    with pytest.raises(errors.ClientError) as refused:
        gemini = client(running, new_key(), agent=None)
        gemini.models.generate_content(model=MODEL, contents="go")
    assert refused.value.code == 401
    assert fake.received == []


def test_a_firewall_key_in_the_query_string_is_refused_and_never_forwarded(gemini_firewall, fake):
    key = new_key()
    running = gemini_firewall(keyed_policy(key), provider_keys={"gemini": PROVIDER_KEY})
    answer = post(running, {"contents": [{"parts": [{"text": "hi"}]}]}, path=f"{ROUTE}?key={key}")
    assert answer.status_code == 400 and "query string" in answer.json()["error"]["message"]
    assert fake.received == []
    (record,) = running.records()
    assert record["event"] == "key_in_query"
    assert key not in running.audit_path.read_text()


# --- bodies the firewall cannot read -------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ({"contents": "hello"}, "contents: expected an array"),
    ({"prompt": "hello"}, "contents: expected an array (it is missing)"),
    ({"contents": [{"role": "system", "parts": [{"text": "hi"}]}]}, "contents[0].role: expected 'user' or 'model'"),
    ({"contents": [{"parts": [{"text": "a", "functionCall": {"name": "f", "args": "x"}}]}]},
     "contents[0].parts[0].functionCall.args: expected an object"),
    ({"systemInstruction": {"parts": [{"text": "a"}]}, "system_instruction": {"parts": [{"text": "b"}]},
      "contents": []}, "both systemInstruction and system_instruction"),
])
def test_a_body_the_firewall_cannot_read_is_refused_in_googles_shape(gemini_firewall, fake, body, message):
    running = gemini_firewall()
    answer = post(running, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT") and message in error["message"]
    assert fake.received == []
    assert running.records()[0]["event"] == "bad_body_shape"


def test_snake_case_fields_are_read_as_the_upstream_reads_them(gemini_firewall, fake):
    running = gemini_firewall()
    blocked = post(running, {"system_instruction": {"parts": [{"text": VIOLENT}]}, "contents": [{"parts": [{"text": "go"}]}]})
    assert blocked.status_code == 403 and blocked.json()["error"]["status"] == "PERMISSION_DENIED"
    assert post(running, {"contents": [{"role": "model", "parts": [{"function_call": {
        "name": "f", "args": {"note": SECRET}}}]}, {"parts": [{"text": "go on"}]}]}).status_code == 200
    (received,) = fake.received
    assert received.json["contents"][0]["parts"][0]["function_call"]["args"] == {"note": "[REDACTED:openai_key]"}
