"""Forward mode's steps: the reverse proxy's own decisions for a request mitmproxy carries.

No mitmproxy here (it lives in an environment of its own): the steps take and give plain
values, and the Firewall behind them is the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from firewall.agents.keys import hash_key, new_key
from firewall.audit import AuditWriter, read_records
from firewall.forward.steps import Answer, Forward, ForwardSteps, GuardedStream, RequestView
from firewall.policy import Policy
from firewall.proxy import EXCHANGE_HEADER, Firewall, ProxyConfig
from firewall.proxy.upstream import UpstreamClient

VIOLENT = "the best solution is to murder him in his sleep"
POLICY = """
    version: 1
    name: steps
    lists:
      violent_acts: [murder, poison]
      people: [him, her, them]
    patterns:
      ticket: 'TICKET-[0-9]{6}'
    rules:
      - id: violent-suggestion
        match:
          near: {list: violent_acts, near: people, within: 6}
        action: block
      - id: redact-ticket
        match: {patterns: [ticket]}
        action: {redact: "[TICKET]"}
    """


@pytest.fixture
def make_steps(tmp_path: Path, load_policy: Callable[[str], Policy]) -> Iterator[Callable[..., tuple[ForwardSteps, Path]]]:
    writers: list[AuditWriter] = []

    def make(policy: str = POLICY, **config: Any) -> tuple[ForwardSteps, Path]:
        path = tmp_path / f"audit-{len(writers)}.jsonl"
        writers.append(AuditWriter(path))
        return ForwardSteps(Firewall(ProxyConfig(port=0, **config), load_policy(policy), writers[-1])), path

    yield make
    for writer in writers:
        writer.close()


def chat(content: str, *, stream: bool = False) -> bytes:
    return orjson.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]})


def view(body: bytes, *, path: str = "/v1/chat/completions", query: str = "", method: str = "POST",
         headers: tuple[tuple[str, str], ...] = (("X-Agent-Id", "tester"),), limit: int = 1 << 20) -> RequestView:
    return RequestView.of(method, path, query, [("Content-Type", "application/json"), ("Connection", "keep-alive"),
                                                ("Content-Length", str(len(body))), *headers], body, limit)


def completion(text: str) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})


def sse_chunk(text: str) -> bytes:
    return b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}) + b"\n\n"


async def test_a_request_that_passes_is_forwarded_as_decided(make_steps):
    steps, audit = make_steps()
    decided = await steps.decide(view(chat("close TICKET-123456 today"), path="/agents/planner/v1/chat/completions",
                                      query="api-version=1", headers=()))

    assert isinstance(decided, Forward) and decided.exchange is not None
    assert decided.path == "/v1/chat/completions?api-version=1"  # the agent's prefix stays with the firewall
    assert orjson.loads(decided.body)["messages"][0]["content"] == "close [TICKET] today"
    names = {name.lower() for name, _ in decided.headers}
    assert "connection" not in names and "content-length" not in names and "content-type" in names
    (record,) = read_records(audit)
    assert record["action"] == "redact" and record["agent"] == "planner"


async def test_refusals_and_blocks_come_back_as_answers_in_the_providers_shape(make_steps):
    steps, audit = make_steps()
    blocked = await steps.decide(view(chat(VIOLENT)))
    malformed = await steps.decide(view(b"{not json"))
    too_large = await steps.decide(view(chat("x" * 2000), limit=1024))

    assert isinstance(blocked, Answer) and blocked.status == 403
    assert orjson.loads(blocked.body)["error"]["code"] == "firewall_blocked"
    assert dict(blocked.headers)[EXCHANGE_HEADER].startswith("ex_")
    assert isinstance(malformed, Answer) and malformed.status == 400 and b"malformed JSON" in malformed.body
    assert isinstance(too_large, Answer) and too_large.status == 413
    assert [r.get("event") or r["action"] for r in read_records(audit)] == ["block", "malformed_json", "body_too_large"]


async def test_a_firewall_key_never_leaves_the_firewall(make_steps):
    key = new_key()
    policy = POLICY + f"""
    agents:
      planner: {{keys: ["{hash_key(key)}"]}}
    """
    steps, _ = make_steps(policy, provider_keys={"openai": SecretStr("sk-the-real-provider-key")})
    decided = await steps.decide(view(chat("hello"), headers=(("Authorization", f"Bearer {key}"),)))

    assert isinstance(decided, Forward) and decided.call.identity is not None and decided.call.identity.agent == "planner"
    assert ("Authorization", "Bearer sk-the-real-provider-key") in decided.headers
    assert key not in repr(decided.headers)


async def test_an_unknown_route_is_refused_or_passed_uninspected_as_the_policy_says(make_steps):
    refusing, _ = make_steps()
    refused = await refusing.decide(view(b"", path="/v1/models", method="GET"))
    assert isinstance(refused, Answer) and refused.status == 404

    passing, audit = make_steps(POLICY + "\n    defaults: {unknown_routes: forward}\n")
    passed = await passing.decide(view(b"", path="/v1/models", method="GET"))
    assert isinstance(passed, Forward) and passed.exchange is None and passed.path == "/v1/models"
    passing.passed(passed, 200)
    (record,) = read_records(audit)
    assert record["event"] == "uninspected_route" and record["route"] == "GET /v1/models" and record["status"] == 200


async def test_no_step_reaches_an_upstream_by_itself(make_steps):
    steps, _ = make_steps()
    handler = steps._handler
    with pytest.raises(RuntimeError, match="only mitmproxy may"):
        handler.upstream.request("POST", "http://127.0.0.1:9", "/v1/chat/completions", [], b"{}")
    # ...while the Firewall the reverse listener serves keeps its own upstream client.
    assert isinstance(steps.firewall.upstream, UpstreamClient) and not steps.firewall.upstream.closed


async def test_a_buffered_answer_is_inspected_whole(make_steps):
    steps, audit = make_steps()
    benign = await steps.decide(view(chat("hello")))
    violent = await steps.decide(view(chat("hello")))
    assert isinstance(benign, Forward) and isinstance(violent, Forward)

    passed = await steps.answer(benign, 200, [("Content-Type", "application/json")], completion("Paris."))
    withheld = await steps.answer(violent, 200, [("Content-Type", "application/json")], completion(VIOLENT))

    assert passed.status == 200 and orjson.loads(passed.body)["choices"][0]["message"]["content"] == "Paris."
    assert dict(passed.headers)[EXCHANGE_HEADER] == benign.call.id
    assert withheld.status == 403 and b"murder" not in withheld.body
    assert [r["action"] for r in read_records(audit) if r["direction"] == "response"] == ["allow", "block"]


async def test_a_streamed_answer_is_released_as_the_guard_checks_it(make_steps):
    steps, audit = make_steps()
    forward = await steps.decide(view(chat("go", stream=True)))
    assert isinstance(forward, Forward)
    headers = {"Content-Type": "text/event-stream", "Content-Length": "999"}
    assert steps.streams(forward, 200, headers)
    assert not steps.streams(forward, 200, {**headers, "Content-Encoding": "gzip"})  # unreadable as it comes: buffered
    assert not steps.streams(forward, 500, headers)

    opened = await steps.open_stream(forward, list(headers.items()))
    assert isinstance(opened, GuardedStream)
    assert "Content-Length" not in dict(opened.headers) and dict(opened.headers)[EXCHANGE_HEADER] == forward.call.id
    out = [opened(sse_chunk(word)) for word in ("the", " best", " solution", " is", " to", " murder", " him", " now")]
    out.append(opened(b""))

    assert out[0] and all(isinstance(piece, list) for piece in out)
    assert [] in out  # nothing to release is no chunk at all (b"" would end the body)
    sent = b"".join(b"".join(piece) for piece in out)
    assert b"murder" not in sent and b'"finish_reason":"content_filter"' in sent and sent.endswith(b"data: [DONE]\n\n")
    await steps.close_stream(forward)
    stream_record = list(read_records(audit))[-1]
    assert stream_record["stream"] is True and stream_record["action"] == "block"


async def test_a_stream_that_breaks_off_is_recorded_with_why(make_steps):
    steps, audit = make_steps()
    forward = await steps.decide(view(chat("go", stream=True)))
    assert isinstance(forward, Forward)
    opened = await steps.open_stream(forward, [("Content-Type", "text/event-stream")])
    assert isinstance(opened, GuardedStream)
    opened(sse_chunk("partial"))
    await steps.close_stream(forward, broken="Server disconnected.")
    await steps.close_stream(forward)  # recorded once

    records = list(read_records(audit))
    assert len(records) == 2 and records[-1]["note"] == "the stream broke off: Server disconnected."


async def test_a_reload_is_seen_through_the_forward_steps(make_steps, load_policy):
    steps, _ = make_steps()
    steps.firewall.reload(load_policy(POLICY.replace("name: steps", "name: reloaded").replace("murder, ", "")),
                          by="test")
    decided = await steps.decide(view(chat(VIOLENT)))
    assert isinstance(decided, Forward) and decided.call.rt.policy.name == "reloaded"
