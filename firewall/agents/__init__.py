"""Agents: who is calling, whose words they carry, and what the firewall remembers of each.

Names are loaded on first use: the policy schema imports the drift and lineage settings
from this package, and the identity module imports the schema.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AGENT_PATH_PREFIX": "identity", "HOW_TO_IDENTIFY": "identity", "Identity": "identity",
    "IdentityError": "identity", "IdentityResolver": "identity", "Unauthenticated": "identity",
    "AgentGuard": "guard", "Admission": "guard", "Refusal": "guard",
    "StateBackend": "state", "StateUnavailable": "state", "MemoryState": "state", "open_state": "state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firewall.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f"firewall.agents.{module}"), name)
