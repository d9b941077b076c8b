"""Forward mode: agents behind HTTPS_PROXY, the firewall as a TLS-intercepting proxy.

The firewall runs as `agent-firewall run --mode forward` from the mitmproxy environment
(.venv-mitm: mitmproxy 11.0.x cannot share one with the openai SDK, see the Makefile);
this test process is the agent, with the official openai SDK sending through the proxy
and trusting the firewall's CA. The upstream is the fake one, over TLS on loopback, with
a certificate from a test CA the firewall is told to trust (--upstream-ca).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from cryptography import x509

from firewall.audit import read_records
from firewall.cli import main
from firewall.testing import free_port
from tests.tls_upstream import TestCA, TLSUpstream, make_test_ca, running_tls_upstream

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
MITM_CLI_ENV = "AGENT_FIREWALL_MITM"  # the agent-firewall script of the mitmproxy environment
SKIP_ENV = "AFW_SKIP_MITM"
OPENAI_KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
VIOLENT = "the best solution is to murder him in his sleep"
_LISTENING = re.compile(r"forward proxy listening on http://([0-9.]+):(\d+)")
_STARTS_WITHIN = 60.0


def mitm_cli() -> Path:
    """The forward-mode firewall's command. A missing environment fails the test and says
    how to build it, unless AFW_SKIP_MITM=1 asks to skip: it must not pass quietly."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the forward-mode tests are skipped")
    configured = os.environ.get(MITM_CLI_ENV)
    path = Path(configured) if configured else ROOT / ".venv-mitm" / "bin" / "agent-firewall"
    if not path.is_absolute():
        path = ROOT / path
    if not path.exists():
        pytest.fail(f"{path} does not exist: forward mode runs from an environment of its own; build it with "
                    f"`make install-mitm` (make test does), point {MITM_CLI_ENV} at another one, "
                    f"or set {SKIP_ENV}=1 to skip these tests", pytrace=False)
    return path


