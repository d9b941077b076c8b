"""Which agent is calling: from the policy's own agent matches, a header, or the path.

An agent can be identified by its base URL alone (`http://firewall/agents/planner`),
so an agent stack that cannot add headers still names its agents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from firewall.policy.schema import AgentSpec

AGENT_PATH_PREFIX = "/agents/"
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class IdentityError(ValueError):
    """The request names an agent in a form the firewall refuses."""


@dataclass(frozen=True, slots=True)
class Identity:
    agent: str | None
    how: str | None  # policy | header | path, or None when unidentified
    path: str  # the request path with any /agents/<id> prefix removed
    source: str | None = None  # the agent whose words the request carries (declared)
    target: str | None = None  # the agent the response is meant for (declared)


@dataclass(frozen=True, slots=True)
class IdentityResolver:
    agents: Mapping[str, AgentSpec]
    header: str = "X-Agent-Id"
    source_header: str = "X-Agent-Source"
    target_header: str = "X-Agent-Target"

    def resolve(self, path: str, headers: Mapping[str, str]) -> Identity:
        agent, how, rest = None, None, path
        if path.startswith(AGENT_PATH_PREFIX):
            name, _, tail = path[len(AGENT_PATH_PREFIX):].partition("/")
            agent, how, rest = _valid(name, "path"), "path", "/" + tail
        for name, spec in self.agents.items():
            match = spec.match
            if match is None:
                continue
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
        )


def _valid(value: str, where: str) -> str:
    if not _AGENT_ID.match(value):
        raise IdentityError(
            f"invalid agent id {value[:80]!r} in {where}: use 1-128 characters of letters, digits and . _ : @ -"
        )
    return value
