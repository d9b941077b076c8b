"""`agent-firewall replay`: exchanges recorded through the proxy, decided again under a
stricter policy; exactly those that change are listed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai

RECORDING = """
version: 1
name: lenient
identity: {unidentified: allow}
audit: {messages: true}
lists: {fruit: [pineapple]}
rules:
  - {id: no-pineapple, match: {lists: [fruit]}, action: block}
"""
STRICTER = """
version: 1
name: strict
identity: {unidentified: allow}
lists: {fruit: [pineapple, mango], secrets_words: [password]}
rules:
  - {id: no-pineapple, match: {lists: [fruit]}, action: block}
  - {id: tag-passwords, match: {lists: [secrets_words]}, action: {tag: password-talk}}
"""
KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firewall.cli", "replay", *args], capture_output=True, text=True,
                          timeout=120)


def test_replay_under_a_stricter_policy_lists_exactly_what_changes(start_firewall, fake, write_policy, tmp_path: Path):
    running = start_firewall(RECORDING)
    fake.add_reply("Noted.")
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                          default_headers={"X-Agent-Id": "planner"})
    ids = {}
    for name, text in (("mango", "I like mango"), ("kiwi", "I like kiwi"), ("password", "what is the password policy"),
                       ("pineapple", "I like pineapple")):
        try:
            raw = agent.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": text}])
            ids[name] = raw.headers["X-Firewall-Exchange-Id"]
        except openai.PermissionDeniedError as error:
            ids[name] = error.response.headers["X-Firewall-Exchange-Id"]
    records = running.records()
    request = next(r for r in records if r["exchange"] == ids["mango"] and r["direction"] == "request")
    assert request["content"] == [{"role": "user", "parts": [{"text": "I like mango", "kind": "text"}]}]

    strict = write_policy(STRICTER)
    done = replay(str(running.audit_path), "--policy", str(strict))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # 4 requests and the 3 answers that were not blocked
    assert out.splitlines()[0].startswith("replayed 7 exchanges under strict") and "2 would change" in out
    assert "newly blocked: 1" in out and f"no-pineapple: 1  (e.g. {ids['mango']})" in out
    assert "other changes (tags, redactions, rules): 1" in out and f"tag-passwords: 1  (e.g. {ids['password']})" in out
    assert "newly allowed" not in out

    changes = [json.loads(line) for line in replay(str(running.audit_path), "--policy", str(strict), "--json").stdout.splitlines()]
    assert {(c["exchange"], c["direction"], c["before"], c["after"]) for c in changes} == {
        (ids["mango"], "request", "allow", "block"), (ids["password"], "request", "allow", "tag")}
    assert replay(str(running.audit_path), "--policy", str(strict), "--fail-on-change").returncode == 1
    same = write_policy(RECORDING)
    assert replay(str(running.audit_path), "--policy", str(same), "--fail-on-change").returncode == 0


def test_records_without_messages_are_counted_not_guessed(start_firewall, fake, write_policy):
    running = start_firewall(RECORDING.replace("audit: {messages: true}", "audit: {messages: false}"))
    fake.add_reply("Noted.")
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                          default_headers={"X-Agent-Id": "planner"})
    agent.chat.completions.create(model="m", messages=[{"role": "user", "content": f"use {KEY}"}])
    assert all("content" not in r for r in running.records())
    done = replay(str(running.audit_path), "--policy", str(write_policy(STRICTER)))
    assert "replayed 0 exchanges" in done.stdout and "not replayable: 2 exchange records" in done.stdout


def test_stored_messages_are_kept_as_forwarded_with_secrets_redacted(start_firewall, fake):
    policy = RECORDING + """  - id: redact-keys
    match: {detect: [secrets]}
    action: {redact: "[KEY]"}
detectors: {secrets: {}}
"""
    running = start_firewall(policy)
    fake.add_reply("Noted.")
    agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                          default_headers={"X-Agent-Id": "planner"})
    agent.chat.completions.create(model="m", messages=[{"role": "user", "content": f"my key is {KEY}"}])
    log = running.audit_path.read_text()
    assert KEY not in log and "my key is [KEY]" in log