@dataclass
class ForwardFirewall:
    """`agent-firewall run --mode forward` in a process of its own."""

    process: subprocess.Popen[str]
    audit_path: Path
    ca_dir: Path
    port: int = 0
    reverse_port: int | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "mitmproxy-ca-cert.pem"

    def client(self, base_url: str, **kwargs: Any) -> openai.OpenAI:
        """The openai SDK as an agent behind HTTPS_PROXY that trusts the firewall's CA."""
        http = httpx2.Client(proxy=self.proxy, verify=ssl.create_default_context(cafile=str(self.ca_cert)))
        headers = kwargs.pop("default_headers", {"X-Agent-Id": "tester"})
        return openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, http_client=http,
                             default_headers=headers, **kwargs)

    def records(self, at_least: int = 0, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            records = list(read_records(self.audit_path)) if self.audit_path.exists() else []
            if len(records) >= at_least or time.monotonic() > deadline:
                return records
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    @property
    def log(self) -> str:
        return "".join(self.lines)


def start_forward(directory: Path, policy: str, ca: TestCA, *, ca_dir: Path, extra: tuple[str, ...] = ()) -> ForwardFirewall:
    directory.mkdir(parents=True, exist_ok=True)
    policy_path = directory / "policy.yaml"
    policy_path.write_text(policy)
    audit = directory / "audit.jsonl"
    mode = ("--mode", "forward", "--listen", "127.0.0.1:0") if not extra else ()
    command = [str(mitm_cli()), "run", *mode, *extra, "--policy", str(policy_path), "--audit-log", str(audit),
               "--ca-dir", str(ca_dir), "--upstream-ca", str(ca.cert)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    running = ForwardFirewall(process, audit, ca_dir)
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            running.lines.append(line)
            found = _LISTENING.search(line)
            if found:
                running.port = int(found.group(2))
                ready.set()
        ready.set()

    threading.Thread(target=read, name="forward-firewall-stderr", daemon=True).start()
    if not ready.wait(_STARTS_WITHIN) or not running.port:
        running.stop()
        pytest.fail(f"the forward firewall did not start ({shlex.join(command)}):\n{running.log}", pytrace=False)
    return running


# The default pack's semantic rules need the `semantic` extra (torch), which the mitmproxy
# environment does without: these tests use a policy of the pack's cheap rules.
POLICY = """\
version: 1
name: forward-tests
lists:
  violent_acts: [murder, poison, strangle]
  people: [him, her, them, someone]
patterns:
  openai_key: 'sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}'
rules:
  - id: violent-suggestion
    match:
      near: {list: violent_acts, near: people, within: 6}
    action: block
  - id: redact-secrets
    match: {patterns: [openai_key]}
    action: {redact: "[REDACTED:{label}]"}
"""


def policy_for(upstream: TLSUpstream, *, unknown_hosts: str = "refuse", violations: int = 0) -> str:
    """The policy, naming the upstream's host; `violations` blocked exchanges quarantine an
    agent (0: never, so that one test's blocks do not change the next one's answers)."""
    return POLICY + f"quarantine:\n  violations: {violations}\n  window: 600\n" + f'forward:\n  hosts: ["127.0.0.1:{upstream.port}"]\n  unknown_hosts: {unknown_hosts}\n'


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("upstream-ca"))


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firewall-ca") / "ca"


@pytest.fixture(scope="module")
def tls_upstream(test_ca: TestCA) -> Iterator[TLSUpstream]:
    with running_tls_upstream(test_ca) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def forward(tmp_path_factory: pytest.TempPathFactory, tls_upstream: TLSUpstream, test_ca: TestCA,
            ca_dir: Path) -> Iterator[ForwardFirewall]:
    running = start_forward(tmp_path_factory.mktemp("forward"), policy_for(tls_upstream), test_ca, ca_dir=ca_dir)
    yield running
    running.stop()


@pytest.fixture
def upstream(tls_upstream: TLSUpstream) -> TLSUpstream:
    tls_upstream.fake.reset()
    return tls_upstream


def new_records(running: ForwardFirewall, before: int, count: int) -> list[dict[str, Any]]:
    return running.records(at_least=before + count)[before:]


def stream_text(client: openai.OpenAI) -> tuple[str, str | None]:
    text, finish = "", None
    for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


# -- inspected hosts -------------------------------------------------------------------


def test_a_benign_completion_passes_through_the_forward_proxy(forward, upstream):
    upstream.fake.add_reply("Paris.")
    before = len(forward.records())
    raw = forward.client(upstream.url + "/v1").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}])

    assert raw.parse().choices[0].message.content == "Paris."
    (received,) = upstream.fake.received
    assert received.path == "/v1/chat/completions" and received.headers["x-agent-id"] == "tester"
    request_record, response_record = new_records(forward, before, 2)
    assert raw.headers["x-firewall-exchange-id"] == request_record["exchange"] == response_record["exchange"]
    assert (request_record["action"], response_record["action"]) == ("allow", "allow")
    assert request_record["agent"] == "tester"


def test_a_blocked_request_never_reaches_the_upstream(forward, upstream):
    before = len(forward.records())
    with pytest.raises(openai.PermissionDeniedError) as raised:
        forward.client(upstream.url + "/v1").chat.completions.create(
            model="m", messages=[{"role": "user", "content": VIOLENT}])

    assert "blocked by agent-firewall" in str(raised.value)
    assert upstream.fake.received == []
    (record,) = new_records(forward, before, 1)
    assert record["action"] == "block" and record["direction"] == "request"


def test_a_redacted_request_reaches_the_upstream_redacted(forward, upstream):
    forward.client(upstream.url + "/v1").chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"deploy with {OPENAI_KEY} please"}])

    (received,) = upstream.fake.received
    assert received.json["messages"][0]["content"] == "deploy with [REDACTED:openai_key] please"
    assert int(received.headers["content-length"]) == len(received.body)


def test_a_blocked_answer_is_withheld(forward, upstream):
    upstream.fake.add_reply(VIOLENT)
    with pytest.raises(openai.PermissionDeniedError):
        forward.client(upstream.url + "/v1").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def test_a_benign_stream_arrives_as_it_does_through_no_proxy(forward, upstream, test_ca):
    reply = {"text": "Three findings: latency is flat, errors are rare, costs fell."}
    upstream.fake.script([reply, reply])
    before = len(forward.records())
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-test", max_retries=0,
                           http_client=httpx2.Client(verify=ssl.create_default_context(cafile=str(test_ca.cert))))

    assert stream_text(forward.client(upstream.url + "/v1")) == stream_text(direct) == (reply["text"], "stop")
    _, stream_record = new_records(forward, before, 2)
    assert stream_record["stream"] is True and stream_record["action"] == "allow"
    assert stream_record["response"]["text"]["choices.0.content"] == reply["text"]


