"""Running a policy's own `tests:`, as `opa test` runs Rego tests."""

from __future__ import annotations

from dataclasses import dataclass

from firewall.engine import Engine
from firewall.model import Decision, Direction, Exchange, Message, Part, PartKind
from firewall.policy.compiler import Policy
from firewall.policy.schema import PolicyTest


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    passed: bool
    decision: Decision
    failure: str | None = None


def run_policy_tests(policy: Policy, engine: Engine | None = None) -> list[CaseResult]:
    engine = engine or Engine(policy)
    return [_run(engine, case) for case in policy.tests]


def case_exchange(case: PolicyTest) -> Exchange:
    if case.response is not None:
        direction, messages = Direction.RESPONSE, (_message("assistant", case.response, ("choices", 0, "message", "content")),)
    elif isinstance(case.request, str):
        direction, messages = Direction.REQUEST, (_message("user", case.request, ("messages", 0, "content")),)
    else:
        direction = Direction.REQUEST
        messages = tuple(
            _message(item.role, item.content, ("messages", index, "content"))
            for index, item in enumerate(case.request or ())
        )
    return Exchange(
        id=f"test:{case.name}", direction=direction, provider="test", route="policy_test",
        messages=messages, agent=case.agent, source_agent=case.source, target_agent=case.target,
    )


def _message(role: str, text: str, path: tuple[str | int, ...]) -> Message:
    kind = PartKind.TOOL_RESULT if role == "tool" else PartKind.TEXT
    return Message(role=role, parts=(Part(text, path, kind),))


def _run(engine: Engine, case: PolicyTest) -> CaseResult:
    decision = engine.inspect(case_exchange(case))
    expect = case.expect
    fired = decision.rules
    problems: list[str] = []
    if decision.action is not expect.action:
        problems.append(f"expected action {expect.action}, got {decision.action}")
    if expect.rule and expect.rule not in fired:
        problems.append(f"expected rule {expect.rule} to fire")
    for rule in expect.rules or ():
        if rule not in fired:
            problems.append(f"expected rule {rule} to fire")
    for tag in expect.tags or ():
        if tag not in decision.tags:
            problems.append(f"expected tag {tag}")
    if expect.redacted is not None:
        got = decision.rewrites[0].text if decision.rewrites else None
        if got != expect.redacted:
            problems.append(f"expected the redacted text {expect.redacted!r}, got {got!r}")
    if problems and fired:
        problems.append(f"rules that fired: {', '.join(fired)}")
    return CaseResult(case.name, not problems, decision, "; ".join(problems) or None)
