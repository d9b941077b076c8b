"""The reverse proxy's upstream connection, end to end through the official SDK: an HTTPS
upstream verified against the system's trust store or the CA given with --upstream-ca
(ProxyConfig.upstream_ca), and an answer in a coding that does not decode."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from firewall.proxy import ProxyConfig
from tests.tls_upstream import TestCA, TLSUpstream, make_test_ca, running_tls_upstream

POLICY = """
version: 1
name: tls
identity: {unidentified: allow}
rules: []
"""


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("upstream-ca"))


@pytest.fixture(scope="module")
def tls_upstream(test_ca: TestCA) -> Iterator[TLSUpstream]:
    with running_tls_upstream(test_ca) as upstream:
        yield upstream


def ask(base: str) -> str:
    agent = openai.OpenAI(base_url=base, api_key="sk-test", max_retries=0, timeout=30)
    answer = agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "over TLS?"}])
    return answer.choices[0].message.content or ""


def test_an_https_upstream_signed_by_the_given_ca_is_reached(start_firewall, tls_upstream, test_ca):
    tls_upstream.fake.reset()
    tls_upstream.fake.add_reply("yes, verified")
    running = start_firewall(POLICY, upstreams={"openai": tls_upstream.url}, upstream_ca=test_ca.cert)
    assert ask(running.openai_base) == "yes, verified"
    assert ask(running.openai_base) == "yes, verified"  # again, on the kept-alive TLS connection
    assert len(tls_upstream.fake.received) == 2


def test_an_https_upstream_the_trust_store_does_not_know_is_refused_and_recorded(start_firewall, tls_upstream):
    tls_upstream.fake.reset()
    running = start_firewall(POLICY, upstreams={"openai": tls_upstream.url})  # the system's roots only
    with pytest.raises(openai.InternalServerError, match="certificate verify failed") as raised:
        ask(running.openai_base)
    assert raised.value.status_code == 502
    assert tls_upstream.fake.received == []  # nothing went out over an unverified connection
    refusal = running.records(at_least=2)[-1]
    assert refusal["event"] == "upstream_unreachable" and "certificate verify failed" in refusal["error"]


def test_an_upstream_ca_that_is_missing_or_not_pem_is_refused_at_start(tmp_path: Path):
    with pytest.raises(ValueError, match="no such file"):
        ProxyConfig(upstream_ca=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="not a file of PEM certificates"):
        ProxyConfig(upstream_ca=garbage)
    started = subprocess.run(
        [sys.executable, "-m", "firewall.cli", "run", "--policy", str(tmp_path / "unused.yaml"), "--upstream-ca",
         str(tmp_path / "missing.pem")], capture_output=True, text=True, timeout=60)
    assert started.returncode != 0 and "missing.pem: no such file" in started.stderr


def test_a_stream_in_a_coding_that_does_not_decode_ends_in_an_error_the_sdk_raises(start_firewall):
    # A raw upstream: the fake cannot send a Content-Encoding. Its stream starts as gzip
    # and then is not gzip: what was decoded is checked and sent, then the stream ends.
    start = gzip.compress(b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
                          b'"choices":[{"index":0,"delta":{"content":"Fine. "},"finish_reason":null}]}\n\n')
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n")
                half = start[: len(start) - 8]  # the compressed events, without gzip's trailer
                connection.sendall(b"%x\r\n%s\r\n" % (len(half), half))
                garbage = b"\x00not gzip at all\xff" * 4
                connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(garbage), garbage))

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        running = start_firewall(POLICY, upstreams={"openai": f"http://127.0.0.1:{listener.getsockname()[1]}"})
        agent = openai.OpenAI(base_url=running.openai_base, api_key="sk-test", max_retries=0, timeout=30)
        received = ""
        with pytest.raises(openai.APIError, match="cannot inspect"):
            for part in agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}],
                                                      stream=True):
                received += (part.choices[0].delta.content or "") if part.choices else ""
        server.join(10)
    assert "cannot inspect" in running.records(at_least=2)[-1]["error"]
