"""Fixtures shared by every test: policies written on the fly, a fake LLM upstream on
loopback, and the firewall itself, served from a thread so the sync SDKs can drive it."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firewall.audit import AuditWriter, read_records
from firewall.policy import Policy, load_policy_file
from firewall.proxy import Firewall, ProxyConfig
from firewall.testing import FakeUpstream, ServerThread, run_fake_upstream

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"policy-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture
def load_policy(write_policy: Callable[[str], Path]) -> Callable[[str], Policy]:
    return lambda text: load_policy_file(write_policy(text))


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[tuple[FakeUpstream, ServerThread]]:
    with run_fake_upstream() as pair:
        yield pair


@pytest.fixture
def fake(upstream_server: tuple[FakeUpstream, ServerThread]) -> FakeUpstream:
    fake_upstream, _ = upstream_server
    fake_upstream.reset()
    return fake_upstream


@dataclass
class RunningFirewall:
    url: str
    audit_path: Path
    firewall: Firewall

    def records(self, at_least: int = 0, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The audit records so far. A stream's record is written after its last byte is
        sent, so a client can finish first: `at_least` waits for that many records."""
        deadline = time.monotonic() + timeout
        while True:
            records = list(read_records(self.audit_path))
            if len(records) >= at_least or time.monotonic() > deadline:
                return records
            time.sleep(0.01)

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"


@pytest.fixture
def start_firewall(
    upstream_server: tuple[FakeUpstream, ServerThread], tmp_path: Path, write_policy: Callable[[str], Path]
) -> Iterator[Callable[..., RunningFirewall]]:
    started: list[tuple[ServerThread, AuditWriter]] = []
    _, upstream = upstream_server

    def start(policy: str | Path = DEFAULT_POLICY, **config: Any) -> RunningFirewall:
        path = policy if isinstance(policy, Path) else write_policy(policy)
        audit_path = tmp_path / f"audit-{len(started)}.jsonl"
        audit = AuditWriter(audit_path)
        settings = {"port": 0, "upstreams": {"openai": upstream.url, "anthropic": upstream.url}} | config
        firewall = Firewall(ProxyConfig(**settings), load_policy_file(path), audit)
        server = ServerThread(firewall.app, name="firewall").start()
        started.append((server, audit))
        return RunningFirewall(server.url, audit_path, firewall)

    yield start
    for server, audit in started:
        server.stop()
        audit.close()
