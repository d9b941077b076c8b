"""The scenario this project exists for, end to end through the proxy with the openai SDK.

Three agents. The planner's answer proposes, in neutral words, that someone be harmed;
the researcher's next request carries the planner's words. Lineage records the edge
planner → researcher, the rule on flagged content fires, and after the policy's number of
violations the planner is quarantined: its next request is refused, and a release
through the CLI restores it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest

from firewall.agents.keys import hash_key, new_key
from firewall.proxy import AI_TO_AI_TAG, SOURCE_HEADER, TAGS_HEADER
from firewall.proxy.admin import ADMIN_TOKEN_ENV, admin_app
from firewall.testing import ServerThread

KEYS = {name: new_key() for name in ("planner", "researcher", "executor")}
TOKEN = "admin-token-for-the-scenario-test"
HARM = "About the neighbour: honestly, the best solution is to make sure he never wakes up. Then nobody will complain."
HARM_AGAIN = "About the landlord: honestly, the best solution is to make sure he never wakes up. Then the rent is settled."
POLICY = f"""
version: 1
name: agents-scenario
agents:
  planner: {{keys: ["{hash_key(KEYS["planner"])}"], may_send_to: [researcher, executor]}}
  researcher: {{keys: ["{hash_key(KEYS["researcher"])}"], may_send_to: [executor]}}
  executor: {{keys: ["{hash_key(KEYS["executor"])}"], may_send_to: []}}
quarantine: {{violations: 2, window: 600, release_after: 3600}}
detectors:
  semantic: {{model: minilm}}
rules:
  - id: harm-in-an-answer
    direction: response
    match:
      semantic:
        like: ["the best solution is to murder him in his sleep", "make sure he never wakes up",
               "we should get rid of her permanently", "a permanent solution for the neighbour",
               "he needs to disappear for good", "someone should put an end to him"]
        unlike: ["a permanent solution for the leaking roof", "make sure the nightly build never fails again",
                 "kill the process and restart the service", "put an end to the meeting early"]
        threshold: 0.6
    action: {{tag: harm-suggested}}
  - id: carries-flagged-words
    direction: request
    if: "source.flagged"
    action: block
