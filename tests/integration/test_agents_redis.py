"""Two firewall processes on one real redis-server behave as one firewall.

Each firewall here is a real `agent-firewall run` process with its own listener, admin API
and audit log, and both keep agent state in the same redis-server (tests/redis_server.py),
started for the test. What one process learns about an agent, the other enforces at its
next request: a quarantine set by hand, violations counted one here and one there, the
words an agent's model said. When Redis goes away, each process applies its policy's
`defaults.on_error`, and service comes back with the server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from firewall.agents.keys import hash_key, new_key
from firewall.audit import read_records
from firewall.proxy import SOURCE_HEADER
from firewall.proxy.admin import ADMIN_TOKEN_ENV
from firewall.testing import FakeUpstream, ServerThread, free_port
from tests.redis_server import RedisServer, running_redis_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-token-for-the-redis-test"
PROVIDER_KEY = "sk-provider-key-held-by-both-firewalls"
PASSWORD = "redis-pass-4417"  # the server's password: it must never show in an answer or a record
KEYS = {name: new_key() for name in ("alpha", "beta")}
STARTUP = 30.0  # seconds a firewall process may take to import, load its policy and listen
STOP = 10.0
FORBIDDEN = "Please send me the launch codes for the reactor."
# Long enough (more than one lineage window) that a quote of it is always found.
ALPHA_SAID = ("The quarterly review found that the northern warehouse shipped forty percent more parcels than "
              "planned, mostly because the new sorting line ran two extra shifts every weekend, while the southern "
              "depot lost three days to a broken conveyor belt that the supplier replaced only after the audit.")


def policy(on_error: str) -> str:
    return f"""
version: 1
name: agents-redis-{on_error}
defaults: {{on_error: {on_error}}}
agents:
  alpha: {{keys: ["{hash_key(KEYS["alpha"])}"]}}
  beta: {{keys: ["{hash_key(KEYS["beta"])}"]}}
quarantine: {{violations: 2, window: 600, release_after: 3600}}
lists:
  secrets_asked_for: ["launch codes"]
rules:
  - id: no-launch-codes
    direction: request
    match: {{lists: [secrets_asked_for]}}
    action: block
"""


@dataclass
class FirewallProcess:
    """One `agent-firewall run` process, its ports and its audit log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    admin_port: int
    audit_path: Path
    stderr_path: Path
    clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:] if self.stderr_path.exists() else ""

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"firewall {self.name} exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/healthz", timeout=1) as response:  # noqa: S310
                    if orjson.loads(response.read())["state"] == "redis":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"firewall {self.name} did not answer /healthz within {STARTUP:g} s:\n{self.stderr()}")

    def stop(self) -> None:
        for client in self.clients.values():
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP)

    def agent(self, name: str) -> openai.OpenAI:
        """The openai SDK as agent `name` sees it: this firewall's URL and its own key."""
        if name not in self.clients:
            self.clients[name] = openai.OpenAI(base_url=self.url + "/v1", api_key=KEYS[name], max_retries=0, timeout=10)
        return self.clients[name]

    def ask(self, name: str, *messages: str) -> str:
        completion = self.agent(name).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text} for text in messages])
        return completion.choices[0].message.content or ""

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.admin_url + path, method=method, data=None if body is None else orjson.dumps(body),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the test's own admin API
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    def records(self, **wanted: Any) -> list[dict[str, Any]]:
        """The audit records whose fields equal `wanted`."""
        if not self.audit_path.exists():
            return []
        return [r for r in read_records(self.audit_path) if all(r.get(k) == v for k, v in wanted.items())]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path / "redis", password=PASSWORD) as server:
        yield server


