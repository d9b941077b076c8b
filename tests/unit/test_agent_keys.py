"""Per-agent firewall keys: stored as hashes, found by the key, claims checked against them."""

from __future__ import annotations

import pytest

from firewall.agents import IdentityError, IdentityResolver, Unauthenticated
from firewall.agents.keys import KEY_PREFIX, KeyRing, UnknownKey, hash_key, new_key, presented_key
from firewall.policy.schema import AgentMatch, AgentSpec, IdentitySpec


def test_new_keys_are_long_random_and_prefixed():
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(key.startswith(KEY_PREFIX) and len(key) >= 40 for key in keys)
    # the SHA-256 of the key (echo -n afw_x | sha256sum)
    assert hash_key("afw_x") == "sha256:" + __import__("hashlib").sha256(b"afw_x").hexdigest()


def test_the_key_ring_finds_the_agent_and_refuses_anything_else():
    planner, researcher = new_key(), new_key()
    ring = KeyRing.from_agents({"planner": [hash_key(planner)], "researcher": [hash_key(researcher), hash_key(new_key())]})
    assert ring.agent_for(planner) == "planner"
    assert ring.agent_for(researcher) == "researcher"
    for wrong in (new_key(), planner[:-1], planner + "x", ""):
        with pytest.raises(UnknownKey):
            ring.agent_for(wrong)


def test_a_stored_value_that_is_not_a_hash_is_refused_with_how_to_make_one():
    with pytest.raises(ValueError, match="agent-firewall keys new"):
        KeyRing.from_agents({"planner": [new_key()]})
    with pytest.raises(ValueError, match="never the key itself"):
        AgentSpec(keys=["afw_plaintext_key_pasted_by_mistake"])


@pytest.mark.parametrize(("headers", "found"), [
    ({"Authorization": "Bearer afw_abc"}, "afw_abc"),
    ({"authorization": "bearer afw_abc"}, None),  # a plain dict is case-sensitive; the proxy passes a CIMultiDict
    ({"x-api-key": "afw_abc"}, "afw_abc"),
    ({"Authorization": "Bearer sk-proj-123"}, None),  # a provider key is not ours
    ({"x-api-key": "sk-ant-123", "Authorization": "Bearer afw_k"}, "afw_k"),
    ({}, None),
])
def test_the_key_is_taken_from_where_the_sdks_put_it(headers, found):
    assert presented_key(headers) == found


def resolver(**identity) -> tuple[IdentityResolver, str]:
    key = new_key()
    agents = {"planner": AgentSpec(keys=[hash_key(key)]), "researcher": AgentSpec(match=AgentMatch(path_prefix="/r/"))}
    return IdentityResolver(agents, spec=IdentitySpec(**identity)), key


def test_a_key_identifies_its_agent_and_outranks_nothing_it_contradicts():
    identities, key = resolver()
    found = identities.resolve("/v1/chat/completions", {"Authorization": f"Bearer {key}"})
    assert (found.agent, found.how) == ("planner", "key")
    # a header that agrees is fine; one that names someone else is an error, not a choice
    assert identities.resolve("/v1/x", {"x-api-key": key, "X-Agent-Id": "planner"}).agent == "planner"
    with pytest.raises(IdentityError, match="belongs to 'planner'.*'executor'"):
        identities.resolve("/v1/x", {"x-api-key": key, "X-Agent-Id": "executor"})
    with pytest.raises(IdentityError, match="belongs to 'planner'.*'researcher'"):
        identities.resolve("/r/v1/x", {"x-api-key": key})


def test_an_unknown_firewall_key_is_unauthenticated():
    identities, _ = resolver()
    with pytest.raises(Unauthenticated) as raised:
        identities.resolve("/v1/x", {"Authorization": f"Bearer {new_key()}"})
    assert raised.value.status == 401 and "keys new" in str(raised.value)


def test_require_key_refuses_claims_without_proof():
    identities, key = resolver(require_key=True)
    with pytest.raises(Unauthenticated, match="own firewall key"):
        identities.resolve("/v1/x", {"X-Agent-Id": "planner"})
    assert identities.resolve("/v1/x", {"x-api-key": key}).agent == "planner"


def test_metadata_names_an_agent_only_when_the_policy_allows_and_nothing_else_did():
    identities, key = resolver(from_metadata=True)
    anonymous = identities.resolve("/v1/x", {})
    assert identities.from_metadata(anonymous, {"user": "summariser"}).how == "metadata"
    assert identities.from_metadata(anonymous, {"metadata": {"user_id": "mailer"}}).agent == "mailer"
    keyed = identities.resolve("/v1/x", {"x-api-key": key})
    assert identities.from_metadata(keyed, {"user": "summariser"}).agent == "planner"
    with pytest.raises(IdentityError, match="invalid agent id"):
        identities.from_metadata(anonymous, {"user": "bad id with spaces"})
    strict, _ = resolver()
    assert strict.from_metadata(anonymous, {"user": "summariser"}).agent is None


@pytest.mark.parametrize(("header", "expected"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # all-zero trace id: invalid
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),  # 31 hex digits
    ("garbage", None),
    (None, None),
])
def test_a_w3c_traceparent_gives_its_trace_id_and_a_malformed_one_is_ignored(header, expected):
    from firewall.agents.identity import trace_id

    assert trace_id(header) == expected
    identities, _ = resolver()
    headers = {"X-Agent-Id": "planner"} | ({"traceparent": header} if header else {})
    assert identities.resolve("/v1/x", headers).trace_id == expected


def test_a_key_listed_for_two_agents_is_a_policy_error():
    from pydantic import ValidationError

    from firewall.policy.schema import PolicySpec

    shared = hash_key(new_key())
    with pytest.raises(ValidationError, match=r"agents.planner and agents.researcher list the same key hash"):
        PolicySpec(version=1, name="p", agents={"planner": AgentSpec(keys=[shared]),
                                                "researcher": AgentSpec(keys=[shared])})
