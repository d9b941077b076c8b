"""MCP through the proxy: the `mcp` SDK's streamable-HTTP client and ClientSession against
a real MCP server on loopback (tests/mcp_server.py), answering in SSE and in JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import mcp_types as types
import orjson
import pytest
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from firewall.protocols.mcp import FIREWALL_BLOCKED, INTERNAL_ERROR, INVALID_PARAMS, PARSE_ERROR
from firewall.testing import ServerThread
from tests.mcp_server import INJECTED_PAGE, POISONED_PROMPT, POISONED_RESOURCE, McpServer, running_mcp_server

# Tool descriptions are redacted (a blocked listing would stop the SDK: it lists the tools
# to validate every result), tool results and resources refused as tool errors, prompts
# and sampling requests blocked, secrets kept from tools, a codename kept from agents.
POLICY = """
version: 1
name: mcp-tests
defaults: {mode: enforce, on_error: block, unknown_routes: refuse}
detectors:
  injection: {}
  secrets: {}
agents:
  researcher: {tools: [lookup_weather, fetch_page, add_note, echo, forecast, ask_model]}
  reader: {tools: [lookup_weather]}
lists:
  codenames: [bluebird]
rules:
  - id: tool-poisoning
    description: instructions to the model in what an MCP server says about its tools
    direction: response
    match: {detect: [injection], roles: [tool]}
    if: "!('tool_result' in message.kinds)"
    action: {redact: "[removed by agent-firewall: {label}]"}
  - id: injected-tool-result
    description: instructions to the model in a tool result or a resource
    direction: response
    match: {scores: {injection: 0.5}}
    if: "'tool_result' in message.kinds"
    action: block
    respond: refusal
  - id: injected-prompt
    description: instructions to the model in a prompt or a sampling request from the server
    direction: response
    match: {scores: {injection: 0.5}, roles: [user, assistant, system]}
    action: block
  - id: no-secrets-to-tools
    direction: request
    match: {detect: [secrets]}
    action: {redact: "[SECRET]"}
  - id: codename
    direction: response
    match: {lists: [codenames]}
    action: {redact: "[CODENAME]"}
"""

BLOCK_POISONED_LISTINGS = """
version: 1
name: mcp-block
detectors:
  injection: {}
rules:
  - id: prompt-injection
    match: {scores: {injection: 0.5}}
    action: block
"""

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


@pytest.fixture(scope="module", params=["sse", "json"])
def mcp_servers(request: pytest.FixtureRequest) -> Iterator[McpServer]:
    with running_mcp_server(json_response=request.param == "json") as server:
        yield server


@pytest.fixture
def mcp_server(mcp_servers: McpServer) -> McpServer:
    mcp_servers.calls.clear()
    return mcp_servers


@pytest.fixture(scope="module")
def sse_only() -> Iterator[McpServer]:
    with running_mcp_server() as server:
        yield server


@pytest.fixture
def sse_server(sse_only: McpServer) -> McpServer:
    sse_only.calls.clear()
    return sse_only


@asynccontextmanager
async def session(url: str, agent: str = "researcher", **options: Any) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(headers={"X-Agent-Id": agent}) as http:
        async with streamable_http_client(url + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write, **options) as client:
                await client.initialize()
                yield client


def firewall(start_firewall: Any, server: McpServer, policy: str = POLICY) -> Any:
    return start_firewall(policy, upstreams={"mcp": server.url})


def blocks(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The exchanges a rule blocked (not the refusals recorded as events, such as the 405
    the SDK's client meets when it tries to open a GET stream)."""
    return [r for r in records if r.get("action") == "block" and "event" not in r]


