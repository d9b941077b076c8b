"""Fault injection, one test per fail mode: what the client gets (a provider-shaped error,
or a stream end its SDK accepts) and the audit record written.

Faults come from real parts on loopback: a second fake LLM serving as the judge (slow,
down, talking nonsense), a real redis-server stopped mid-run, a small tmpfs filled to the
last byte or /dev/full under the audit log, upstreams that refuse, fail, reset or
redirect. Nothing that was not inspected is forwarded; where the upstream goes is
configuration, never the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx
import openai
import orjson
import pytest
from aiohttp import web

from firewall.audit import AuditWriter, read_records
from firewall.policy import load_policy_file
from firewall.proxy import Firewall, ProxyConfig
from firewall.testing import FakeUpstream, ServerThread, run_fake_upstream
from tests.redis_server import RedisServer, running_redis_server

AGENT = {"X-Agent-Id": "tester"}
HELLO = [{"role": "user", "content": "hi"}]
NOT_A_VERDICT = "I would rather talk about the weather."


def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, default_headers=AGENT)


def ant(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="k", max_retries=0, default_headers=AGENT)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def openai_text(stream: Any) -> str:
    return "".join((part.choices[0].delta.content or "") for part in stream if part.choices)


def anthropic_text(client: anthropic.Anthropic, **extra: Any) -> str:
    with client.messages.stream(model="claude-fake-1", max_tokens=64, messages=HELLO, **extra) as stream:
        return "".join(stream.text_stream)


@dataclass
class Judge:
    fake: FakeUpstream
    url: str

    def add_reply(self, *args: Any, **kwargs: Any) -> None:
        self.fake.add_reply(*args, **kwargs)


@pytest.fixture
def judge() -> Iterator[Judge]:
    """A second fake LLM, serving as the judge's endpoint."""
    with run_fake_upstream() as (fake_judge, server):
        yield Judge(fake_judge, server.url)


def judged(endpoint: str, *, on_error: str | None = None, defaults: str = "block", timeout: float = 2.0) -> str:
    """A policy whose one rule asks the judge about every request message."""
    own = f", on_error: {on_error}" if on_error else ""
    return f"""
        version: 1
        name: judged
        defaults: {{on_error: {defaults}}}
        detectors:
          judge: {{endpoint: "{endpoint}/v1", model: judge-model, rubric: "harm to people", timeout: {timeout}{own}}}
        rules:
          - id: judged-harmful
            direction: request
            if: "scores.judge > 0.5"
            action: block
    """


def request_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    (record,) = [r for r in records if r["direction"] == "request" and r.get("event") is None]
    return record


# -- detectors that fail: raise, time out, are down -------------------------------------------


@pytest.mark.parametrize("fault", ["nonsense", "http-500", "timeout", "refused"])
def test_a_failing_judge_blocks_by_default(start_firewall, fake, judge, fault):
    endpoint = f"http://127.0.0.1:{closed_port()}" if fault == "refused" else judge.url
    if fault == "nonsense":
        judge.add_reply(NOT_A_VERDICT)
    elif fault == "http-500":
        judge.add_reply(status=500, error="judge model crashed")
    elif fault == "timeout":
        judge.add_reply('{"harmful": false}', delay=5)
    fake.add_reply("Served.")
    running = start_firewall(judged(endpoint, timeout=0.5))

    with pytest.raises(openai.PermissionDeniedError) as refused:
        oai(running.url).chat.completions.create(model="m", messages=HELLO)
    assert refused.value.body["code"] == "firewall_blocked"
    assert "detector-error:judge" in refused.value.message
    # A slow judge is cut off by its socket's timeout or by the batch's, whichever fires first.
    expected = {"nonsense": ("not a verdict",), "http-500": ("HTTP 500",), "timeout": ("timed out", "within 0.5 s"),
                "refused": ("unreachable",)}
    assert any(words in refused.value.message for words in expected[fault])
    with pytest.raises(anthropic.PermissionDeniedError, match="detector-error:judge"):
        ant(running.url).messages.create(model="claude-fake-1", max_tokens=5, messages=HELLO)
    assert fake.received == []
    records = running.records(at_least=2)
    assert [r["action"] for r in records] == ["block", "block"]
    assert all(r["rules"][0]["id"] == "detector-error:judge" for r in records)


