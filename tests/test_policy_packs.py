"""Every policy pack in policies/ loads, and every one of its own test cases passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from firewall import Engine, load_policy_file
from firewall.policy.testing import run_policy_tests

PACKS = sorted((Path(__file__).resolve().parents[1] / "policies").glob("*.yaml"))


def test_there_is_a_default_pack():
    assert "default.yaml" in [pack.name for pack in PACKS]


@pytest.mark.parametrize("pack", PACKS, ids=[pack.stem for pack in PACKS])
def test_pack_passes_its_own_tests(pack: Path):
    policy = load_policy_file(pack)
    assert policy.tests, f"{pack.name} has no tests"
    results = run_policy_tests(policy, Engine(policy))
    failures = [f"{result.name}: {result.failure}" for result in results if not result.passed]
    assert not failures, "\n".join(failures)
