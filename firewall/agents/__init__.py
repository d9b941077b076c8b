"""Agents: who is calling, and whose words they carry."""

from firewall.agents.identity import AGENT_PATH_PREFIX, Identity, IdentityError, IdentityResolver

__all__ = ["AGENT_PATH_PREFIX", "Identity", "IdentityError", "IdentityResolver"]