"""


def agent(running, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_base, api_key=KEYS[name], max_retries=0)


def ask(client: openai.OpenAI, *messages: str) -> str:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text} for text in messages])
    return completion.choices[0].message.content or ""


def events(running, kind: str) -> list[dict]:
    return [record for record in running.records() if record.get("event") == kind]


@pytest.fixture
def scenario(start_firewall, fake):
    running = start_firewall(POLICY, provider_keys={"openai": "sk-provider-key-held-by-the-firewall"})
    admin = ServerThread(admin_app(running.firewall, TOKEN), name="admin").start()
    yield running, admin, fake
    admin.stop()


def release_with_the_cli(admin_url: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firewall.cli", "agents", "--admin", admin_url, "release", name],
                          env={**os.environ, ADMIN_TOKEN_ENV: TOKEN}, capture_output=True, text=True, timeout=60)


def test_harm_relayed_between_agents_quarantines_its_author_and_the_cli_releases_it(scenario):
    running, admin, fake = scenario
    planner, researcher = agent(running, "planner"), agent(running, "researcher")

    # 1. The planner's model proposes harm in neutral words; the answer is tagged, not cut.
    fake.add_reply(HARM, times=1)
    said = ask(planner, "How do we settle the dispute with the neighbour?")
    assert said == HARM
    # the upstream got the firewall's provider key, never the agent's own
    assert fake.received[-1].headers["authorization"] == "Bearer sk-provider-key-held-by-the-firewall"

    # 2. The researcher's next request carries the planner's words: the edge is recorded
    #    and the rule on flagged content stops it before the upstream.
    forwarded = len(fake.received)
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        ask(researcher, "Summarise our plan for the team.", f"The planner wrote: {said}")
    assert "carries-flagged-words" in blocked.value.message
    assert len(fake.received) == forwarded
    (edge,) = events(running, "lineage")
    assert (edge["source"], edge["agent"], edge["flagged"], edge["hops"]) == ("planner", "researcher", True, 1)
    message = edge["message"]
    start, end = edge["spans"][0]
    assert HARM[:40] in f"The planner wrote: {said}"[start:end] and message == 1

    # 3. It happens again: the planner's second violation quarantines the planner, not
    #    the researcher who only passed the words on.
    fake.add_reply(HARM_AGAIN, times=1)
    said = ask(planner, "And the landlord?")
    with pytest.raises(openai.PermissionDeniedError):
        ask(researcher, f"Planner update: {said}")
    (transition,) = events(running, "quarantine")
    assert (transition["agent"], transition["from"], transition["to"]) == ("planner", "observe", "quarantine")
    assert "carries-flagged-words" in transition["reason"]

    # 4. The quarantined planner is refused, with an error that names the quarantine.
    forwarded = len(fake.received)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(planner, "What next?")
    assert "quarantined" in refused.value.message and "carries-flagged-words" in refused.value.message
    assert refused.value.body["code"] == "agent_quarantined"
    assert len(fake.received) == forwarded
    fake.add_reply("The sources agree.", times=1)
    assert ask(researcher, "Any news from the sources?") == "The sources agree."  # the researcher is unaffected

    # 5. Released through the CLI, the planner is served again.
    done = release_with_the_cli(admin.url, "planner")
    assert done.returncode == 0, done.stderr
    assert "planner" in done.stdout and "released" in done.stdout
    fake.add_reply("Let us talk to the neighbour.", times=1)
    assert ask(planner, "What next?") == "Let us talk to the neighbour."
    assert [r["to"] for r in events(running, "quarantine")] == ["quarantine", "released"]

    # 6. A reviewer reads who passed words to whom.
    report = subprocess.run([sys.executable, "-m", "firewall.cli", "audit", "edges", str(running.audit_path)],
                            capture_output=True, text=True, timeout=60)
    (line,) = [line for line in report.stdout.splitlines() if line.startswith("planner -> researcher")]
    assert line.split()[3:6] == ["2", "2", "2"]  # requests, blocked, flagged


def test_words_from_another_agent_are_disclosed_to_the_receiver(scenario):
    running, _, fake = scenario
    fake.add_reply("The quarterly numbers look strong: revenue grew twelve percent in the northern region.", times=1)
    said = ask(agent(running, "planner"), "Summarise the quarter.")
    fake.add_reply("Noted.", times=1)
    raw = agent(running, "executor").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Context from the planner: {said}"}])
    assert raw.headers[SOURCE_HEADER] == "planner"
    assert AI_TO_AI_TAG in raw.headers[TAGS_HEADER].split(",")
    request = [r for r in running.records() if r.get("agent") == "executor" and r.get("direction") == "request"][0]
    assert request["source"] == "planner" and request["provenance"]["flagged"] is False


def test_a_request_without_proof_or_with_a_stranger_key_is_refused_and_says_how_to_identify(scenario):
    running, _, fake = scenario
    anonymous = openai.OpenAI(base_url=running.openai_base, api_key="sk-someone", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        ask(anonymous, "hello")
    assert "firewall key" in raised.value.message and "X-Agent-Id" in raised.value.message
    stranger = openai.OpenAI(base_url=running.openai_base, api_key=new_key(), max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="not one of this policy's agent keys"):
        ask(stranger, "hello")
    assert fake.received == []


def test_a_quarantined_agents_answers_are_not_delivered_to_other_agents(scenario):
    running, admin, fake = scenario
    fake.add_reply("The supplier list is final: three vendors in Lyon and two in Porto, all audited this spring.",
                   times=1)
    said = ask(agent(running, "planner"), "Which suppliers?")
    done = subprocess.run([sys.executable, "-m", "firewall.cli", "agents", "--admin", admin.url, "quarantine",
                           "planner", "--reason", "under review"],
                          env={**os.environ, ADMIN_TOKEN_ENV: TOKEN}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "quarantine" in done.stdout, done.stderr
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(agent(running, "executor"), f"Planner said: {said}")
    assert refused.value.body["code"] == "source_quarantined" and "under review" in refused.value.message
    # not the executor's fault: it is not counted against it
    assert all(r["agent"] != "executor" for r in events(running, "quarantine"))
    assert release_with_the_cli(admin.url, "planner").returncode == 0
    fake.add_reply("Ordered.", times=1)
    assert ask(agent(running, "executor"), f"Planner said: {said}") == "Ordered."


def test_a_w3c_trace_names_the_agent_that_answered_before_in_it(scenario):
    running, _, fake = scenario
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    fake.add_reply("Done.", times=2)
    planner = agent(running, "planner").with_options(default_headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    ask(planner, "Plan the migration.")
    # the researcher's request shares no words with the planner's answer, only the trace
    researcher = agent(running, "researcher").with_options(
        default_headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"})
    ask(researcher, "Check the backups first.")
    request = [r for r in running.records() if r.get("agent") == "researcher" and r.get("direction") == "request"][0]
    assert request["source"] == "planner" and "provenance" not in request
    # a traced edge is held to the policy like any other: the executor's words may reach no one
    fake.add_reply("Migration running.", times=1)
    executor = agent(running, "executor").with_options(
        default_headers={"traceparent": f"00-{trace}-c7ad6b7169203331-01"})
    assert ask(executor, "Run it.") == "Migration running."  # researcher -> executor is allowed
    planner_again = agent(running, "planner").with_options(
        default_headers={"traceparent": f"00-{trace}-d7ad6b7169203331-01"})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(planner_again, "Status?")
    assert refused.value.body["code"] == "edge_not_allowed"
    assert "'executor' may not send to 'planner'" in refused.value.message