@pytest.mark.parametrize("where", ["detector", "defaults"])
def test_a_failing_judge_allows_when_the_policy_says_so_and_the_record_says_why(start_firewall, fake, judge, where):
    judge.add_reply('{"harmful": false}', delay=5)
    fake.add_reply("Served.")
    policy = judged(judge.url, timeout=0.5, **({"on_error": "allow"} if where == "detector" else {"defaults": "allow"}))
    running = start_firewall(policy)
    assert oai(running.url).chat.completions.create(model="m", messages=HELLO).choices[0].message.content == "Served."
    assert anthropic_text(ant(running.url)) == "Served."
    assert len(fake.received) == 2
    requests = [r for r in running.records(at_least=4) if r["direction"] == "request"]
    assert len(requests) == 2
    for record in requests:
        assert record["action"] == "allow"
        (failure,) = record["rules"]
        assert failure["id"] == "detector-error:judge" and failure["action"] == "allow"


def test_a_judge_that_fails_on_a_streamed_answer_ends_the_stream_closed(start_firewall, fake, judge):
    judge.add_reply(NOT_A_VERDICT)
    fake.add_reply("A perfectly ordinary answer.")
    running = start_firewall(f"""
        version: 1
        name: judged-answers
        detectors:
          judge: {{endpoint: "{judge.url}/v1", model: judge-model, rubric: "harm to people", timeout: 2}}
        rules:
          - id: judged-harmful
            direction: response
            if: "scores.judge > 0.5"
            action: block
    """)
    with pytest.raises(anthropic.APIError, match="detector-error:judge"):
        anthropic_text(ant(running.url))
    # An OpenAI stream that is blocked ends as the provider ends a filtered one.
    chunks = list(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    answers = [r for r in running.records(at_least=4) if r["direction"] == "response"]
    assert len(answers) == 2
    assert all(r["action"] == "block" and r["rules"][0]["id"] == "detector-error:judge" for r in answers)
    assert all("ordinary" not in json.dumps(r["response"]) for r in answers)


# -- upstreams that refuse, fail, reset -------------------------------------------------------
# Refused connections on non-streamed calls: tests/integration/test_proxy_errors.py; an OpenAI
# stream cut mid-way: tests/integration/test_proxy_streaming.py.


class BrokenUpstream:
    """An upstream that misbehaves in the ways the fake LLM cannot: it answers every route
    with the `answer` set by the test (a redirect, an HTML 502 from a load balancer, a
    body cut short)."""

    def __init__(self) -> None:
        self.answer = "redirect"
        self.location = ""
        self.received: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.received.append(f"{request.method} {request.path}")
        if self.answer == "redirect":
            return web.Response(status=307, headers={"Location": self.location + request.path})
        if self.answer == "html-502":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        # A JSON body promised whole (Content-Length) and cut after its first bytes.
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "4096"})
        await response.prepare(request)
        await response.write(b'{"id": "cut-1", "choices": [{"message": {"role": "assistant", "content": "half')
        await asyncio.sleep(0.05)  # let the bytes reach the wire before the reset
        if request.transport is not None:
            request.transport.abort()
        return response


@pytest.fixture
def broken() -> Iterator[tuple[BrokenUpstream, str]]:
    upstream = BrokenUpstream()
    with ServerThread(upstream.app, name="broken-upstream") as server:
        yield upstream, server.url


@pytest.fixture
def evil() -> Iterator[tuple[FakeUpstream, str]]:
    """Where a hostile request would like to send itself: it must never be reached."""
    with run_fake_upstream() as (fake_evil, server):
        yield fake_evil, server.url