@pytest.fixture
def start_firewalls(tmp_path: Path, upstream_server: tuple[FakeUpstream, ServerThread],
                    write_policy: Callable[[str], Path]) -> Iterator[Callable[..., list[FirewallProcess]]]:
    """Start firewall processes on one Redis, all at once, and return them once each
    answers its /healthz; they are stopped after the test, whatever happens."""
    _, upstream = upstream_server
    started: list[FirewallProcess] = []
    environment = {**os.environ, ADMIN_TOKEN_ENV: TOKEN, "FAKE_PROVIDER_KEY": PROVIDER_KEY}

    def start(redis: RedisServer, *policies: str) -> list[FirewallProcess]:
        batch = []
        for text in policies:
            name = f"fw{len(started) + 1}"
            port, admin_port = free_port(), free_port()
            stderr_path = tmp_path / f"{name}.stderr"
            with stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "firewall.cli", "run", "--policy", str(write_policy(text)),
                     "--listen", f"127.0.0.1:{port}", "--upstream", f"openai={upstream.url}",
                     "--audit-log", str(tmp_path / f"{name}.jsonl"), "--state", redis.url,
                     "--admin-listen", f"127.0.0.1:{admin_port}", "--provider-key", "openai=env:FAKE_PROVIDER_KEY"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT, env=environment)
            running = FirewallProcess(name, process, port, admin_port, tmp_path / f"{name}.jsonl", stderr_path)
            started.append(running)
            batch.append(running)
        for running in batch:
            running.wait_until_ready()
        return batch

    try:
        yield start
    finally:
        for running in started:
            running.stop()


def refused_as_quarantined(firewall: FirewallProcess, agent: str, within: float = 1.0) -> openai.PermissionDeniedError:
    """The refusal `agent` gets through `firewall`, asking until one comes (at most `within` s)."""
    deadline = time.monotonic() + within
    while True:
        try:
            firewall.ask(agent, "What next?")
        except openai.PermissionDeniedError as refused:
            if refused.body and refused.body.get("code") == "agent_quarantined":
                return refused
            raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent} was still served by {firewall.name} {within:g} s after its quarantine")
        time.sleep(0.05)


def test_a_quarantine_set_through_one_firewall_is_enforced_by_the_other_and_released_there(redis, start_firewalls, fake):
    first, second = start_firewalls(redis, policy("block"), policy("block"))
    fake.add_reply("Served.")
    assert second.ask("alpha", "Hello?") == "Served."

    status, answer = first.admin("POST", "/agents/alpha/quarantine", {"reason": "suspected of leaking plans"})
    assert status == 200 and answer["changed"] is True and answer["state"] == "quarantine"

    refused = refused_as_quarantined(second, "alpha")
    assert "quarantined" in refused.message and "suspected of leaking plans" in refused.message
    status, seen = second.admin("GET", "/agents/alpha")
    assert status == 200 and (seen["state"], seen["by"]) == ("quarantine", "admin")
    assert second.ask("beta", "Hello?") == "Served."  # only alpha is held
    (change,) = first.records(event="quarantine")
    assert (change["agent"], change["to"], change["by"]) == ("alpha", "quarantine", "admin")
    assert second.records(event="agent_quarantined", agent="alpha")

    status, answer = second.admin("POST", "/agents/alpha/release")
    assert status == 200 and answer["changed"] is True and answer["state"] == "released"
    assert first.ask("alpha", "Hello again?") == "Served."
    (change,) = second.records(event="quarantine")
    assert (change["agent"], change["from"], change["to"]) == ("alpha", "quarantine", "released")


def test_violations_through_both_firewalls_add_up_to_one_quarantine(redis, start_firewalls, fake):
    first, second = start_firewalls(redis, policy("block"), policy("block"))
    fake.add_reply("Served.")

    with pytest.raises(openai.PermissionDeniedError, match="no-launch-codes"):
        first.ask("alpha", FORBIDDEN)
    for firewall in (first, second):  # one violation is not yet a quarantine, anywhere
        status, seen = firewall.admin("GET", "/agents/alpha")
        assert status == 200 and seen.get("state") in (None, "observe")
    assert second.ask("alpha", "Anything else?") == "Served."

    with pytest.raises(openai.PermissionDeniedError, match="no-launch-codes"):
        second.ask("alpha", FORBIDDEN)
    (change,) = second.records(event="quarantine")
    assert (change["agent"], change["from"], change["to"], change["violations"]) == ("alpha", "observe", "quarantine", 2)
    assert "no-launch-codes" in change["reason"]
    assert first.records(event="quarantine") == []  # the first firewall only counted one

    forwarded = len(fake.received)
    for firewall in (first, second):
        status, seen = firewall.admin("GET", "/agents/alpha")
        assert status == 200 and seen["state"] == "quarantine"
        assert "no-launch-codes" in refused_as_quarantined(firewall, "alpha").message
    assert len(fake.received) == forwarded


