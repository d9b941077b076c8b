"""The admin API: a token on every route but /healthz, agents and their state, policy
reload that keeps a running policy when the new one has mistakes, Prometheus metrics;
reload by SIGHUP and by a change to the file; reload under load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from firewall.proxy.admin import ADMIN_TOKEN_ENV, admin_app
from firewall.testing import ServerThread, free_port

TOKEN = "a-long-enough-admin-token"
POLICY = """
version: 1
name: {name}
identity: {{unidentified: allow}}
lists: {{banned: [{banned}]}}
rules:
  - id: no-banned-words
    match: {{lists: [banned]}}
    action: block
"""


def call(url: str, method: str = "GET", body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = orjson.dumps(body) if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw.decode()


@pytest.fixture
def admin(start_firewall, tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(name="first", banned="pineapple"))
    running = start_firewall(policy)
    server = ServerThread(admin_app(running.firewall, TOKEN), name="admin").start()
    yield running, server.url, policy
    server.stop()


def ask(running, text: str) -> str:
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                          default_headers={"X-Agent-Id": "planner"})
    completion = agent.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content or ""


def test_every_route_but_health_needs_the_token(admin):
    _, url, _ = admin
    assert call(url + "/healthz", token=None) == (200, {"status": "ok", "policy": "first", "state": "memory"})
    for route, method in (("/agents", "GET"), ("/agents/x", "GET"), ("/agents/x/quarantine", "POST"),
                          ("/policy/reload", "POST"), ("/metrics", "GET")):
        assert call(url + route, method, token=None)[0] == 401, route
        assert call(url + route, method, token=TOKEN + "x")[0] == 401, route
    with pytest.raises(ValueError, match="at least 16"):
        admin_app(object(), "short")


def test_agents_can_be_quarantined_listed_and_released(admin, fake):
    running, url, _ = admin
    assert call(url + "/agents") == (200, {"agents": []})
    status, body = call(url + "/agents/planner/quarantine", "POST", {"reason": "looks odd", "ttl": 60})
    assert status == 200 and body["changed"] and body["state"] == "quarantine" and body["until"] - body["since"] == 60
    assert call(url + "/agents/planner/quarantine", "POST")[1]["changed"] is False
    assert [a["agent"] for a in call(url + "/agents")[1]["agents"]] == ["planner"]
    with pytest.raises(openai.PermissionDeniedError, match="looks odd"):
        ask(running, "hello")
    assert call(url + "/agents/planner/release", "POST")[1]["state"] == "released"
    fake.add_reply("hi", times=1)
    assert ask(running, "hello") == "hi"
    assert call(url + "/agents/bad%20id")[0] == 400
    assert call(url + "/agents/planner/quarantine", "POST", {"ttl": -1})[0] == 400
    transitions = [r for r in running.records() if r.get("event") == "quarantine"]
    assert [(t["to"], t["by"]) for t in transitions] == [("quarantine", "admin"), ("released", "admin")]


def test_reload_swaps_the_policy_and_refuses_one_with_mistakes(admin, fake):
    running, url, path = admin
    fake.add_reply("ok")
    assert ask(running, "I like mango") == "ok"
    first = running.firewall.policy.sha256

    path.write_text(POLICY.format(name="second", banned="mango"))
    status, body = call(url + "/policy/reload", "POST")
    assert status == 200 and body == {"reloaded": True, "policy": "second", "sha256": body["sha256"], "previous": first}
    with pytest.raises(openai.PermissionDeniedError, match="no-banned-words"):
        ask(running, "I like mango")
    assert ask(running, "pineapple is fine now") == "ok"

    path.write_text(POLICY.format(name="third", banned="kiwi").replace("action: block", "action: explode"))
    status, body = call(url + "/policy/reload", "POST")
    assert status == 422 and body["reloaded"] is False and body["policy"] == "second"
    assert any("action" in problem for problem in body["problems"])
    with pytest.raises(openai.PermissionDeniedError):
        ask(running, "mango again")  # the second policy still runs

    reloads = [r for r in running.records() if r.get("event") == "policy_reload"]
    assert [(r["from"]["name"], r["to"]["name"]) for r in reloads] == [("first", "second")]
    deciders = {r["policy"]["name"] for r in running.records() if r.get("direction") == "request"}
    assert deciders == {"first", "second"}


def test_a_request_in_flight_finishes_under_the_policy_it_started_with(admin, fake):
    running, url, path = admin
    fake.add_reply("slow answer about mango", delay=1.0, times=1)
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append(ask(running, "tell me a fruit")))
    worker.start()
    deadline = time.monotonic() + 5
    while not fake.received and time.monotonic() < deadline:
        time.sleep(0.01)
    path.write_text(POLICY.format(name="second", banned="mango"))
    assert call(url + "/policy/reload", "POST")[0] == 200
    worker.join(timeout=10)
    # the answer names mango, which the new policy bans: the old one decided it
    assert answers == ["slow answer about mango"]
    response = [r for r in running.records() if r.get("direction") == "response"][0]
    assert response["policy"]["name"] == "first"


def test_metrics_count_requests_decisions_and_quarantined_agents(admin, fake):
    running, url, _ = admin
    fake.add_reply("fine", times=1)
    ask(running, "hello")
    with pytest.raises(openai.PermissionDeniedError):
        ask(running, "pineapple")
    call(url + "/agents/planner/quarantine", "POST")
    status, text = call(url + "/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert 'agent_firewall_requests_total{route="openai_chat",status="200"} 1.0' in lines
    assert 'agent_firewall_requests_total{route="openai_chat",status="403"} 1.0' in lines
    assert 'agent_firewall_decisions_total{action="block",direction="request",rule="no-banned-words"} 1.0' in lines
    assert "agent_firewall_agents_quarantined 1.0" in lines
    assert any(line.startswith("agent_firewall_upstream_seconds_count") for line in lines)
    assert not any(line.startswith("agent_firewall_detector_seconds_count{") for line in lines)  # no detector ran


@pytest.mark.parametrize("trigger", ["SIGHUP", "file change"])
def test_a_signal_or_a_file_change_reloads_the_policy_and_a_broken_file_keeps_the_old_one(
        tmp_path: Path, upstream_server, trigger: str):
    fake_upstream, upstream = upstream_server
    fake_upstream.reset()
    fake_upstream.add_reply("ok")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(name="first", banned="pineapple"))
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "firewall.cli", "run", "--policy", str(path), "--listen", f"127.0.0.1:{port}",
         "--upstream", f"openai={upstream.url}", "--admin-listen", f"127.0.0.1:{admin_port}",
         *(["--watch-policy"] if trigger == "file change" else [])],
        env={**os.environ, ADMIN_TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(f"http://127.0.0.1:{admin_port}/healthz", token=None)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)

        class Running:
            openai_base = f"http://127.0.0.1:{port}/v1"

        assert ask(Running, "mango") == "ok"
        path.write_text(POLICY.format(name="second", banned="mango"))
        if trigger == "SIGHUP":
            process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while call(f"http://127.0.0.1:{admin_port}/healthz", token=None)[1]["policy"] != "second":
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        with pytest.raises(openai.PermissionDeniedError):
            ask(Running, "mango")
        path.write_text("version: 1\nname: broken\nrules: [{id: x}]\n")
        if trigger == "SIGHUP":
            process.send_signal(signal.SIGHUP)
        time.sleep(0.5 if trigger == "SIGHUP" else 2.5)  # the file is checked every second
        assert call(f"http://127.0.0.1:{admin_port}/healthz", token=None)[1]["policy"] == "second"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert "reload: policy second" in stderr and "has mistakes; policy second" in stderr


def test_hot_reload_under_load_fails_no_request_and_mixes_no_policies(admin, fake):
    running, url, path = admin
    fake.add_reply("ok")
    banned = {"first": "pineapple", "second": "mango"}
    stop = threading.Event()
    outcomes: list[tuple[str, int]] = []

    def load() -> None:
        agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                              default_headers={"X-Agent-Id": "planner"})
        words = ["pineapple", "mango", "kiwi"]
        while not stop.is_set():
            word = words[len(outcomes) % 3]
            try:
                agent.chat.completions.create(model="m", messages=[{"role": "user", "content": f"I like {word}"}])
                outcomes.append((word, 200))
            except openai.APIStatusError as error:
                outcomes.append((word, error.status_code))

    # (the agent's blocks must not quarantine it: this test is about reloads)
    no_quarantine = "quarantine: {violations: 0}\n"
    path.write_text(POLICY.format(name="first", banned=banned["first"]) + no_quarantine)
    assert call(url + "/policy/reload", "POST")[0] == 200
    worker = threading.Thread(target=load)
    worker.start()
    try:
        for round_ in range(8):
            name = "second" if round_ % 2 == 0 else "first"
            path.write_text(POLICY.format(name=name, banned=banned[name]) + no_quarantine)
            assert call(url + "/policy/reload", "POST")[0] == 200
            path.write_text("version: 1\nname: broken\nrules: [{id: x}]\n")
            assert call(url + "/policy/reload", "POST")[0] == 422  # the last good policy stays
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert len(outcomes) > 40
    assert {status for _, status in outcomes} <= {200, 403}  # no request failed
    # one client, one request at a time: the n-th request record is the n-th outcome. Each
    # was decided by one whole policy: blocked exactly when the policy it names bans its word.
    requests = [r for r in running.records() if r.get("direction") == "request" and "messages" in r]
    assert len(requests) == len(outcomes)
    for (word, status), record in zip(outcomes, requests, strict=True):
        policy = record["policy"]["name"]
        assert policy in banned
        assert (record["action"] == "block") == (banned[policy] == word) == (status == 403)
    assert {record["policy"]["name"] for record in requests} == {"first", "second"}