def test_an_upstream_refusing_connections_ends_streams_in_a_provider_shaped_502(start_firewall, fake):
    port = closed_port()
    running = start_firewall(upstreams={"openai": f"http://127.0.0.1:{port}", "anthropic": f"http://127.0.0.1:{port}"})
    with pytest.raises(openai.InternalServerError, match="unreachable") as raised:
        openai_text(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True))
    assert raised.value.status_code == 502 and "unreachable" in raised.value.body["message"]
    with pytest.raises(anthropic.InternalServerError, match="unreachable") as raised_anthropic:
        anthropic_text(ant(running.url))
    assert raised_anthropic.value.body["error"]["type"] == "api_error"
    records = running.records(at_least=4)
    refusals = [r for r in records if r.get("event") == "upstream_unreachable"]
    assert [(r["status"], r["direction"], r["route"]) for r in refusals] == [
        (502, "response", "openai_chat"), (502, "response", "anthropic_messages")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_upstream_5xx_reaches_the_client_as_the_providers_error(start_firewall, fake, stream):
    fake.add_reply(status=503, error="overloaded, try later")
    running = start_firewall()
    with pytest.raises(openai.InternalServerError, match="overloaded") as raised:
        openai_text(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True)) if stream else \
            oai(running.url).chat.completions.create(model="m", messages=HELLO)
    assert raised.value.status_code == 503
    with pytest.raises(anthropic.InternalServerError, match="overloaded"):
        anthropic_text(ant(running.url)) if stream else \
            ant(running.url).messages.create(model="claude-fake-1", max_tokens=5, messages=HELLO)
    errors = [r for r in running.records(at_least=4) if r.get("event") == "upstream_error"]
    assert [(r["status"], r["route"]) for r in errors] == [(503, "openai_chat"), (503, "anthropic_messages")]
    assert all("overloaded" in r["error"] for r in errors)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_upstream_that_does_not_answer_in_time_is_a_504(start_firewall, fake, stream):
    fake.add_reply("Too late.", delay=5)
    running = start_firewall(read_timeout=0.3)
    with pytest.raises(openai.APIStatusError, match="did not answer within 0.3 seconds") as raised:
        openai_text(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True)) if stream else \
            oai(running.url).chat.completions.create(model="m", messages=HELLO)
    assert raised.value.status_code == 504
    with pytest.raises(anthropic.APIStatusError, match="did not answer within 0.3 seconds"):
        anthropic_text(ant(running.url)) if stream else \
            ant(running.url).messages.create(model="claude-fake-1", max_tokens=5, messages=HELLO)
    timeouts = [r for r in running.records(at_least=4) if r.get("event") == "upstream_timeout"]
    assert [(r["status"], r["direction"]) for r in timeouts] == [(504, "response")] * 2


def test_a_load_balancers_html_502_reaches_the_client_as_a_502(start_firewall, fake, broken):
    upstream, url = broken
    upstream.answer = "html-502"
    running = start_firewall(upstreams={"openai": url, "anthropic": url})
    with pytest.raises(openai.InternalServerError) as raised:
        oai(running.url).chat.completions.create(model="m", messages=HELLO)
    assert raised.value.status_code == 502
    with pytest.raises(anthropic.InternalServerError):
        anthropic_text(ant(running.url))
    errors = [r for r in running.records(at_least=4) if r.get("event") == "upstream_error"]
    assert [r["status"] for r in errors] == [502, 502] and "Bad Gateway" in errors[0]["error"]


def test_an_upstream_reset_mid_body_is_a_502_and_nothing_half_read_is_released(start_firewall, fake, broken):
    upstream, url = broken
    upstream.answer = "reset"
    running = start_firewall(upstreams={"openai": url, "anthropic": url})
    with pytest.raises(openai.InternalServerError, match="upstream") as raised:
        oai(running.url).chat.completions.create(model="m", messages=HELLO)
    assert raised.value.status_code == 502 and "half" not in raised.value.message
    with pytest.raises(anthropic.InternalServerError, match="upstream"):
        ant(running.url).messages.create(model="claude-fake-1", max_tokens=5, messages=HELLO)
    refusals = [r for r in running.records(at_least=4) if r.get("event")]
    assert [(r["event"], r["status"], r["direction"]) for r in refusals] == [("upstream_unreachable", 502, "response")] * 2


def test_an_anthropic_stream_reset_mid_way_ends_in_an_error_event(start_firewall, fake):
    fake.add_reply("one two three four five six seven eight nine ten eleven twelve", drop_after=6)
    running = start_firewall()
    received = []
    with pytest.raises(anthropic.APIError, match="broke off the stream"):
        with ant(running.url).messages.stream(model="claude-fake-1", max_tokens=64, messages=HELLO) as stream:
            received.extend(stream.text_stream)
    assert "eleven" not in "".join(received)
    record = running.records(at_least=2)[-1]
    assert record["direction"] == "response" and "broke off" in record["error"]


# -- where a request goes: configuration only -------------------------------------------------


def test_the_host_header_cannot_choose_the_upstream(start_firewall, fake, evil):
    evil_fake, evil_url = evil
    fake.add_reply("Served by the configured upstream.")
    running = start_firewall()
    hostile = openai.OpenAI(base_url=running.url + "/v1", api_key="sk-test", max_retries=0, default_headers={
        **AGENT, "Host": urlsplit(evil_url).netloc, "X-Forwarded-Host": urlsplit(evil_url).netloc,
        "Forwarded": f"host={urlsplit(evil_url).netloc}"})
    answer = hostile.chat.completions.create(model="m", messages=HELLO)
    assert answer.choices[0].message.content == "Served by the configured upstream."
    (received,) = fake.received
    assert received.headers["host"] == urlsplit(_fake_url(running)).netloc
    assert evil_fake.received == []