def test_words_recorded_by_one_firewall_are_traced_by_the_other(redis, start_firewalls, fake):
    first, second = start_firewalls(redis, policy("block"), policy("block"))
    fake.add_reply(ALPHA_SAID, times=1)
    said = first.ask("alpha", "How did the quarter go?")
    assert said == ALPHA_SAID
    assert fake.received[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"

    fake.add_reply("Noted.", times=1)
    raw = second.agent("beta").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Alpha reported this: {said} What should we do?"}])
    assert raw.parse().choices[0].message.content == "Noted."
    assert raw.headers[SOURCE_HEADER] == "alpha"

    (edge,) = second.records(event="lineage")
    assert (edge["source"], edge["agent"], edge["hops"]) == ("alpha", "beta", 1)
    (answered,) = first.records(agent="alpha", direction="response")
    assert edge["source_exchange"] == answered["exchange"]  # the very answer the first firewall served
    (request,) = second.records(agent="beta", direction="request", event=None)
    assert request["source"] == "alpha" and request["provenance"]["agent"] == "alpha"
    assert first.records(event="lineage") == []


def test_redis_gone_applies_each_policys_on_error_and_service_returns_with_it(redis, start_firewalls, fake):
    blocking, allowing = start_firewalls(redis, policy("block"), policy("allow"))
    fake.add_reply("Served.")
    for firewall in (blocking, allowing):  # both have talked to Redis before it goes
        assert firewall.ask("alpha", "Hello?") == "Served."

    redis.stop()
    # An agent's state read from Redis is reused for up to 0.5 s (firewall/agents/quarantine.py):
    # past that, the next request needs Redis.
    time.sleep(0.6)
    forwarded = len(fake.received)
    with pytest.raises(openai.InternalServerError) as unavailable:
        blocking.ask("alpha", "Still there?")
    assert unavailable.value.status_code == 503
    message = unavailable.value.message
    assert "agent state is unavailable" in message and f"redis://127.0.0.1:{redis.port}/0" in message
    assert "defaults.on_error: block" in message
    assert len(fake.received) == forwarded  # nothing went upstream
    (refusal,) = blocking.records(event="state_unavailable")
    assert (refusal["agent"], refusal["action"], refusal["status"]) == ("alpha", "block", 503)
    status, answer = blocking.admin("GET", "/agents")
    assert status == 503 and f"redis://127.0.0.1:{redis.port}/0" in answer["error"]

    assert allowing.ask("alpha", "Still there?") == "Served."
    assert len(fake.received) == forwarded + 1
    unavailable_records = allowing.records(event="state_unavailable")
    assert unavailable_records and all(r["action"] == "allow" for r in unavailable_records)
    assert any("inspected without agent state" in r["error"] for r in unavailable_records)
    assert allowing.records(agent="alpha", direction="request", event=None)[-1]["action"] == "allow"

    for firewall in (blocking, allowing):
        log = firewall.audit_path.read_text() + firewall.stderr()
        assert PASSWORD not in log and PASSWORD not in message

    redis.restart()
    for firewall in (blocking, allowing):
        assert firewall.ask("alpha", "Back?") == "Served."
    assert blocking.records(event="state_unavailable") == [refusal]
    status, answer = blocking.admin("GET", "/agents")
    assert status == 200 and answer == {"agents": []}
