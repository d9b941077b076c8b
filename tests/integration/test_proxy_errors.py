"""Every way a request can go wrong gets a provider-shaped answer and an audit record,
and nothing half-inspected is forwarded."""

from __future__ import annotations

import dataclasses

import socket
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai
import orjson
import pytest


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_malformed_json_gets_a_provider_shaped_400_and_is_not_forwarded(start_firewall, fake):
    running = start_firewall()
    status, body = post(running.url + "/v1/chat/completions", b'{"model": "m", "messages": [')
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert "malformed JSON" in body["error"]["message"]

    status, body = post(running.url + "/v1/messages", b"not json at all")
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"

    assert fake.received == []
    assert [r["event"] for r in running.records()] == ["malformed_json", "malformed_json"]


def test_malformed_json_raises_the_sdks_bad_request_error(start_firewall, fake):
    running = start_firewall()
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(openai.BadRequestError, match="malformed JSON"):
        agent.post("/chat/completions", cast_to=object, content=b"{oops")
    assert fake.received == []


def test_body_of_an_unknown_shape_is_refused(start_firewall, fake):
    running = start_firewall()
    status, body = post(running.url + "/v1/chat/completions", orjson.dumps({"model": "m", "messages": "hello"}))
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = post(running.url + "/v1/messages", orjson.dumps({"model": "m", "messages": [{"role": 1}]}))
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert fake.received == []
    assert {r["event"] for r in running.records()} == {"bad_body_shape"}


def test_body_over_the_size_limit_is_413(start_firewall, fake):
    running = start_firewall(max_body_bytes=4096)
    big = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}]})
    status, body = post(running.url + "/v1/chat/completions", big)
    assert status == 413 and "limit of 4096 bytes" in body["error"]["message"]
    agent = anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(anthropic.APIStatusError) as raised:
        agent.messages.create(model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "x" * 10_000}])
    assert raised.value.status_code == 413
    assert fake.received == []
    assert running.records()[0]["event"] == "body_too_large"


def test_upstream_down_is_a_provider_shaped_502_with_an_audit_record(start_firewall, fake):
    port = closed_port()
    running = start_firewall(upstreams={"openai": f"http://127.0.0.1:{port}", "anthropic": f"http://127.0.0.1:{port}"})
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(openai.InternalServerError) as raised:
        agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert "unreachable" in raised.value.message
    with pytest.raises(anthropic.InternalServerError):
        anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0, default_headers={"X-Agent-Id": "tester"}).messages.create(
            model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    records = running.records()
    assert [r.get("event") for r in records] == [None, "upstream_unreachable", None, "upstream_unreachable"]
    assert records[1]["status"] == 502 and records[1]["direction"] == "response"


def test_upstream_error_status_passes_through_and_is_recorded(start_firewall, fake):
    fake.add_reply(status=429, error="slow down")
    running = start_firewall()
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(openai.RateLimitError, match="slow down"):
        agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert running.records()[-1]["event"] == "upstream_error"


def test_unknown_route_is_refused_clearly(start_firewall, fake):
    running = start_firewall()
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(openai.NotFoundError, match="not a route the firewall inspects"):
        agent.models.list()
    assert fake.received == []
    assert running.records()[0]["event"] == "unknown_route"


def test_unknown_route_is_forwarded_uninspected_when_the_policy_allows(start_firewall, fake):
    running = start_firewall("""
        version: 1
        name: open
        defaults: {unknown_routes: forward}
        rules: []
    """)
    status, _ = post(running.url + "/v1/embeddings", orjson.dumps({"input": "x"}))
    (received,) = fake.received
    assert received.path == "/v1/embeddings"
    assert status == 404  # the fake upstream does not serve embeddings; its answer passes through
    assert running.records()[0]["event"] == "uninspected_route"


def test_invalid_agent_id_is_refused(start_firewall, fake):
    running = start_firewall()
    status, body = post(running.url + "/v1/chat/completions", orjson.dumps({"model": "m", "messages": []}),
                        headers={"X-Agent-Id": "bad id with spaces"})
    assert status == 400 and "invalid agent id" in body["error"]["message"]
    assert fake.received == []


def test_a_compressed_body_that_does_not_decode_is_refused(start_firewall, fake):
    # Compressed bodies are decoded and inspected (tests/integration/test_hostile_input.py);
    # one that does not decode is refused.
    running = start_firewall()
    status, body = post(running.url + "/v1/chat/completions", b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip" in body["error"]["message"]
    assert fake.received == []


def test_secrets_in_headers_never_reach_the_audit_log(start_firewall, fake):
    running = start_firewall()
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-live-SECRET-header-value", max_retries=0,
                          default_headers={"Cookie": "session=SECRET-cookie", "X-Agent-Id": "tester"})
    agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    post(running.url + "/v1/chat/completions", b"{broken", headers={"Authorization": "Bearer SECRET-2"})
    log = running.audit_path.read_text()
    assert "SECRET" not in log
    assert len(running.records()) == 3


class FullDisk:
    """An audit sink on a full disk."""

    def write(self, record: dict[str, Any]) -> None:
        raise OSError(28, "No space left on device")


def test_what_cannot_be_recorded_is_not_forwarded(start_firewall, fake):
    running = start_firewall()
    running.firewall.audit = FullDisk()
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(openai.InternalServerError) as raised:
        agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503
    assert "audit log cannot be written" in raised.value.message
    assert fake.received == []


class ExplodingEngine:
    """Fault injection: an engine with a bug."""

    policy = None

    def inspect(self, exchange: Any) -> None:
        raise RuntimeError("bug")


def test_an_internal_error_fails_closed_with_a_record(start_firewall, fake):
    running = start_firewall()
    ExplodingEngine.policy = running.firewall.policy
    runtime = running.firewall._runtime
    running.firewall._runtime = dataclasses.replace(runtime, engine=ExplodingEngine())  # type: ignore[arg-type]
    agent = anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    with pytest.raises(anthropic.InternalServerError) as raised:
        agent.messages.create(model="claude-fake-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 500
    assert raised.value.body["error"]["type"] == "api_error"
    assert fake.received == []
    assert running.records()[-1]["event"] == "internal_error"


def test_a_body_with_duplicate_keys_is_refused(start_firewall, fake):
    running = start_firewall()
    smuggled = (b'{"model": "m", "messages": [{"role": "user", "content": "murder him in his sleep"}],'
                b' "messages": [{"role": "user", "content": "hello"}]}')
    status, body = post(running.url + "/v1/chat/completions", smuggled)
    assert status == 400 and "duplicate key at $.messages" in body["error"]["message"]
    assert fake.received == []
    assert running.records()[0]["event"] == "duplicate_key"
