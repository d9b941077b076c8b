"""A costly judge consulted only where the cheap detector is unsure, through the engine."""

from __future__ import annotations

import json

import pytest

from firewall import Action, Direction, Engine, Exchange, Message, Part

VERDICT_HARMFUL = json.dumps({"harmful": True, "score": 0.97, "category": "violence", "reason": "poisoning"})


def ask(engine: Engine, text: str):
    message = Message(role="user", parts=(Part(text, ("messages", 0, "content")),))
    return engine.inspect(Exchange(id="ex", direction=Direction.REQUEST, provider="openai", route="openai_chat",
                                   messages=(message,)))


@pytest.fixture
def cascade(load_policy, upstream_server):
    _, upstream = upstream_server
    return Engine(load_policy(f"""
        version: 1
        name: cascade
        detectors:
          toxicity: {{backend: embedded}}
          judge:
            endpoint: {upstream.url}/v1
            model: judge-model
            rubric: A message is harmful when it suggests hurting a person.
            labels: [violence, self-harm]
            timeout: 5
            when: {{toxicity: [0.2, 0.9]}}
        rules:
          - id: harmful
            if: "scores.toxicity > 0.9 || scores.judge > 0.5"
            action: block
          - id: violence-category
            match: {{scores: {{"judge:violence": 0.5}}}}
            action: {{tag: violence}}
    """))


def test_the_judge_is_asked_only_where_the_cheap_detector_is_unsure(cascade, fake):
    fake.add_reply(VERDICT_HARMFUL)
    assert ask(cascade, "have a lovely day").action is Action.ALLOW  # toxicity 0.05: sure, benign
    assert ask(cascade, "this plan is stupid").blocking_rule == "harmful"  # toxicity 0.99: sure, harmful
    assert fake.received == []
    decision = ask(cascade, "poison her coffee")  # toxicity 0.33: unsure, so the judge decides
    assert decision.blocking_rule == "harmful"
    assert "violence-category" in decision.rules  # the judge's category is a score too
    (request,) = fake.received
    assert "poison her coffee" in request.body.decode() and "hurting a person" in request.body.decode()


def test_a_judge_that_is_down_fails_closed(load_policy, fake):
    engine = Engine(load_policy("""
        version: 1
        name: down
        detectors:
          judge: {endpoint: "http://127.0.0.1:9/v1", model: m, rubric: r, timeout: 1, when: {toxicity: [0.2, 0.9]}}
        rules: [{id: judged, if: "scores.judge > 0.5", action: block}]
    """))
    decision = ask(engine, "poison her coffee")
    assert decision.action is Action.BLOCK and decision.blocking_rule == "detector-error:judge"


def test_a_slow_judge_does_not_stall_other_requests(start_firewall, fake, upstream_server):
    import threading
    import time

    import openai

    _, upstream = upstream_server
    fake.add_reply(VERDICT_HARMFUL, when="poison her coffee", delay=1.5)  # the judge, thinking
    fake.add_reply("fine")
    running = start_firewall(f"""
        version: 1
        name: slow-judge
        detectors:
          judge: {{endpoint: "{upstream.url}/v1", model: m, rubric: r, timeout: 5, when: {{toxicity: [0.2, 0.9]}}}}
        rules: [{{id: judged, if: "scores.judge > 0.5", action: block}}]
    """)
    agent = openai.OpenAI(base_url=running.openai_base, api_key="k", max_retries=0, default_headers={"X-Agent-Id": "tester"})
    outcome: dict[str, float] = {}

    def slow() -> None:
        try:
            agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "poison her coffee"}])
        except openai.PermissionDeniedError:
            outcome["slow"] = time.monotonic()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)  # the judged request is now waiting for its verdict
    agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "have a lovely day"}])
    assert thread.is_alive() and "slow" not in outcome  # answered while the judge was still thinking
    thread.join(10)
    assert "slow" in outcome  # and the judged one was blocked once its verdict came
