"""Prometheus metrics on the admin listener, scraped after real traffic through the proxy
(the OpenAI and Anthropic SDKs, streamed and not, allowed, redacted and blocked): each
series the operations guide names is there, with the value the traffic implies."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firewall.proxy.admin import admin_app
from firewall.testing import ServerThread

TOKEN = "a-long-enough-admin-token"
POLICY = """
version: 1
name: metrics
identity: {unidentified: allow}
lists: {banned: [pineapple]}
rules:
  - id: no-banned-words
    match: {lists: [banned]}
    action: block
  - id: redact-secrets
    direction: request
    match: {detect: [secrets]}
    action: {redact: "[REDACTED:{label}]"}
quarantine: {violations: 0}
"""
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(admin: str) -> Samples:
    request = urllib.request.Request(admin + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def firewall(start_firewall, tmp_path: Path) -> Iterator[Any]:
    running = start_firewall(POLICY)
    server = ServerThread(admin_app(running.firewall, TOKEN), name="admin").start()
    yield running, server.url
    server.stop()


def oai(running: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_base, api_key="sk-x", max_retries=0,
                         default_headers={"X-Agent-Id": "planner"})


def ant(running: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key="sk-ant-x", max_retries=0,
                               default_headers={"X-Agent-Id": "writer"})


def test_metrics_after_real_traffic(firewall, fake):
    running, admin = firewall
    fake.add_reply("a plain answer", when="plain")
    fake.add_reply("one two three four five six", when="stream")
    fake.add_reply("an answer from claude", when="claude")
    chat = oai(running)
    chat.chat.completions.create(model="m", messages=[{"role": "user", "content": "plain question"}])
    # a secret the detector finds and the rule redacts before it leaves
    chat.chat.completions.create(model="m", messages=[{"role": "user", "content": "plain: my token is "
                                                       "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}])
    with pytest.raises(openai.PermissionDeniedError):
        chat.chat.completions.create(model="m", messages=[{"role": "user", "content": "a pineapple please"}])
    streamed = "".join(part.choices[0].delta.content or "" for part in chat.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "stream it"}], stream=True) if part.choices)
    assert streamed == "one two three four five six"
    ant(running).messages.create(model="claude-fake-1", max_tokens=64, messages=[{"role": "user", "content": "claude?"}])
    running.records(at_least=8)  # the stream's record is written after its last byte

    samples = scrape(admin)
    requests = {dict(labels)["status"] + " " + dict(labels)["route"]: count
                for (name, labels), count in samples.items() if name == "agent_firewall_requests_total"}
    assert requests == {"200 openai_chat": 3.0, "403 openai_chat": 1.0, "200 anthropic_messages": 1.0}
    assert value(samples, "agent_firewall_decisions_total", direction="request", action="block",
                 rule="no-banned-words") == 1.0
    assert value(samples, "agent_firewall_decisions_total", direction="request", action="redact",
                 rule="redact-secrets") == 1.0
    assert value(samples, "agent_firewall_decisions_total", direction="request", action="allow", rule="-") == 3.0
    # responses: three answered whole; the stream is decided by its guard, not counted here
    assert value(samples, "agent_firewall_decisions_total", direction="response", action="allow", rule="-") == 3.0
    # the secrets detector ran on the new texts of every request (5), never on a response (direction: request)
    assert value(samples, "agent_firewall_detector_seconds_count", detector="secrets") == 5.0
    assert value(samples, "agent_firewall_detector_seconds_bucket", detector="secrets", le="+Inf") == 5.0
    assert value(samples, "agent_firewall_upstream_seconds_count", provider="openai") == 3.0  # the blocked one never left
    assert value(samples, "agent_firewall_upstream_seconds_count", provider="anthropic") == 1.0
    assert value(samples, "agent_firewall_stream_holdback_chars_count") == 1.0
    # "pineapple" is 9 characters: a stream holds back at most that much, never more than 16
    assert value(samples, "agent_firewall_stream_holdback_chars_bucket", le="16.0") == 1.0
    assert value(samples, "agent_firewall_agents_quarantined") == 0.0
    assert value(samples, "agent_firewall_audit_write_errors_total") == 0.0
    assert value(samples, "agent_firewall_in_flight") == 0.0
    assert value(samples, "agent_firewall_draining") == 0.0


def test_quarantined_agents_gauge_follows_quarantine_and_release(firewall, fake):
    running, admin = firewall
    for agent in ("planner", "executor"):
        request = urllib.request.Request(f"{admin}/agents/{agent}/quarantine", data=b"{}", method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(request, timeout=10).close()
    assert value(scrape(admin), "agent_firewall_agents_quarantined") == 2.0
    with pytest.raises(openai.PermissionDeniedError):
        oai(running).chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert fake.received == []
    request = urllib.request.Request(f"{admin}/agents/planner/release", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    urllib.request.urlopen(request, timeout=10).close()
    samples = scrape(admin)
    assert value(samples, "agent_firewall_agents_quarantined") == 1.0
    assert value(samples, "agent_firewall_agent_events_total", event="quarantine") == 3.0  # two in, one out
    assert value(samples, "agent_firewall_requests_total", route="openai_chat", status="403") == 1.0


def test_audit_write_errors_are_counted_and_the_request_is_refused(firewall, fake):
    running, admin = firewall
    running.firewall.audit.close()  # every write fails from now on
    with pytest.raises(openai.InternalServerError) as raised:
        oai(running).chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
    assert raised.value.status_code == 503 and "audit log cannot be written" in raised.value.message
    assert fake.received == []
    samples = scrape(admin)
    assert value(samples, "agent_firewall_audit_write_errors_total") == 1.0
    assert value(samples, "agent_firewall_requests_total", route="openai_chat", status="503") == 1.0
