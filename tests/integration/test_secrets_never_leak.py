"""Secrets never leave the firewall by any output.

Distinct keys are planted in every place an agent or an operator can put one: the
Authorization, x-api-key and x-goog-api-key headers (provider keys an agent sends, and
per-agent firewall keys `afw_…`, valid, unknown, or in the query string), cookies, a
Proxy-Authorization header, the provider keys given with --provider-key (a file and an
environment variable) and the admin token (and a wrong one). Real traffic goes through an
`agent-firewall run` process (allowed, streamed, blocked both ways, refused keys,
malformed bodies, upstream errors, a stream cut off, an unknown route, admin calls), and
then every output is searched for every planted key, whole or in part: the audit log,
/metrics and the admin API's answers, the process's stderr and stdout, and every response
(status, headers, body) any client received.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from firewall.agents.keys import hash_key
from firewall.audit import read_records
from firewall.proxy.admin import ADMIN_TOKEN_ENV
from firewall.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP = 60.0
STOP = 15.0
WINDOW = 10  # a leak of any 10 characters in a row of a key's random part counts


def _random() -> str:
    return secrets.token_hex(16)


# Every key has a random core: what is searched for (a prefix alone is not a secret).
PLANTED = {
    "agent OpenAI key (Authorization)": "sk-proj-" + _random(),
    "agent Anthropic key (x-api-key)": "sk-ant-api03-" + _random(),
    "agent Gemini key (x-goog-api-key)": "AIza" + _random(),
    "planner firewall key": "afw_" + _random(),
    "executor firewall key": "afw_" + _random(),
    "unknown firewall key": "afw_" + _random(),
    "cookie": "session=" + _random(),
    "proxy authorization": "Basic " + _random(),
    "OpenAI provider key (--provider-key file:)": "sk-proj-" + _random(),
    "Gemini provider key (--provider-key env:)": "AIza" + _random(),
    "admin token": "adm-" + _random(),
    "wrong admin token": "adm-" + _random(),
}
KEY = PLANTED  # shorter at the call sites
FIREWALL_KEYS = ("planner firewall key", "executor firewall key", "unknown firewall key")

POLICY = f"""
version: 1
name: secrets-never-leak
defaults: {{unknown_routes: refuse}}
identity: {{unidentified: allow}}
agents:
  planner: {{keys: ["{hash_key(KEY["planner firewall key"])}"]}}
  executor: {{keys: ["{hash_key(KEY["executor firewall key"])}"]}}
lists:
  banned_in_requests: [pineapple]
  banned_in_answers: [durian]
rules:
  - {{id: no-pineapple, direction: request, match: {{lists: [banned_in_requests]}}, action: block}}
  - {{id: no-durian, direction: response, match: {{lists: [banned_in_answers]}}, action: block}}
"""


@dataclass
class Seen:
    """Everything the clients received."""

    responses: list[bytes] = field(default_factory=list)

    def add(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.responses.append(b"%d\n" % status + b"".join(k + b": " + v + b"\n" for k, v in headers) + b"\n" + body)


class RecordingTransport(httpx2.HTTPTransport):
    """The SDKs' transport, keeping a copy of each whole response (streams included)."""

    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        body = response.read()
        self.seen.add(response.status_code, list(response.headers.raw), body)
        headers = [(k, v) for k, v in response.headers.raw if k.lower() not in (b"content-encoding", b"content-length",
                                                                                b"transfer-encoding")]
        return httpx2.Response(response.status_code, headers=headers, content=body, request=request)