def test_a_stream_is_released_as_checked_and_ended_cleanly_at_a_block(forward, upstream):
    upstream.fake.add_reply(VIOLENT)
    before = len(forward.records())
    events: list[str] = []
    http = httpx2.Client(proxy=forward.proxy, verify=ssl.create_default_context(cafile=str(forward.ca_cert)))
    with http.stream("POST", upstream.url + "/v1/chat/completions", headers={"X-Agent-Id": "tester"},
                     json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])

    # Streamed, not buffered: the text before the offending words arrived event by event.
    chunks = [orjson.loads(data) for data in events if data != "[DONE]"]
    text = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
    assert text.strip() == "the best solution is to"
    assert len(chunks) > 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter" and events[-1] == "[DONE]"
    _, stream_record = new_records(forward, before, 2)
    assert stream_record["action"] == "block" and "murder" not in orjson.dumps(stream_record["response"]).decode()


def test_the_sdk_reads_a_blocked_stream_to_its_end(forward, upstream):
    upstream.fake.add_reply(VIOLENT)
    text, finish = stream_text(forward.client(upstream.url + "/v1"))
    assert finish == "content_filter" and "murder" not in text


def test_an_upstream_that_breaks_off_mid_stream_releases_nothing_unchecked(forward, upstream):
    upstream.fake.add_reply("one two three four five six seven", drop_after=3)
    before = len(forward.records())
    with pytest.raises(openai.APIConnectionError):
        stream_text(forward.client(upstream.url + "/v1"))
    _, stream_record = new_records(forward, before, 2)
    assert stream_record["stream"] is True and "broke off" in stream_record["note"]


# -- hosts the policy does not name ----------------------------------------------------


def test_a_host_the_policy_does_not_name_is_refused(forward, upstream):
    before = len(forward.records())
    # The same server under another name: not the host the policy names.
    other = forward.client(f"https://localhost:{upstream.port}/v1")
    with pytest.raises(openai.APIConnectionError) as raised:
        other.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

    assert "403" in str(raised.value.__cause__) and "forward.hosts" in str(raised.value.__cause__)
    assert upstream.fake.received == []
    (record,) = new_records(forward, before, 1)
    assert record["event"] == "unknown_host" and record["route"] == f"localhost:{upstream.port}"


def test_a_host_header_inside_a_tunnel_cannot_send_the_request_elsewhere(forward, upstream):
    """Inside a CONNECT tunnel, mitmproxy connects to the CONNECT's host (the one the
    policy was checked against), whatever Host the request inside names."""
    upstream.fake.add_reply("answered by the named host")
    with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as raw:
        raw.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(forward.ca_cert))
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
            tls.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: elsewhere.invalid:%d\r\nX-Agent-Id: tester\r\n"
                        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (upstream.port, len(body), body))
            answer = _read_answer(tls)

    assert answer.startswith(b"HTTP/1.1 200") and b"answered by the named host" in answer
    (received,) = upstream.fake.received
    assert received.headers["host"] == f"elsewhere.invalid:{upstream.port}"


def test_an_unnamed_host_is_tunnelled_uninspected_when_the_policy_says_so(tmp_path, tls_upstream, test_ca, ca_dir):
    upstream = tls_upstream
    upstream.fake.reset()
    upstream.fake.add_reply("tunnelled")
    running = start_forward(tmp_path / "tunnel", policy_for(upstream, unknown_hosts="tunnel"), test_ca, ca_dir=ca_dir)
    try:
        # Not decrypted: the agent talks TLS with the upstream itself, and so trusts the
        # upstream's CA, not the firewall's.
        http = httpx2.Client(proxy=running.proxy, verify=ssl.create_default_context(cafile=str(test_ca.cert)))
        agent = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="sk-test", max_retries=0,
                              http_client=http)
        answer = agent.chat.completions.create(model="m", messages=[{"role": "user", "content": VIOLENT}])

        assert answer.choices[0].message.content == "tunnelled"
        assert len(upstream.fake.received) == 1  # uninspected: even words a rule would block
        (record,) = running.records(at_least=1)
        assert record["event"] == "tunnelled_host" and record["action"] == "allow"
    finally:
        running.stop()