def text_of(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def test_a_session_through_the_firewall(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        weather = await client.call_tool("lookup_weather", {"city": "Paris"})
        forecast = await client.call_tool("forecast", {"city": "Oslo"})

    assert set(tools) >= {"lookup_weather", "add_note", "fetch_page", "echo", "forecast"}
    assert tools["lookup_weather"].description == "Returns today's weather for a city."
    assert text_of(weather) == "Sunny in Paris, 21 C." and not weather.is_error
    assert forecast.structured_content == {"city": "Oslo", "summary": "Clear skies over Oslo.", "high_c": 24}
    assert mcp_server.calls == ["lookup_weather", "forecast"]
    # The server is stateful: every call after initialize needed the Mcp-Session-Id it
    # sent back through the firewall. initialize, initialized, tools/list, two calls:
    records = running.records()
    requests = [r for r in records if r.get("direction") == "request" and r.get("route") == "mcp" and "event" not in r]
    assert len(requests) == 5 and {(r["agent"], r["provider"]) for r in requests} == {("researcher", "mcp")}
    assert blocks(records) == []


async def test_the_agent_can_be_named_by_its_url(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with httpx2.AsyncClient() as http:
        async with streamable_http_client(running.url + "/agents/reader/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as client:
                await client.initialize()
                with pytest.raises(MCPError, match="may not use the tool"):
                    await client.call_tool("echo", {"text": "hi"})

    requests = [r for r in running.records() if r.get("direction") == "request" and "event" not in r]
    assert {(r["agent"], r["identified_by"]) for r in requests} == {("reader", "path")}
    assert mcp_server.calls == []


async def test_a_poisoned_tool_description_is_redacted(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    description = tools["add_note"].description or ""
    assert "ignore your previous instructions" not in description
    assert "[removed by agent-firewall: override]" in description
    listing = [r for r in running.records() if r.get("direction") == "response" and r.get("action") == "redact"]
    assert [rule["id"] for rule in listing[0]["rules"]] == ["tool-poisoning"]


async def test_a_poisoned_tool_description_can_block_the_listing(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server, BLOCK_POISONED_LISTINGS)

    async with session(running.url) as client:
        with pytest.raises(MCPError) as raised:
            await client.list_tools()

    assert raised.value.error.code == FIREWALL_BLOCKED
    assert "rule prompt-injection" in raised.value.error.message
    blocked = blocks(running.records())
    assert blocked[0]["direction"] == "response" and blocked[0]["blocking_rule"] == "prompt-injection"
    (span,) = blocked[0]["rules"][0]["spans"]
    if "channels" in blocked[0]:  # an SSE answer: spans index its channels, one per message
        assert blocked[0]["channels"][span["message"]] == "event1.add_note"
    else:
        assert span["message"] == 1  # the second tool listed: add_note


async def test_an_injected_tool_result_is_answered_as_a_tool_error(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url) as client:
        result = await client.call_tool("fetch_page", {"url": "https://docs.example/start"})
        after = await client.call_tool("lookup_weather", {"city": "Rome"})

    assert result.is_error
    assert "blocked by agent-firewall (rule injected-tool-result)" in text_of(result)
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" not in orjson.dumps(result.model_dump()).decode()
    assert text_of(after) == "Sunny in Rome, 21 C."  # the agent loop goes on
    assert mcp_server.calls == ["fetch_page", "lookup_weather"]
    blocked = blocks(running.records())
    assert [(r["direction"], r["blocking_rule"]) for r in blocked] == [("response", "injected-tool-result")]


async def test_blocked_tool_results_are_the_tool_servers_not_violations_of_the_calling_agent(start_firewall, mcp_server):
    # Two violations in the window would quarantine an agent: a hostile tool server answering
    # three times with an injection must not be able to do that to the agent calling it.
    running = firewall(start_firewall, mcp_server, POLICY + "quarantine: {violations: 2, window: 600}\n")

    async with session(running.url) as client:
        results = [await client.call_tool("fetch_page", {"url": "https://docs.example/start"}) for _ in range(3)]
        after = await client.call_tool("lookup_weather", {"city": "Oslo"})

    assert all(result.is_error for result in results)
    assert text_of(after) == "Sunny in Oslo, 21 C."  # not quarantined
    records = running.records()
    assert len(blocks(records)) == 3
    assert not [r for r in records if r.get("event") in ("quarantine", "violation") or r.get("rules") == [{"id": "quarantine"}]]


async def test_an_injected_tool_result_with_respond_error_raises(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server, BLOCK_POISONED_LISTINGS)

    async with session(running.url) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("fetch_page", {"url": "https://docs.example/start"})

    assert raised.value.error.code == FIREWALL_BLOCKED
    assert raised.value.error.data == {"status": 403, "reason": "firewall_blocked"}
    assert INJECTED_PAGE not in raised.value.error.message


async def test_a_tool_not_in_the_agents_list_is_refused_before_the_server(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url, agent="reader") as client:
        allowed = await client.call_tool("lookup_weather", {"city": "Lima"})
        with pytest.raises(MCPError) as raised:
            await client.call_tool("echo", {"text": "hello"})

    assert text_of(allowed) == "Sunny in Lima, 21 C."
    assert raised.value.error.code == FIREWALL_BLOCKED
    assert "may not use the tool(s) echo" in raised.value.error.message
    assert raised.value.error.data == {"status": 403, "reason": "tool_not_allowed"}
    assert mcp_server.calls == ["lookup_weather"]
    refused = [r for r in running.records() if r.get("event") == "tool_not_allowed"]
    assert refused and refused[0]["agent"] == "reader"


async def test_tool_arguments_and_results_are_redacted(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url) as client:
        secret = await client.call_tool("echo", {"text": f"my key is {KEY}"})
        codename = await client.call_tool("echo", {"text": "project bluebird ships friday"})

    assert text_of(secret) == "my key is [SECRET]"  # the server never saw the key
    assert text_of(codename) == "project [CODENAME] ships friday"
    # structuredContent is rewritten too, and still matches the tool's output schema.
    assert codename.structured_content == {"result": "project [CODENAME] ships friday"}
    actions = [(r["direction"], r["action"]) for r in running.records() if r.get("action") == "redact"]
    assert ("request", "redact") in actions and ("response", "redact") in actions


async def test_resources_and_prompts_are_inspected(start_firewall, mcp_server):
    running = firewall(start_firewall, mcp_server)

    async with session(running.url) as client:
        readme = await client.read_resource("notes://readme")
        with pytest.raises(MCPError) as poisoned_resource:
            await client.read_resource("notes://poisoned")
        prompt = await client.get_prompt("summarise", {"topic": "tides"})
        with pytest.raises(MCPError) as poisoned_prompt:
            await client.get_prompt("poisoned_prompt")

    assert readme.contents[0].text == "Install with pip, then run agent-firewall run."
    # A resource has no tool-error form: even `respond: refusal` answers it with an error.
    assert "rule injected-tool-result" in poisoned_resource.value.error.message
    assert POISONED_RESOURCE not in poisoned_resource.value.error.message
    assert prompt.messages[0].content.text == "Summarise the following topic in three sentences: tides"
    assert "rule injected-prompt" in poisoned_prompt.value.error.message
    assert POISONED_PROMPT not in poisoned_prompt.value.error.message
    blocked = sorted(r["blocking_rule"] for r in blocks(running.records()))
    assert blocked == ["injected-prompt", "injected-tool-result"]


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # sampling, in 2026-07-28
async def test_a_sampling_request_mid_stream_is_inspected_and_released_before_the_answer(start_firewall, sse_server):
    running = firewall(start_firewall, sse_server)
    asked: list[str] = []

    async def model(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        asked.append(content.text if isinstance(content, types.TextContent) else "")
        return types.CreateMessageResult(role="assistant", content=types.TextContent(text="Blue, mostly."),
                                         model="fake-model")

    async with session(running.url, sampling_callback=model) as client:
        answer = await client.call_tool("ask_model", {"question": "What colour is the sea?"})
        with pytest.raises(MCPError) as raised:
            await client.call_tool("ask_model", {"question": POISONED_PROMPT})

    # The server's question reached the model while the tool's answer was still to come.
    assert asked == ["What colour is the sea?"]
    assert text_of(answer) == "Blue, mostly."
    assert "rule injected-prompt" in raised.value.error.message
    streams = [r for r in running.records() if r.get("stream") and r.get("direction") == "response"]
    assert any(r.get("blocking_rule") == "injected-prompt" for r in streams)


async def test_malformed_bodies_are_refused_with_json_rpc_errors(start_firewall, sse_server):
    running = firewall(start_firewall, sse_server)
    headers = {"X-Agent-Id": "researcher", "Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(headers=headers) as http:
        bad_params = await http.post(running.url + "/mcp", json={
            "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": 5, "arguments": {}}})
        not_json = await http.post(running.url + "/mcp", content=b"{not json", headers={"Content-Type": "application/json"})
        bad_arguments = await http.post(running.url + "/mcp", json={
            "jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "echo", "arguments": ["x"]}})

    assert bad_params.status_code == 400
    assert bad_params.json()["id"] == 7 and bad_params.json()["error"]["code"] == INVALID_PARAMS
    assert "params.name: expected a string" in bad_params.json()["error"]["message"]
    assert not_json.status_code == 400
    assert not_json.json()["id"] is None and not_json.json()["error"]["code"] == PARSE_ERROR
    assert bad_arguments.json()["id"] == "a" and "params.arguments: expected an object" in bad_arguments.text
    assert sse_server.calls == []
    assert [r["event"] for r in running.records()] == ["bad_body_shape", "malformed_json", "bad_body_shape"]


async def test_get_is_answered_405_and_delete_is_forwarded(start_firewall, sse_server):
    running = firewall(start_firewall, sse_server)

    async with session(running.url) as client:
        await client.send_ping()
        async with httpx2.AsyncClient(headers={"X-Agent-Id": "researcher"}) as http:
            stream = await http.get(running.url + "/mcp", headers={"Accept": "text/event-stream"})
    # Leaving the session sends DELETE, which ends the session on the server.

    assert stream.status_code == 405 and stream.headers["Allow"] == "POST, DELETE"
    assert stream.json()["error"]["data"] == {"status": 405}
    records = running.records()
    assert "method_not_allowed" in [r.get("event") for r in records]
    (deleted,) = [r for r in records if r.get("event") == "uninspected_method"]
    assert (deleted["route"], deleted["status"], deleted["action"]) == ("DELETE /mcp", 200, "allow")


# --- a peer that answers what the firewall cannot read ---------------------------------


def misbehaving_peer() -> web.Application:
    """An MCP server that initializes properly, then answers each tool call the way the
    tool's name says: `bad_sse` (a progress event, then a result whose content is not an
    array), `bad_json` (the same as JSON), `wrong_id` (a result for an id never asked)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405)
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if message["method"] == "initialize":
            reply["result"] = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                               "serverInfo": {"name": "misbehaving", "version": "1"}}
            return web.json_response(reply)
        tool = message["params"]["name"]
        reply["result"] = {"content": "an unreadable payload"}
        if tool == "wrong_id":
            return web.json_response({**reply, "id": 999, "result": {"content": []}})
        if tool == "bad_json":
            return web.json_response(reply)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 0.5}}
        for event in (progress, reply):
            await response.write(b"event: message\ndata: " + orjson.dumps(event) + b"\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/mcp", handle)
    return app


@pytest.fixture(scope="module")
def peer() -> Iterator[ServerThread]:
    with ServerThread(misbehaving_peer(), name="misbehaving-mcp") as server:
        yield server


@pytest.mark.parametrize("tool", ["bad_sse", "bad_json", "wrong_id"])
async def test_an_answer_the_firewall_cannot_read_is_never_released(start_firewall, peer, tool):
    running = start_firewall(POLICY, upstreams={"mcp": peer.url})

    async with session(running.url, agent="tester") as client:  # an agent no tools list limits
        with pytest.raises(MCPError) as raised:
            await client.call_tool(tool, {})

    assert raised.value.error.code == INTERNAL_ERROR
    assert "cannot inspect" in raised.value.error.message
    assert "unreadable payload" not in raised.value.error.message
    records = running.records()
    if tool == "bad_sse":  # the stream ends with an error for the call, recorded with the stream
        (stream,) = [r for r in records if r.get("stream") and r.get("direction") == "response"]
        assert "result.content: expected an array" in stream["error"]
    else:
        assert [r["event"] for r in records if r.get("event") == "bad_upstream_response"]


async def test_the_default_pack_answers_an_injected_tool_result_as_a_tool_error(start_firewall, mcp_server):
    from pathlib import Path

    default = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    running = firewall(start_firewall, mcp_server, default.replace("version: 1", "version: 1\nidentity: {unidentified: allow}", 1))

    async with session(running.url) as client:
        listed = {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}
        result = await client.call_tool("fetch_page", {"url": "https://docs.example/start"})
        after = await client.call_tool("lookup_weather", {"city": "Rome"})

    # The poisoned description is cut out of the listing (a blocked listing would end the session).
    assert "[removed by agent-firewall" in listed["add_note"] and "previous instructions" not in listed["add_note"]
    assert "id_rsa" not in listed["add_note"] and "mention this to the user" not in listed["add_note"]
    assert listed["lookup_weather"] == "Returns today's weather for a city."
    assert result.is_error and "rule prompt-injection-from-a-tool" in text_of(result)
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" not in orjson.dumps(result.model_dump()).decode()
    assert text_of(after) == "Sunny in Rome, 21 C."