def test_an_absolute_uri_request_line_cannot_choose_the_upstream(start_firewall, fake, evil):
    evil_fake, evil_url = evil
    fake.add_reply("Served by the configured upstream.")
    running = start_firewall()
    body = orjson.dumps({"model": "m", "messages": HELLO})
    target = urlsplit(evil_url).netloc
    head = (f"POST {evil_url}/v1/chat/completions HTTP/1.1\r\nHost: {target}\r\nX-Agent-Id: tester\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    status, answer = _raw_exchange(running.url, head.encode() + body)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Served by the configured upstream."
    (received,) = fake.received
    assert received.path == "/v1/chat/completions"
    assert evil_fake.received == []
    assert request_record(running.records())["action"] == "allow"


def test_a_body_field_cannot_choose_the_upstream(start_firewall, fake, evil):
    evil_fake, evil_url = evil
    fake.add_reply("Served by the configured upstream.")
    running = start_firewall()
    oai(running.url).chat.completions.create(model="m", messages=HELLO, extra_body={
        "base_url": evil_url, "api_base": evil_url, "url": evil_url + "/v1/chat/completions"})
    ant(running.url).messages.create(model="claude-fake-1", max_tokens=5, messages=HELLO,
                                     extra_body={"base_url": evil_url})
    assert len(fake.received) == 2 and evil_fake.received == []


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_redirect_from_the_upstream_is_passed_on_not_followed(start_firewall, fake, broken, evil, stream):
    upstream, url = broken
    evil_fake, evil_url = evil
    upstream.location = evil_url
    running = start_firewall(upstreams={"openai": url, "anthropic": url})
    for path, body in (("/v1/chat/completions", {"model": "m", "messages": HELLO, "stream": stream}),
                       ("/v1/messages", {"model": "c", "max_tokens": 5, "messages": HELLO, "stream": stream})):
        answer = httpx.post(running.url + path, json=body, headers=AGENT, follow_redirects=False)
        assert answer.status_code == 307
        assert answer.headers["location"] == evil_url + path
    assert upstream.received == ["POST /v1/chat/completions", "POST /v1/messages"]
    assert evil_fake.received == []  # the firewall did not follow
    passed = [r for r in running.records(at_least=4) if r.get("event")]
    assert [(r["status"], r["direction"]) for r in passed] == [(307, "response")] * 2


def _fake_url(running: Any) -> str:
    return running.firewall.config.upstreams["openai"]


def _raw_exchange(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are (no client library would send them) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, orjson.loads(body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


# -- the audit log cannot be written ------------------------------------------------------------
# What cannot be recorded is not forwarded: 503 in the provider's shape. A read-only file or
# directory does not stop a writer that already holds the file open (POSIX checks
# permissions at open), so "read-only" is tested where it bites: at start.


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, so a test can fill it (needs root, as in CI's container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, *, leave: int = 0) -> Path:
    """Write a file until the file system is full, then give `leave` bytes back; return the
    file (delete it to free the space). tmpfs allocates whole pages: a file already open
    can still grow into the rest of its last page."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
        if leave:
            out.truncate(max(0, out.tell() - leave))
    return filler


RECORDED = """
    version: 1
    name: recorded
    audit: {messages: true}
    rules: []
"""


@contextlib.contextmanager
def serving(audit_path: Path, upstream_url: str, policy: Path | None = None) -> Iterator[tuple[Firewall, str]]:
    from tests.conftest import DEFAULT_POLICY

    audit = AuditWriter(audit_path)
    firewall = Firewall(ProxyConfig(port=0, upstreams={"openai": upstream_url, "anthropic": upstream_url}),
                        load_policy_file(policy or DEFAULT_POLICY), audit)
    server = ServerThread(firewall.app, name="firewall").start()
    try:
        yield firewall, server.url
    finally:
        server.stop()
        audit.close()


def unavailable(error: openai.APIStatusError | anthropic.APIStatusError) -> bool:
    return error.status_code == 503 and "audit log cannot be written" in error.message


def test_an_audit_log_on_a_full_device_refuses_everything_with_a_503(upstream_server, fake):
    _, upstream = upstream_server
    fake.add_reply("never sent")
    with serving(Path("/dev/full"), upstream.url) as (firewall, url):
        with pytest.raises(openai.InternalServerError) as whole:
            oai(url).chat.completions.create(model="m", messages=HELLO)
        with pytest.raises(openai.InternalServerError) as streamed:
            openai_text(oai(url).chat.completions.create(model="m", messages=HELLO, stream=True))
        with pytest.raises(anthropic.InternalServerError) as anthropic_streamed:
            anthropic_text(ant(url))
        assert all(unavailable(raised.value) for raised in (whole, streamed, anthropic_streamed))
        assert anthropic_streamed.value.body["type"] == "error"
        assert fake.received == []
        assert firewall.metrics.audit_errors._value.get() == 3


def test_a_disk_that_fills_up_stops_forwarding_and_service_returns_with_space(upstream_server, fake, small_disk):
    from firewall.audit.verify import verify

    _, upstream = upstream_server
    fake.add_reply("Served.")
    audit_path = small_disk / "audit.jsonl"
    with serving(audit_path, upstream.url) as (_, url):
        assert oai(url).chat.completions.create(model="m", messages=HELLO).choices[0].message.content == "Served."
        filler = fill(small_disk)
        refused = None
        for _ in range(20):  # the log's last page still takes a few records
            try:
                oai(url).chat.completions.create(model="m", messages=HELLO)
            except openai.InternalServerError as error:
                refused = error
                break
        assert refused is not None and unavailable(refused)
        forwarded = len(fake.received)
        with pytest.raises(anthropic.InternalServerError) as streamed:
            anthropic_text(ant(url))
        assert unavailable(streamed.value)
        assert len(fake.received) == forwarded  # nothing unrecorded goes upstream
        filler.unlink()
        assert anthropic_text(ant(url)) == "Served."
    records = list(read_records(audit_path))
    assert len([r for r in records if r["direction"] == "request"]) == len(fake.received)
    assert records[-1]["route"] == "anthropic_messages" and records[-1]["direction"] == "response"
    report = verify(audit_path)
    assert report.ok, report  # a failed write left no torn line and no gap in the chain


def test_an_answer_that_cannot_be_recorded_is_not_released(upstream_server, fake, small_disk, write_policy):
    _, upstream = upstream_server
    secret_sauce = "calm words " * 2000  # its record (audit.messages: true) needs more than a page
    fake.add_reply(secret_sauce)
    with serving(small_disk / "audit.jsonl", upstream.url, write_policy(RECORDED)) as (_, url):
        fill(small_disk, leave=4096)  # room for the request's record, not the answer's
        with pytest.raises(openai.InternalServerError) as whole:
            oai(url).chat.completions.create(model="m", messages=HELLO)
        with pytest.raises(anthropic.APIError, match="audit log cannot be written") as streamed:
            anthropic_text(ant(url))
    assert unavailable(whole.value) and "calm words" not in whole.value.message
    assert len(fake.received) == 2  # each request was recorded, then forwarded
    assert "calm words" not in str(streamed.value)


def test_an_openai_stream_that_cannot_be_recorded_ends_in_an_error(upstream_server, fake, small_disk, write_policy):
    _, upstream = upstream_server
    fake.add_reply("calm words " * 2000)
    with serving(small_disk / "audit.jsonl", upstream.url, write_policy(RECORDED)) as (_, url):
        fill(small_disk, leave=4096)
        with pytest.raises(openai.APIError, match="audit log cannot be written"):
            openai_text(oai(url).chat.completions.create(model="m", messages=HELLO, stream=True))


def test_a_read_only_audit_location_stops_the_firewall_at_start_with_a_clear_message(tmp_path, small_disk):
    import sys

    from tests.conftest import DEFAULT_POLICY, ROOT

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "firewall.cli", "run", "--policy", str(DEFAULT_POLICY), "--listen", "127.0.0.1:0",
         "--audit-log", str(small_disk / "audit.jsonl")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode != 0
    assert "--audit-log" in done.stderr and "Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr


# -- agent state (Redis) goes away mid-run ----------------------------------------------------
# Two firewall processes on one Redis, non-streamed OpenAI calls, both on_error modes:
# tests/integration/test_agents_redis.py. Here: streams, Anthropic, Redis lost mid-stream.


def stateful(on_error: str) -> str:
    return f"""
        version: 1
        name: stateful-{on_error}
        defaults: {{on_error: {on_error}}}
        quarantine: {{violations: 2, window: 600, release_after: 3600}}
        lists: {{forbidden: ["launch codes"]}}
        rules: [{{id: no-launch-codes, direction: request, match: {{lists: [forbidden]}}, action: block}}]
    """


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path / "redis") as server:
        yield server


def first_refusal(ask: Callable[[], Any], within: float = 5.0) -> Exception:
    """Ask until refused: an agent's state read from Redis is reused for up to 0.5 s
    (firewall/agents/quarantine.py), so the first asks after Redis goes may still pass."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            ask()
        except (openai.APIStatusError, anthropic.APIStatusError) as refused:
            return refused
        time.sleep(0.05)
    raise AssertionError(f"still served {within:g} s after Redis went away")


def test_redis_lost_mid_stream_finishes_the_stream_then_refuses_under_block(start_firewall, fake, redis):
    fake.add_reply("one two three four five six seven eight nine ten", chunk_delay=0.05)
    running = start_firewall(stateful("block"), state=redis.url)
    client = ant(running.url)
    with client.messages.stream(model="claude-fake-1", max_tokens=64, messages=HELLO) as stream:
        pieces = iter(stream.text_stream)
        received = [next(pieces)]
        redis.stop()  # the request was admitted; its answer is on its way
        received.extend(pieces)
    assert "".join(received) == "one two three four five six seven eight nine ten"

    refused = first_refusal(lambda: anthropic_text(client))
    assert isinstance(refused, anthropic.InternalServerError) and refused.status_code == 503
    assert "agent state is unavailable" in refused.message and "defaults.on_error: block" in refused.message
    forwarded = len(fake.received)
    with pytest.raises(openai.InternalServerError, match="agent state is unavailable"):
        openai_text(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True))
    assert len(fake.received) == forwarded  # refused before anything went upstream
    refusals = [r for r in running.records() if r.get("event") == "state_unavailable"]
    assert [(r.get("route"), r["action"], r.get("status")) for r in refusals][-2:] == [
        ("anthropic_messages", "block", 503), ("openai_chat", "block", 503)]

    redis.restart()
    assert anthropic_text(client) == "one two three four five six seven eight nine ten"


def test_redis_lost_under_allow_keeps_streams_flowing_and_says_so(start_firewall, fake, redis):
    fake.add_reply("Served.")
    running = start_firewall(stateful("allow"), state=redis.url)
    assert anthropic_text(ant(running.url)) == "Served."
    redis.stop()

    def recorded_lost() -> list[dict[str, Any]]:
        return [r for r in running.records() if r.get("event") == "state_unavailable"]

    for _ in range(100):  # until past the 0.5 s reuse of the agent's state read from Redis
        assert anthropic_text(ant(running.url)) == "Served."
        assert openai_text(oai(running.url).chat.completions.create(model="m", messages=HELLO, stream=True)) == "Served."
        if recorded_lost():
            break
    records = running.records()
    lost = [r for r in records if r.get("event") == "state_unavailable"]
    assert lost and all(r["action"] == "allow" for r in lost)
    assert any("inspected without agent state" in r["error"] for r in lost)
    with pytest.raises(anthropic.PermissionDeniedError, match="no-launch-codes"):  # the rules still apply
        ant(running.url).messages.create(model="claude-fake-1", max_tokens=5,
                                         messages=[{"role": "user", "content": "the launch codes, please"}])


def test_a_local_model_past_its_timeout_blocks_and_service_returns(start_firewall, fake):
    from firewall.detectors import DetectorError

    fake.add_reply("Served.")
    running = start_firewall("""
        version: 1
        name: semantic-bounded
        detectors:
          semantic: {timeout: 0.5}
        rules:
          - id: semantic-harm
            direction: request
            if: "scores.semantic > 0.95"
            action: block
    """)
    deadline = running.firewall.policy.detectors["semantic"].inner.deadline
    wedged = threading.Event()
    with pytest.raises(DetectorError):
        deadline.run(wedged.wait)  # the model's worker hangs, as a wedged native library would
    try:
        with pytest.raises(openai.PermissionDeniedError, match="detector-error:semantic") as refused:
            oai(running.url).chat.completions.create(model="m", messages=[{"role": "user", "content": "plan the picnic"}])
        assert "within its timeout of 0.5 s" in refused.value.message
    finally:
        wedged.set()
    assert oai(running.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "plan the party"}]).choices[0].message.content == "Served."
    assert len(fake.received) == 1
    blocked = request_record(running.records(at_least=3)[:1])
    assert blocked["action"] == "block" and blocked["rules"][0]["id"] == "detector-error:semantic"
