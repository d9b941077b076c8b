"""Which agent is calling: by its own firewall key, the policy's agent matches, the path,
a header, or (where the policy says so) the request body's metadata.

A key is proof; the others are claims. An agent can be identified by its base URL alone
(`http://firewall/agents/planner`), so an agent stack that cannot add headers still names
its agents; a policy that needs proof sets `identity.require_key`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from typing import Any

from firewall.agents.keys import KeyRing, UnknownKey, presented_key
from firewall.policy.schema import AgentMatch, AgentSpec, IdentitySpec

AGENT_PATH_PREFIX = "/agents/"
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class IdentityError(ValueError):
    """The request names an agent in a form the firewall refuses."""

    status = 400


class Unauthenticated(IdentityError):
    """The request does not prove which agent sent it, and the policy requires that."""

    status = 401


HOW_TO_IDENTIFY = (
    "identify the calling agent with its firewall key (the SDK's api_key set to the agent's afw_… key), "
    "the {header} header, or a base URL ending in /agents/<id>"
)


@dataclass(frozen=True, slots=True)
class Identity:
    agent: str | None
    how: str | None  # key | policy | path | header | metadata, or None when unidentified
    path: str  # the request path with any /agents/<id> prefix removed
    source: str | None = None  # the agent whose words the request carries (declared)
    target: str | None = None  # the agent the response is meant for (declared)
    trace_id: str | None = None  # from a W3C traceparent header


@dataclass(frozen=True, slots=True)
class IdentityResolver:
    agents: Mapping[str, AgentSpec]
    header: str = "X-Agent-Id"
    source_header: str = "X-Agent-Source"
    target_header: str = "X-Agent-Target"
    spec: IdentitySpec = IdentitySpec()
    keys: KeyRing = field(init=False)
    _matchers: tuple[tuple[str, AgentMatch], ...] = field(init=False, repr=False)  # the agents with a `match:`

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", KeyRing.from_agents({name: agent.keys for name, agent in self.agents.items()}))
        object.__setattr__(self, "_matchers", tuple((name, agent.match) for name, agent in self.agents.items()
                                                    if agent.match is not None))

    def resolve(self, path: str, headers: Mapping[str, str]) -> Identity:
        """Who sent the request, from its path and headers (the body is read later: see
        `from_metadata`). Two ways that name different agents are an error, not a choice."""
        identity = self._claimed(path, headers)
        key = presented_key(headers)
        if key is None:
            if self.spec.require_key:
                raise Unauthenticated("this policy accepts only agents that present their own firewall key: "
                                      "set the SDK's api_key to the agent's afw_… key")
            return identity
        try:
            agent = self.keys.agent_for(key)
        except UnknownKey as error:
            raise Unauthenticated(f"{error}; ask for a key with: agent-firewall keys new AGENT") from error
        if identity.agent is not None and identity.agent != agent:
            raise IdentityError(f"the request's firewall key belongs to {agent!r} but the request is "
                                f"identified as {identity.agent!r} by {identity.how}")
        return Identity(agent, "key", identity.path, identity.source, identity.target, identity.trace_id)

    def from_metadata(self, identity: Identity, body: Any) -> Identity:
        """Where the policy allows it, name an unidentified request's agent from the body:
        OpenAI's `user` or Anthropic's `metadata.user_id`."""
        if identity.agent is not None or not self.spec.from_metadata or not isinstance(body, dict):
            return identity
        metadata = body.get("metadata")
        for value, where in ((body.get("user"), "the body's user field"),
                             (metadata.get("user_id") if isinstance(metadata, dict) else None, "metadata.user_id")):
            if isinstance(value, str):
                return Identity(_valid(value, where), "metadata", identity.path, identity.source, identity.target,
                                identity.trace_id)
        return identity

    def _claimed(self, path: str, headers: Mapping[str, str]) -> Identity:
        agent, how, rest = None, None, path
        if path.startswith(AGENT_PATH_PREFIX):
            name, _, tail = path[len(AGENT_PATH_PREFIX):].partition("/")
            agent, how, rest = _valid(name, "path"), "path", "/" + tail
        for name, match in self._matchers:
            if match.path_prefix and path.startswith(match.path_prefix):
                agent, how, rest = name, "policy", "/" + path[len(match.path_prefix):].lstrip("/")
                break
            if match.header and all(headers.get(key) == value for key, value in match.header.items()):
                agent, how = name, "policy"
                break
        declared = headers.get(self.header)
        if declared is not None and agent is None:
            agent, how = _valid(declared, self.header), "header"
        elif declared is not None and declared != agent:
            raise IdentityError(f"the {self.header} header says {declared!r} but the request is identified as {agent!r}")
        source = headers.get(self.source_header)
        target = headers.get(self.target_header)
        return Identity(
            agent=agent,
            how=how,
            path=rest,
            source=_valid(source, self.source_header) if source is not None else None,
            target=_valid(target, self.target_header) if target is not None else None,
            trace_id=trace_id(headers.get("traceparent")),
        )


# W3C Trace Context: version-traceid-parentid-flags; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a well-formed `traceparent` header; None for anything else (a
    malformed header is ignored, as the Trace Context spec asks)."""
    found = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
    return found.group(1) if found and found.group(1) != "0" * 32 else None


def valid_agent_id(value: str) -> bool:
    return bool(_AGENT_ID.match(value))


def _valid(value: str, where: str) -> str:
    if not _AGENT_ID.match(value):
        raise IdentityError(
            f"invalid agent id {value[:80]!r} in {where}: use 1-128 characters of letters, digits and . _ : @ -"
        )
    return value
