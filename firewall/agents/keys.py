"""Per-agent proxy keys: an agent proves who it is with a key of its own, and the
firewall, not the agent, holds the provider's key.

An agent sets its SDK's API key to its firewall key (`afw_…`); the SDK sends it as
`Authorization: Bearer afw_…` (OpenAI), `x-api-key: afw_…` (Anthropic) or
`x-goog-api-key: afw_…` (Gemini). The policy
stores only each key's SHA-256 (`sha256:<hex>`), so a leaked policy file leaks no key.
A presented key is hashed, and the hash is looked up by its HMAC under a secret drawn when
the policy is loaded: how long the lookup takes depends on that HMAC, which no requester
can predict, so neither which agent matched nor how close a guess came shows in the time
taken, and the cost does not grow with the number of agents (comparing with every stored
hash in constant time did the same in time linear in the keys).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from firewall.policy.schema import KEY_HASH_PATTERN

__all__ = ["KEY_PREFIX", "KeyRing", "UnknownKey", "hash_key", "new_key", "presented_key"]

KEY_PREFIX = "afw_"
_KEY_BYTES = 32
_HASH = re.compile(KEY_HASH_PATTERN)


class UnknownKey(ValueError):
    """A firewall key (`afw_…`) that no agent of the policy holds."""


def new_key() -> str:
    """A fresh key: the prefix and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def hash_key(key: str) -> str:
    """What the policy stores for `key`."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def valid_hash(value: str) -> bool:
    return bool(_HASH.match(value))


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The firewall key a request carries, if any, from where the SDKs put their API key.
    A provider key (`sk-…`) is not a firewall key and is left to pass through."""
    authorization = headers.get("Authorization", "")
    scheme, _, credential = authorization.partition(" ")
    candidates = [credential.strip()] if scheme.lower() == "bearer" else []
    candidates.append(headers.get("x-api-key", "").strip())
    candidates.append(headers.get("x-goog-api-key", "").strip())
    return next((value for value in candidates if value.startswith(KEY_PREFIX)), None)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The agents' key hashes, as the policy declares them."""

    hashes: tuple[tuple[bytes, str], ...]  # (digest, agent)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False, compare=False)
    _agents: dict[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_agents", {self._tag(digest): agent for digest, agent in self.hashes})

    @classmethod
    def from_agents(cls, keys_by_agent: Mapping[str, list[str]]) -> KeyRing:
        entries = []
        for agent, hashes in keys_by_agent.items():
            for value in hashes:
                if not valid_hash(value):
                    raise ValueError(f"agent {agent!r}: key {value[:20]!r}… is not a 'sha256:<64 hex>' hash "
                                     "(store hashes, never keys: agent-firewall keys new AGENT prints both)")
                entries.append((bytes.fromhex(value.removeprefix("sha256:")), agent))
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def _tag(self, digest: bytes) -> bytes:
        return hmac.digest(self._secret, digest, "sha256")

    def agent_for(self, key: str) -> str:
        """The agent holding `key`; `UnknownKey` when none does."""
        found = self._agents.get(self._tag(hashlib.sha256(key.encode("utf-8")).digest()))
        if found is None:
            raise UnknownKey("the firewall key presented is not one of this policy's agent keys")
        return found
