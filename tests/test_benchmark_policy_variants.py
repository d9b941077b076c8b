"""The benchmarks' "cheap" variant of the default pack: the pack without its semantic stage."""

from __future__ import annotations

import sys
from pathlib import Path

from firewall import load_policy_file
from firewall.policy.testing import run_policy_tests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import policy_variants  # noqa: E402


def test_the_default_pack_without_its_semantic_stage_loads_and_passes_its_remaining_tests(tmp_path):
    cheap = tmp_path / "cheap.yaml"
    removed = policy_variants.strip_semantic(ROOT / "policies" / "default.yaml", cheap)
    assert "`detectors.semantic`" in removed and "rule `violence-against-person`" in removed
    policy = load_policy_file(cheap)
    assert "semantic" not in policy.detectors
    assert not any(name.startswith("semantic") for rule in policy.rules for name in rule.detectors)
    assert {"violent-suggestion", "prompt-injection", "redact-secrets"} <= {rule.id for rule in policy.rules}
    results = run_policy_tests(policy)
    assert results and all(result.passed for result in results), [r.failure for r in results if not r.passed]


def test_a_policy_without_a_semantic_stage_is_reported_as_such(tmp_path):
    assert policy_variants.strip_semantic(ROOT / "benchmarks" / "passthrough.yaml", tmp_path / "same.yaml") == []