# -- the CA and the environment agents need --------------------------------------------


def test_ca_creates_the_ca_once_and_prints_how_to_trust_it(tmp_path):
    directory = tmp_path / "ca"
    command = [str(mitm_cli()), "ca", "--ca-dir", str(directory), "--listen", "127.0.0.1:8081"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)

    assert "(created now)" in first.stdout and "(already there)" in again.stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in first.stdout.splitlines()
                   if line.startswith("export "))
    assert exports["HTTPS_PROXY"] == "http://127.0.0.1:8081"
    assert exports["NODE_EXTRA_CA_CERTS"] == str(directory / "mitmproxy-ca-cert.pem")
    bundle = Path(exports["SSL_CERT_FILE"])
    assert exports["REQUESTS_CA_BUNDLE"] == exports["CURL_CA_BUNDLE"] == str(bundle)
    ca_pem = (directory / "mitmproxy-ca-cert.pem").read_bytes()
    assert bundle.read_bytes().startswith(ca_pem.rstrip()) and bundle.read_bytes().count(b"BEGIN CERTIFICATE") > 10
    assert ((directory / "mitmproxy-ca.pem").stat().st_mode & 0o077) == 0  # the key: its owner's only
    assert "agent-firewall" in x509.load_pem_x509_certificate(ca_pem).subject.rfc4514_string()


def test_an_agent_set_up_with_the_printed_environment_goes_through_the_firewall(forward, upstream):
    upstream.fake.add_reply("through the proxy")
    printed = subprocess.run([str(mitm_cli()), "ca", "--ca-dir", str(forward.ca_dir), "--listen",
                              f"127.0.0.1:{forward.port}"], capture_output=True, text=True, timeout=60, check=True)
    environment = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    environment.update(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines()
                       if line.startswith("export "))
    agent = ("import openai; client = openai.OpenAI(base_url=%r, api_key='sk-test', max_retries=0, "
             "default_headers={'X-Agent-Id': 'env-agent'}); "
             "print(client.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'hi'}])"
             ".choices[0].message.content)") % (upstream.url + "/v1")
    done = subprocess.run([sys.executable, "-c", agent], capture_output=True, text=True, timeout=60, env=environment)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "through the proxy"
    assert upstream.fake.received[0].headers["x-agent-id"] == "env-agent"  # it went through the firewall


# -- one process, two listeners ----------------------------------------------------------


def test_one_process_serves_reverse_and_forward_with_one_agent_state(tmp_path, tls_upstream, test_ca, ca_dir):
    upstream = tls_upstream
    upstream.fake.reset()
    reverse_port = free_port()
    policy = policy_for(upstream, violations=2)
    running = start_forward(tmp_path / "both", policy, test_ca, ca_dir=ca_dir,
                            extra=("--mode", "reverse,forward", "--listen", f"127.0.0.1:{reverse_port}",
                                   "--listen", "127.0.0.1:0", "--upstream", f"openai={upstream.url}"))
    try:
        through_forward = running.client(upstream.url + "/v1", default_headers={"X-Agent-Id": "mallory"})
        for _ in range(2):
            with pytest.raises(openai.PermissionDeniedError):
                through_forward.chat.completions.create(model="m", messages=[{"role": "user", "content": VIOLENT}])
        # Quarantined by what it did through the forward listener, refused by the reverse one.
        through_reverse = openai.OpenAI(base_url=f"http://127.0.0.1:{reverse_port}/v1", api_key="sk-test",
                                        max_retries=0, default_headers={"X-Agent-Id": "mallory"})
        with pytest.raises(openai.APIStatusError) as raised:
            through_reverse.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
        assert "quarantine" in str(raised.value).lower()
        assert upstream.fake.received == []
    finally:
        running.stop()