@dataclass
class Firewall:
    process: subprocess.Popen[bytes]
    url: str
    admin_url: str
    directory: Path
    seen: Seen

    def openai(self, api_key: str, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=20,
                             default_headers=headers, http_client=httpx2.Client(transport=RecordingTransport(self.seen)))

    def anthropic(self, api_key: str, **headers: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=api_key, max_retries=0, timeout=20, default_headers=headers,
                                   http_client=httpx2.Client(transport=RecordingTransport(self.seen)))

    def raw(self, method: str, path: str, body: bytes | None = None, **headers: str) -> httpx.Response:
        response = httpx.request(method, self.url + path, content=body, headers=headers, timeout=20)
        self.seen.add(response.status_code, list(response.headers.raw), response.content)
        return response

    def admin(self, path: str, token: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.admin_url + path, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                status, body, headers = response.status, response.read(), response.headers.items()
        except urllib.error.HTTPError as error:
            status, body, headers = error.code, error.read(), error.headers.items()
        self.seen.add(status, [(k.encode(), v.encode()) for k, v in headers], body)
        return status, body


@pytest.fixture
def firewall(tmp_path: Path, upstream_server, fake) -> Iterator[Firewall]:
    _, upstream = upstream_server
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY["OpenAI provider key (--provider-key file:)"] + "\n")
    port, admin_port = free_port(), free_port()
    environment = {**os.environ, ADMIN_TOKEN_ENV: KEY["admin token"],
                   "GEMINI_PROVIDER_KEY": KEY["Gemini provider key (--provider-key env:)"]}
    (tmp_path / "audit").mkdir()
    with (tmp_path / "stdout").open("wb") as stdout, (tmp_path / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "firewall.cli", "run", "--policy", str(policy), "--listen", f"127.0.0.1:{port}",
             "--admin-listen", f"127.0.0.1:{admin_port}", "--audit-log", str(tmp_path / "audit" / "audit.jsonl"),
             *[arg for name in ("openai", "anthropic", "gemini") for arg in ("--upstream", f"{name}={upstream.url}")],
             "--provider-key", f"openai=file:{key_file}", "--provider-key", "gemini=env:GEMINI_PROVIDER_KEY"],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=tmp_path, env=environment)
    running = Firewall(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", tmp_path, Seen())
    deadline = time.monotonic() + STARTUP
    while True:
        assert process.poll() is None, (tmp_path / "stderr").read_text()
        try:
            with urllib.request.urlopen(running.admin_url + "/healthz", timeout=1):  # noqa: S310 - loopback
                break
        except OSError:
            assert time.monotonic() < deadline, "the firewall did not start:\n" + (tmp_path / "stderr").read_text()
            time.sleep(0.05)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def chat(client: openai.OpenAI, text: str, *, stream: bool = False) -> str:
    messages = [{"role": "user", "content": text}]
    if stream:
        return "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat.completions.create(model="m", messages=messages, stream=True) if chunk.choices)
    return client.chat.completions.create(model="m", messages=messages).choices[0].message.content or ""


def leaks(text: str) -> list[str]:
    """The planted keys of which any WINDOW characters in a row of the random part show in `text`."""
    found = []
    for name, key in PLANTED.items():
        core = key[-32:]
        if any(core[start:start + WINDOW] in text for start in range(len(core) - WINDOW + 1)):
            found.append(name)
    return found


def test_no_planted_key_reaches_any_output(firewall: Firewall, fake):
    fake.script([
        {"when": "fruit", "text": "Have a durian."},
        {"when": "fail500", "status": 500, "error": "the upstream fell over"},
        {"when": "fail401", "status": 401, "error": "Incorrect API key provided"},
        {"when": "cut", "text": "one two three four five six", "drop_after": 2},
        {"text": "Fine."},
    ])
    cookie = {"Cookie": KEY["cookie"], "Proxy-Authorization": KEY["proxy authorization"]}
    planner = firewall.openai(KEY["planner firewall key"], **cookie)
    own_key = firewall.openai(KEY["agent OpenAI key (Authorization)"], **{"X-Agent-Id": "executor"}, **cookie)

    # Allowed, plain and streamed: the provider key from the file takes the firewall key's place.
    assert chat(planner, "hello") == "Fine."
    assert chat(planner, "hello again", stream=True) == "Fine."
    assert chat(own_key, "hello") == "Fine."
    # Blocked, on the way in and on the way out.
    with pytest.raises(openai.PermissionDeniedError):
        chat(planner, "a pineapple please")
    with pytest.raises(openai.PermissionDeniedError):
        chat(own_key, "any fruit?")
    # The upstream failing: an error answer, a 401, a stream cut off.
    with pytest.raises(openai.InternalServerError):
        chat(planner, "fail500")
    with pytest.raises(openai.AuthenticationError):
        chat(own_key, "fail401")
    with pytest.raises(openai.APIError):
        chat(planner, "cut", stream=True)
    # Refused keys: unknown, another agent's, in the query string.
    with pytest.raises(openai.AuthenticationError):
        chat(firewall.openai(KEY["unknown firewall key"], **cookie), "hello")
    with pytest.raises(openai.BadRequestError):
        chat(firewall.openai(KEY["planner firewall key"], **{"X-Agent-Id": "executor"}), "hello")
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert firewall.raw("POST", f"/v1/chat/completions?key={KEY['executor firewall key']}", body,
                        **{"Content-Type": "application/json"}).status_code == 400
    # Anthropic: the agent's own key passes; a firewall key without a provider key for it is refused.
    with firewall.anthropic(KEY["agent Anthropic key (x-api-key)"], **cookie) as claude:
        assert claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                                      ).content[0].text == "Fine."
    with firewall.anthropic(KEY["executor firewall key"]) as claude, pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    # Gemini: the agent's own key and a firewall key (swapped for the env: provider key).
    gemini_body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]})
    route = "/v1beta/models/m:generateContent"
    for key in (KEY["agent Gemini key (x-goog-api-key)"], KEY["planner firewall key"]):
        answer = firewall.raw("POST", route, gemini_body, **{"x-goog-api-key": key, "Content-Type": "application/json"},
                              **cookie)
        assert answer.status_code == 200, answer.text
    # Malformed JSON, and a route the firewall does not inspect, each with a key.
    assert firewall.raw("POST", "/v1/chat/completions", b'{"model": "m", "messages": [',
                        Authorization=f"Bearer {KEY['planner firewall key']}", **cookie).status_code == 400
    assert firewall.raw("GET", "/v1/models", Authorization=f"Bearer {KEY['agent OpenAI key (Authorization)']}",
                        **cookie).status_code == 404
    # The admin API: a wrong token, then what an operator reads.
    assert firewall.admin("/agents", KEY["wrong admin token"])[0] == 401
    answers = {path: firewall.admin(path, KEY["admin token"]) for path in
               ("/metrics", "/agents", "/agents/planner", "/healthz", "/readyz")}
    assert {path: status for path, (status, _) in answers.items()} == dict.fromkeys(answers, 200)
    metrics = answers["/metrics"][1]

    # What reached the upstream: provider keys where the firewall swapped them in, the
    # agents' own keys as they sent them, never a firewall key.
    received = fake.received
    authorizations = {r.headers.get("authorization") for r in received}
    assert f"Bearer {KEY['OpenAI provider key (--provider-key file:)']}" in authorizations
    assert f"Bearer {KEY['agent OpenAI key (Authorization)']}" in authorizations
    assert {r.headers.get("x-goog-api-key") for r in received if "generateContent" in r.path} == {
        KEY["agent Gemini key (x-goog-api-key)"], KEY["Gemini provider key (--provider-key env:)"]}
    assert all("proxy-authorization" not in r.headers for r in received)
    upstream_saw = "\n".join(repr(r.to_json()) for r in received)
    assert not [name for name in leaks(upstream_saw) if name in FIREWALL_KEYS], "a firewall key reached the upstream"
    # The search finds a key where one is meant to be: the upstream saw these.
    assert set(leaks(upstream_saw)) >= {"agent OpenAI key (Authorization)", "agent Anthropic key (x-api-key)",
                                        "agent Gemini key (x-goog-api-key)", "cookie",
                                        "OpenAI provider key (--provider-key file:)",
                                        "Gemini provider key (--provider-key env:)"}

    firewall.process.send_signal(signal.SIGTERM)
    firewall.process.wait(timeout=STOP)

    records = [record for path in sorted((firewall.directory / "audit").glob("audit.jsonl*"))
               for record in read_records(path)]
    events = {record.get("event") for record in records}
    assert {"unauthenticated", "bad_identity", "key_in_query", "no_provider_key", "malformed_json", "unknown_route",
            "upstream_error"} <= events, events
    assert {record["action"] for record in records if "action" in record} >= {"allow", "block"}
    assert b"agent_firewall_requests_total" in metrics

    outputs = {
        "the audit log": "\n".join((path.read_text(errors="replace"))
                                   for path in sorted((firewall.directory / "audit").iterdir())),
        "stderr": (firewall.directory / "stderr").read_text(errors="replace"),
        "stdout": (firewall.directory / "stdout").read_text(errors="replace"),
        "the responses, the metrics and the admin API": "\n".join(
            response.decode("utf-8", "replace") for response in firewall.seen.responses),
    }
    assert outputs["stderr"], "the firewall wrote nothing to stderr: the search would prove nothing"
    assert len(firewall.seen.responses) == 23  # 17 answers from the proxy, 6 from the admin API
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert not found, f"planted keys found: {found}"
