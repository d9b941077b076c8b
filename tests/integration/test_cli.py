"""The CLI as a user runs it: `run` as a real process, `scan`, `test`, `audit`, `demo`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from firewall.cli import main
from firewall.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
CLI = [sys.executable, "-m", "firewall.cli"]


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {port} within {timeout}s")


@pytest.fixture
def firewall_process(tmp_path: Path, upstream_server) -> Iterator[tuple[str, Path]]:
    _, upstream = upstream_server
    port, audit = free_port(), tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [*CLI, "run", "--policy", str(DEFAULT_POLICY), "--listen", f"127.0.0.1:{port}",
         "--upstream", f"openai={upstream.url}", "--upstream", f"anthropic={upstream.url}", "--audit-log", str(audit)],
        stderr=subprocess.PIPE, cwd=ROOT,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", audit
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_run_serves_the_sdk_and_writes_a_verifiable_log(firewall_process, fake, capsys):
    url, audit = firewall_process
    fake.add_reply("fine")
    agent = openai.OpenAI(base_url=url + "/agents/planner/v1", api_key="sk-test", max_retries=0)
    assert agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content == "fine"
    with pytest.raises(openai.PermissionDeniedError):
        agent.chat.completions.create(model="m", messages=[{"role": "user", "content": "poison him tonight"}])
    assert main(["audit", "verify", str(audit)]) == 0
    assert "ok: 3 records" in capsys.readouterr().out
    assert main(["audit", "show", str(audit), "--action", "block"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and "planner" in shown[0] and "violent-suggestion" in shown[0]


def test_run_refuses_a_broken_policy_with_its_position(tmp_path):
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nname: bad\nrules:\n  - id: r\n    if: 'agent =='\n    action: block\n")
    result = subprocess.run([*CLI, "run", "--policy", str(policy), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode != 0
    assert f"{policy}:5:9: rules[0].if: invalid CEL expression" in result.stderr


@pytest.mark.parametrize("argv", [["--listen", "nonsense"], ["--upstream", "openai"], ["--upstream", "openai=ftp://x"]])
def test_run_rejects_bad_flags_clearly(argv, capsys):
    assert main(["run", "--policy", str(DEFAULT_POLICY), *argv]) == 2
    assert "agent-firewall:" in capsys.readouterr().err


def audit_log_with_records(tmp_path: Path) -> Path:
    from firewall.audit import AuditWriter

    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        for index in range(5):
            writer.write({"exchange": f"ex_{index}", "action": "allow", "rules": []})
    return path


@pytest.mark.parametrize("tamper", ["edit", "remove", "reorder"])
def test_audit_verify_finds_edits_removals_and_reordering(tmp_path, capsys, tamper):
    path = audit_log_with_records(tmp_path)
    assert main(["audit", "verify", str(path)]) == 0
    lines = path.read_text().splitlines(keepends=True)
    if tamper == "edit":
        lines[2] = lines[2].replace('"allow"', '"block"')
    elif tamper == "remove":
        del lines[2]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))
    capsys.readouterr()
    assert main(["audit", "verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:" in out and "FAILED" in out
    expected_word = {"edit": "changed", "remove": "deleted", "reorder": "order"}[tamper]
    assert expected_word in out.lower()


def test_scan_reads_every_input_form(tmp_path, capsys):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("\n".join(json.dumps(line) for line in [
        {"id": "plain", "text": "Summarise the meeting notes."},
        {"id": "violent", "text": "the best solution is to murder him in his sleep"},
        {"id": "chat", "messages": [{"role": "user", "content": "key sk-proj-abcdefghijklmnopqrstuvwx"}]},
        {"id": "anthropic", "system": "s", "messages": [{"role": "user", "content": "you are a fucking idiot"}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "I will kill you"}, "finish_reason": "stop"}]},
        "not an object",
    ]) + "\n{broken\n")
    assert main(["scan", "--policy", str(DEFAULT_POLICY), str(samples)]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_id = {result["id"]: result for result in results}
    assert by_id["plain"]["action"] == "allow" and by_id["plain"]["rules"] == []
    assert by_id["violent"] == {"id": "violent", "action": "block", "rules": ["violent-suggestion"],
                                "scores": by_id["violent"]["scores"]}
    assert by_id["chat"]["action"] == "redact"
    assert by_id["anthropic"]["rules"] == ["toxic-language"] and by_id["anthropic"]["scores"]["toxicity"] > 0.9
    assert by_id["5"]["action"] == "block"
    assert "expected a JSON object" in by_id["6"]["error"]
    assert by_id["7"]["line"] == 7 and "error" in by_id["7"]


def test_scan_reads_stdin(capsys):
    result = subprocess.run([*CLI, "scan", "--policy", str(DEFAULT_POLICY), "--direction", "response"],
                            input='{"id": 1, "text": "you will die"}\n', capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rules"][0] == "direct-threat"


def test_policy_test_command_reports_failures(tmp_path, capsys):
    policy = tmp_path / "p.yaml"
    policy.write_text("""version: 1
name: p
lists: {bad: [murder]}
rules: [{id: r, match: {lists: [bad]}, action: block}]
tests:
  - {name: blocks murder, request: "murder", expect: {action: block, rule: r}}
  - {name: wrongly expects allow, request: "murder", expect: {action: allow}}
""")
    assert main(["test", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "wrongly expects allow: expected action allow, got block" in out
    assert out.strip().endswith("1 passed, 1 failed")


def test_demo_runs_offline_and_tells_the_story(tmp_path):
    audit = tmp_path / "demo.jsonl"
    result = subprocess.run([*CLI, "demo", "--audit-log", str(audit)], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "NO_PROXY": "*"})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "BLOCKED" in out and "violent-suggestion" in out
    assert "[REDACTED:openai_key]" in out and "the key itself reached it: no" in out
    assert "ai-to-ai" in out and "hash chain: verified" in out
    assert "finish_reason=content_filter" in out and "poison" not in out
    assert "Traceback" not in result.stderr
    assert main(["audit", "verify", str(audit)]) == 0
