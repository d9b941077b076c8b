"""A real redis-server for tests: started on a free loopback port (and a unix socket) in a
temporary directory with persistence off, ready once it answers PING, stopped afterwards.

The Redis state backend is tested against the server it meets in production, not a fake.
`redis-server` must be on PATH (.ci/run installs it); without it the tests that need it fail
and say how to install it, unless AFW_SKIP_REDIS=1 asks to skip them.

`running_redis_server(directory)` is a context manager for any test or fixture
(`from tests.redis_server import running_redis_server`); `redis_server` is a ready fixture
built on it, which a conftest can offer to every test with
`pytest_plugins = ["tests.redis_server"]`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from firewall.testing import free_port

__all__ = ["SKIP_VARIABLE", "RedisServer", "redis_server", "redis_server_binary", "running_redis_server", "start_redis_server"]

SKIP_VARIABLE = "AFW_SKIP_REDIS"
_HOST = "127.0.0.1"
_READY_WITHIN = 10.0


def redis_server_binary() -> str:
    """The path of `redis-server`. Skips the calling test when AFW_SKIP_REDIS=1, and fails
    it with how to install the server when it is missing: a missing server must not pass
    quietly as a skipped test."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the tests that need a real redis-server are skipped")
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "redis-server is not installed, and the Redis state tests need a real one: install it "
            "(apt-get install redis-server, brew install redis; .ci/run does this in CI), "
            f"or set {SKIP_VARIABLE}=1 to skip these tests",
            pytrace=False,
        )
    return found


@dataclass
class RedisServer:
    """A running redis-server that this test process owns."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    password: str | None = None

    @property
    def url(self) -> str:
        credentials = "" if self.password is None else f":{self.password}@"
        return f"redis://{credentials}{_HOST}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        credentials = "" if self.password is None else f":{self.password}@"
        return f"unix://{credentials}{self.socket_path}?db=0"

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def restart(self) -> None:
        """Stop the server and start an empty one on the same port, as after a crash."""
        self.stop()
        self.process = start_redis_server(self.directory, self.password, self.port).process

    def stop(self) -> None:
        """Stop the server (again is fine): its clients see a refused connection from now on."""
        # Killed, not asked: with persistence off it has nothing to save, and a SIGTERM
        # waits for the server's next cron tick (100 ms) on every test.
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start_redis_server(directory: Path, password: str | None = None, port: int | None = None) -> RedisServer:
    """Start a redis-server that keeps its files in `directory`, on `port` (a restart) or a
    free one; returns once it answers PING."""
    binary = redis_server_binary()
    directory.mkdir(parents=True, exist_ok=True)
    # A free port can be taken between our probe and the server's bind: try a few.
    for _ in range(1 if port is not None else 5):
        chosen = port if port is not None else free_port()
        server = RedisServer(_launch(binary, directory, chosen, password), chosen, directory, password)
        if _wait_until_ready(server):
            return server
        server.stop()
        if "Address already in use" not in server.log:
            break
    raise RuntimeError(f"redis-server did not start in {directory}; its log:\n{server.log[-2000:]}")


@contextmanager
def running_redis_server(directory: Path, password: str | None = None) -> Iterator[RedisServer]:
    server = start_redis_server(directory, password)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    with running_redis_server(tmp_path / "redis") as server:
        yield server


def _launch(binary: str, directory: Path, port: int, password: str | None) -> subprocess.Popen[bytes]:
    arguments = [
        binary,
        "--port", str(port),
        "--bind", _HOST,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--unixsocket", str(directory / "redis.sock"),
        "--unixsocketperm", "700",
    ]  # fmt: skip
    if password is not None:
        arguments += ["--requirepass", password]
    return subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _wait_until_ready(server: RedisServer) -> bool:
    deadline = time.monotonic() + _READY_WITHIN
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if _answers_ping(server.port, server.password):
            return True
        time.sleep(0.01)
    return False


def _command(*words: str) -> bytes:
    encoded = [word.encode() for word in words]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded)


def _answers_ping(port: int, password: str | None) -> bool:
    request = _command("PING") if password is None else _command("AUTH", password) + _command("PING")
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as connection:
            connection.sendall(request)
            reply = b""
            while b"PONG" not in reply:
                chunk = connection.recv(1024)
                if not chunk:
                    return False
                reply += chunk
                if reply.startswith(b"-"):  # still loading, or the password is refused
                    return False
            return True
    except OSError:
        return False
