"""`agent-firewall test`: a line per case, a summary, the exit status, and JUnit XML."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GOOD = """
version: 1
name: good
lists: {banned: [pineapple]}
rules:
  - {id: no-pineapple, match: {lists: [banned]}, action: block}
tests:
  - {name: pineapple is blocked, request: "I want pineapple", expect: {action: block, rule: no-pineapple}}
  - {name: mango passes, request: "I want mango", expect: {action: allow}}
"""
FAILING = GOOD.replace("name: good", "name: failing").replace(
    'request: "I want mango", expect: {action: allow}', 'request: "pineapple again", expect: {action: allow}')
BROKEN = "version: 1\nname: broken\nrules: [{id: x, action: explode}]\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firewall.cli", "test", *args], capture_output=True, text=True,
                          timeout=120)


def test_passing_suite_exits_zero_and_writes_junit(tmp_path: Path):
    (tmp_path / "good.yaml").write_text(GOOD)
    done = run("-v", str(tmp_path / "good.yaml"), "--junit", str(tmp_path / "out.xml"))
    assert done.returncode == 0, done.stderr
    assert "PASS" in done.stdout and done.stdout.strip().endswith("2 passed, 0 failed")
    root = ET.parse(tmp_path / "out.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "0", "0")
    assert [case.get("name") for case in root.iter("testcase")] == ["pineapple is blocked", "mango passes"]


def test_a_failing_case_and_a_broken_policy_in_a_directory_fail_the_run(tmp_path: Path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "a-good.yaml").write_text(GOOD)
    (policies / "b-failing.yaml").write_text(FAILING)
    (policies / "c-broken.yaml").write_text(BROKEN)
    (policies / "notes.txt").write_text("not a policy")
    done = run(str(policies), "--junit", str(tmp_path / "out.xml"))
    assert done.returncode == 1
    assert "FAIL" in done.stdout and "mango passes: expected action allow, got block" in done.stdout
    assert done.stdout.strip().endswith("3 passed, 2 failed")  # one case, one policy that would not load
    assert "c-broken.yaml" in done.stderr  # its mistakes, file:line:column
    root = ET.parse(tmp_path / "out.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "1")
    suites = {suite.get("name").rsplit("/", 1)[-1]: suite for suite in root.iter("testsuite")}
    assert set(suites) == {"a-good.yaml", "b-failing.yaml", "c-broken.yaml"}
    (failure,) = suites["b-failing.yaml"].iter("failure")
    assert "expected action allow, got block" in failure.get("message")
    (error,) = suites["c-broken.yaml"].iter("error")
    assert "agent-firewall check" in error.text
