"""Graceful operation: on SIGTERM a firewall process stops taking connections, lets what is
in flight finish up to --drain-seconds, ends the rest in the SDK's terms, closes a log that
verifies and exits 0; /healthz says alive, /readyz says ready to take traffic (and why not)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from firewall.audit import AuditWriter, read_records, verify
from firewall.policy import load_policy_file
from firewall.proxy import Firewall, ProxyConfig
from firewall.proxy.admin import ADMIN_TOKEN_ENV, admin_app, readiness
from firewall.testing import ServerThread, free_port
from tests.redis_server import running_redis_server

TOKEN = "a-long-enough-admin-token"
POLICY = """
version: 1
name: graceful
identity: {unidentified: allow}
lists: {banned: [pineapple]}
rules:
  - id: no-banned-words
    match: {lists: [banned]}
    action: block
"""
WORDS = " ".join(f"w{number}" for number in range(40))


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _wait(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


@dataclass
class FirewallProcess:
    process: subprocess.Popen[str]
    port: int
    admin_port: int
    audit_path: Path

    @property
    def openai_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def admin(self, route: str) -> tuple[int, Any]:
        return get(f"http://127.0.0.1:{self.admin_port}{route}")

    def refuses_connections(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except ConnectionRefusedError:
            return True
        return False

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr


@pytest.fixture
def run_firewall(tmp_path: Path, upstream_server) -> Iterator[Any]:
    _, upstream = upstream_server
    processes: list[subprocess.Popen[str]] = []

    def start(drain_seconds: float) -> FirewallProcess:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        port, admin_port = free_port(), free_port()
        audit_path = tmp_path / f"audit-{len(processes)}.jsonl"
        process = subprocess.Popen(
            [sys.executable, "-m", "firewall.cli", "run", "--policy", str(policy), "--listen", f"127.0.0.1:{port}",
             "--upstream", f"openai={upstream.url}", "--admin-listen", f"127.0.0.1:{admin_port}",
             "--audit-log", str(audit_path), "--drain-seconds", str(drain_seconds)],
            env={**os.environ, ADMIN_TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        running = FirewallProcess(process, port, admin_port, audit_path)

        def ready() -> bool:
            assert process.poll() is None, process.communicate()[1]
            try:
                return running.admin("/readyz")[0] == 200
            except OSError:
                return False

        _wait(ready, "the firewall process to be ready")
        return running

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base, api_key="sk-x", max_retries=0, timeout=120,
                         default_headers={"X-Agent-Id": "planner"})


def test_sigterm_lets_a_stream_in_flight_finish_refuses_new_connections_and_exits_0(run_firewall, fake):
    fake.add_reply(WORDS, chunk_delay=0.1)
    running = run_firewall(drain_seconds=60)
    stream = client(running.openai_base).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "tell me"}], stream=True)
    parts = iter(stream)
    received = next(parts).choices[0].delta.content or ""  # the stream is in flight
    running.process.send_signal(signal.SIGTERM)
    _wait(lambda: running.admin("/readyz")[1]["draining"], "the firewall to start draining")
    status, ready = running.admin("/readyz")
    assert status == 503 and ready["problems"] == ["draining: the firewall is shutting down and takes no new request"]
    assert running.admin("/healthz")[0] == 200  # alive while it drains
    assert running.refuses_connections()
    received += "".join(part.choices[0].delta.content or "" for part in parts if part.choices)
    assert received == WORDS

    _, stderr = running.process.communicate(timeout=60)
    assert running.process.returncode == 0, stderr
    assert "1 request(s) in flight get up to 60 s" in stderr
    assert verify(running.audit_path).ok
    records = list(read_records(running.audit_path))
    assert [(r["direction"], r["action"]) for r in records] == [("request", "allow"), ("response", "allow")]
    assert list(records[1]["response"]["text"].values()) == [WORDS]
    assert records[1].get("note") is None


def test_a_stream_and_a_request_longer_than_the_deadline_are_ended_cleanly_and_recorded(run_firewall, fake):
    fake.add_reply(WORDS, when="stream", chunk_delay=30)
    fake.add_reply("too late", when="slow", delay=120)
    running = run_firewall(drain_seconds=1)
    errors: list[BaseException] = []

    def slow_request() -> None:
        try:
            client(running.openai_base).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "slow one"}])
        except openai.APIStatusError as error:
            errors.append(error)

    waiting = threading.Thread(target=slow_request)
    waiting.start()
    stream = client(running.openai_base).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "stream one"}], stream=True)
    # create() returns once the firewall has sent the stream's headers: it is in flight
    _wait(lambda: len(fake.received) == 2, "both requests to reach the upstream")
    running.process.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError, match="firewall is shutting down"):
        for _ in stream:
            pass
    waiting.join(timeout=60)
    assert len(errors) == 1 and errors[0].status_code == 503
    assert "shut down before the upstream answered" in errors[0].message

    _, stderr = running.process.communicate(timeout=60)
    assert running.process.returncode == 0, stderr
    assert "2 request(s) still running after 1 s were ended" in stderr
    assert verify(running.audit_path).ok
    records = list(read_records(running.audit_path))
    stream_record = next(r for r in records if r.get("direction") == "response" and r.get("stream"))
    assert "drain deadline passed" in stream_record["note"]
    cut = next(r for r in records if r.get("event") == "shutdown_cut_off")
    assert cut["status"] == 503 and cut["direction"] == "response"


# -- in process: readiness, and a request that arrives while draining ---------------------------


@pytest.fixture
def serve(tmp_path: Path, upstream_server) -> Iterator[Any]:
    _, upstream = upstream_server
    servers: list[ServerThread] = []
    writers: list[AuditWriter] = []

    def start(**config: Any) -> tuple[Firewall, ServerThread, str]:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        audit = AuditWriter(tmp_path / f"audit-{len(writers)}.jsonl")
        writers.append(audit)
        settings = {"port": 0, "upstreams": {"openai": upstream.url}} | config
        firewall = Firewall(ProxyConfig(**settings), load_policy_file(policy), audit)
        proxy = ServerThread(firewall.app, name="firewall").start()
        admin = ServerThread(admin_app(firewall, TOKEN), name="admin").start()
        servers.extend((admin, proxy))
        return firewall, proxy, admin.url

    yield start
    for server in servers:
        server.stop()
    for audit in writers:
        audit.close()


def test_a_request_that_arrives_while_draining_gets_a_provider_shaped_503(serve, fake):
    firewall, proxy, admin = serve()
    assert proxy.call(firewall.drain(5)) == 0
    with pytest.raises(openai.APIStatusError) as raised:
        client(proxy.url + "/v1").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503 and "shutting down" in raised.value.message
    assert fake.received == []
    record = list(read_records(firewall.audit.path))[-1]
    assert record["event"] == "draining" and record["status"] == 503
    status, ready = get(admin + "/readyz")
    assert status == 503 and ready["draining"] is True


def test_readyz_is_ready_then_says_why_not_when_the_audit_log_cannot_be_written(serve, fake):
    firewall, proxy, admin = serve()
    status, ready = get(admin + "/readyz")
    assert status == 200 and ready == {"ready": True, "policy": "graceful", "policy_sha256": firewall.policy.sha256,
                                       "state": "memory", "draining": False, "problems": []}
    firewall.audit.path.unlink()  # gone under the firewall's feet (a careless log rotation)
    status, ready = get(admin + "/readyz")
    assert status == 503 and ready["problems"] == [
        f"audit log: {firewall.audit.path} cannot be appended to (No such file or directory)"]

    firewall.audit.path.touch()
    firewall.audit.close()  # every write fails from now on
    with pytest.raises(openai.APIStatusError) as raised:
        client(proxy.url + "/v1").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503
    status, ready = get(admin + "/readyz")
    assert status == 503 and len(ready["problems"]) == 1
    assert ready["problems"][0].startswith("audit log: the last write failed (") and "closed" in ready["problems"][0]


def test_readyz_says_not_ready_while_the_shared_state_is_unreachable(serve, tmp_path: Path):
    with running_redis_server(tmp_path / "redis") as redis:
        firewall, proxy, _ = serve(state=redis.url)
        # on the firewall's own loop, as in a process serving both (the redis client is bound to one loop)
        assert proxy.call(readiness(firewall)) == []
        redis.stop()
        problems = proxy.call(readiness(firewall))
        assert len(problems) == 1 and problems[0].startswith("agent state (redis) unavailable:")
        redis.restart()
        _wait(lambda: proxy.call(readiness(firewall)) == [], "readiness to come back with redis")


def test_draining_a_firewall_with_nothing_in_flight_returns_at_once(serve):
    firewall, proxy, _ = serve()
    assert proxy.call(firewall.drain(3600), timeout=30) == 0


def test_a_drain_ends_when_the_last_request_in_flight_does_not_at_its_deadline(serve, fake):
    # The request arrives on a connection the client keeps alive afterwards: what the drain
    # waits for is the request's handler, not the connection (which outlives it).
    fake.add_reply("slow answer", delay=0.5)
    firewall, proxy, _ = serve()
    answers: list[str] = []
    agent = client(proxy.url + "/v1")
    asking = threading.Thread(target=lambda: answers.append(agent.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content or ""))
    asking.start()
    _wait(lambda: firewall.in_flight == 1, "the request to be in flight")
    assert proxy.call(firewall.drain(3600), timeout=30) == 0  # not 3,600 s, nor cut off
    asking.join(timeout=30)
    assert answers == ["slow answer"] and firewall.in_flight == 0


def test_a_negative_drain_deadline_is_a_usage_error(capsys):
    from firewall.cli import EXIT_USAGE, main

    assert main(["run", "--policy", str(Path(__file__).parents[2] / "policies" / "default.yaml"), "--drain-seconds", "-1"]) == EXIT_USAGE
    assert "--drain-seconds -1: expected a number of seconds, 0 or more" in capsys.readouterr().err
