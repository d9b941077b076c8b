"""Which agent is calling, and whose words it carries."""

from __future__ import annotations

import pytest

from firewall.agents import Identity, IdentityError, IdentityResolver
from firewall.policy.schema import AgentMatch, AgentSpec

POLICY_AGENTS = {
    "planner": AgentSpec(match=AgentMatch(header={"X-Team": "planning"})),
    "executor": AgentSpec(match=AgentMatch(path_prefix="/exec")),
    "documented-only": AgentSpec(description="no match: identified by header or path"),
}


def resolve(path: str, **headers: str) -> Identity:
    return IdentityResolver(POLICY_AGENTS).resolve(path, {k.replace("_", "-"): v for k, v in headers.items()})


def test_unidentified():
    assert resolve("/v1/chat/completions") == Identity(agent=None, how=None, path="/v1/chat/completions")


def test_header_path_prefix_and_policy_matches():
    assert resolve("/v1/messages", X_Agent_Id="researcher") == Identity("researcher", "header", "/v1/messages")
    assert resolve("/agents/researcher/v1/messages") == Identity("researcher", "path", "/v1/messages")
    assert resolve("/v1/messages", X_Team="planning") == Identity("planner", "policy", "/v1/messages")
    assert resolve("/exec/v1/chat/completions") == Identity("executor", "policy", "/v1/chat/completions")


def test_declared_source_and_target():
    identity = resolve("/agents/executor/v1/messages", X_Agent_Source="planner", X_Agent_Target="reviewer")
    assert (identity.agent, identity.source, identity.target) == ("executor", "planner", "reviewer")


def test_a_header_that_contradicts_the_path_is_refused():
    with pytest.raises(IdentityError, match="says 'planner' but the request is identified as 'executor'"):
        resolve("/agents/executor/v1/messages", X_Agent_Id="planner")
    assert resolve("/agents/executor/v1/messages", X_Agent_Id="executor").agent == "executor"


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "x" * 129, "-leading-dash", "ümlaut"])
def test_invalid_agent_ids_are_refused(bad):
    with pytest.raises(IdentityError, match="invalid agent id"):
        resolve("/v1/messages", X_Agent_Id=bad)
    with pytest.raises(IdentityError, match="invalid agent id"):
        resolve("/v1/messages", X_Agent_Source=bad)


def test_the_header_name_is_configurable():
    resolver = IdentityResolver({}, header="X-Caller")
    assert resolver.resolve("/v1/messages", {"X-Caller": "a1", "X-Agent-Id": "ignored"}).agent == "a1"