def test_a_responses_conversation_goes_on_after_a_refusal_the_firewall_made(tmp_path, tls_upstream, test_ca, ca_dir):
    upstream = tls_upstream
    upstream.fake.reset()
    upstream.fake.known_responses_only = True  # as OpenAI: an id it did not issue is a 400
    upstream.fake.add_reply("Noted.")
    refusing = policy_for(upstream).replace("    action: block\n", "    action: block\n    respond: refusal\n")
    running = start_forward(tmp_path / "refusing", refusing, test_ca, ca_dir=ca_dir)
    try:
        agent = running.client(upstream.url + "/v1")
        first = agent.responses.create(model="m", input="Plan the rollout.")
        refused = agent.responses.create(model="m", input=VIOLENT, previous_response_id=first.id)
        assert refused.id.startswith("resp_fw_") and refused.output[0].content[0].type == "refusal"
        third = agent.responses.create(model="m", input="Back to the rollout.", previous_response_id=refused.id)
        assert third.output_text == "Noted."
        assert [r.json.get("previous_response_id") for r in upstream.fake.received] == [None, first.id]
    finally:
        running.stop()
        upstream.fake.reset()


def _read_answer(connection: ssl.SSLSocket) -> bytes:
    """One HTTP/1.1 answer with a Content-Length, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


# -- refusals before anything listens ------------------------------------------------------


def test_forward_mode_needs_a_policy_that_names_hosts(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY.read_text())
    assert main(["run", "--mode", "forward", "--policy", str(policy), "--ca-dir", str(tmp_path / "ca")]) == 2
    error = capsys.readouterr().err
    assert "names no host to inspect" in error and "forward:" in error and "hosts:" in error


def test_modes_and_listen_addresses_are_checked(tmp_path, capsys):
    policy = str(DEFAULT_POLICY)
    assert main(["run", "--mode", "sideways", "--policy", policy]) == 2
    assert "expected reverse, forward, or reverse,forward" in capsys.readouterr().err
    assert main(["run", "--mode", "reverse,forward", "--policy", policy, "--listen", "127.0.0.1:8080"]) == 2
    assert "one --listen per mode" in capsys.readouterr().err
    assert main(["run", "--mode", "reverse,forward", "--policy", policy, "--listen", "127.0.0.1:8080",
                 "--listen", "127.0.0.1:8080"]) == 2
    assert "different addresses" in capsys.readouterr().err


# -- limits and shutdown ---------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_mitmproxy_reads_it_and_recorded(tmp_path, tls_upstream, test_ca, ca_dir):
    running = start_forward(tmp_path, policy_for(tls_upstream), test_ca, ca_dir=ca_dir,
                            extra=("--mode", "forward", "--listen", "127.0.0.1:0", "--max-body-bytes", "4096"))
    try:
        tls_upstream.fake.reset()
        client = running.client(tls_upstream.url + "/v1")
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x " * 4000}])
        assert refused.value.status_code == 413
        assert tls_upstream.fake.received == []
        [record] = running.records(at_least=1)
        assert (record["event"], record["status"]) == ("body_too_large", 413)
        assert "larger than the firewall's limit of 4096 bytes" in record["error"]
    finally:
        running.stop()


def test_sigterm_lets_a_forwarded_stream_finish_then_exits_0(tmp_path, tls_upstream, test_ca, ca_dir):
    running = start_forward(tmp_path, policy_for(tls_upstream), test_ca, ca_dir=ca_dir,
                            extra=("--mode", "forward", "--listen", "127.0.0.1:0", "--drain-seconds", "60"))
    words = "one two three four five six seven eight nine ten eleven twelve"
    try:
        tls_upstream.fake.reset()
        tls_upstream.fake.add_reply(words, chunk_delay=0.1)
        stream = running.client(tls_upstream.url + "/v1").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "count"}], stream=True)
        parts = iter(stream)
        received = next(parts).choices[0].delta.content or ""  # the stream is in flight
        running.process.send_signal(signal.SIGTERM)
        received += "".join(part.choices[0].delta.content or "" for part in parts if part.choices)
        assert received == words
        assert running.process.wait(60) == 0, running.log
        records = running.records(at_least=2)
        assert [(r["direction"], r["action"]) for r in records] == [("request", "allow"), ("response", "allow")]
        assert records[1]["stream"] is True and records[1].get("note") is None
    finally:
        running.stop()
