"""Test helpers shipped with the firewall: run servers in a thread, fake an LLM upstream."""

from __future__ import annotations

from firewall.testing.fake_upstream import FakeUpstream, ReceivedRequest, Reply, run_fake_upstream
from firewall.testing.servers import ServerThread, free_port

__all__ = ["FakeUpstream", "ReceivedRequest", "Reply", "ServerThread", "free_port", "run_fake_upstream"]
