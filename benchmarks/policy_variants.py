"""Variants of a policy that the benchmarks compare: the default pack without its semantic
stage (what the cheap detectors alone cost and catch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

__all__ = ["strip_semantic"]


def _is_semantic(name: object) -> bool:
    return isinstance(name, str) and (name == "semantic" or name.startswith("semantic:"))


def _uses_semantic(rule: Any) -> bool:
    if not hasattr(rule, "get"):
        return False
    match = rule.get("match") or {}
    if hasattr(match, "get"):
        if match.get("semantic") is not None:
            return True
        if any(_is_semantic(name) for name in (match.get("scores") or {})):
            return True
        if any(_is_semantic(name) for name in (match.get("detect") or ())):
            return True
    condition = rule.get("if")
    return isinstance(condition, str) and re.search(r"\bsemantic\b", condition) is not None


def strip_semantic(policy: Path, into: Path) -> list[str]:
    """Write `policy` to `into` without its semantic stage: the rules whose `match` has a
    `semantic` key, a `semantic…` score or detection, or whose `if` names `semantic`; the
    `detectors.semantic` entry; cascades (`when:`) on semantic scores; and the policy's tests
    that name a removed rule. Returns what was removed, rules first; no removed rule means
    the policy has no semantic stage (and `into` is not meaningful)."""
    yaml = YAML()  # round-trip: comments, order and quoting of everything kept stay as they were
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never re-wrap a line
    yaml.indent(mapping=2, sequence=4, offset=2)  # the project's policies' layout
    data = yaml.load(policy.read_text(encoding="utf-8"))
    if not hasattr(data, "get"):
        raise SystemExit(f"{policy}: not a YAML map")
    removed: list[str] = []
    rules = data.get("rules") or []
    removed_ids = set()
    for index in reversed(range(len(rules))):  # in place, so the comments between rules stay
        if _uses_semantic(rules[index]):
            removed_ids.add(str(rules[index].get("id")))
            del rules[index]
    removed += [f"rule `{rule_id}`" for rule_id in sorted(removed_ids)]
    detectors = data.get("detectors") or {}
    if "semantic" in detectors:
        del detectors["semantic"]
        removed.append("`detectors.semantic`")
    for name, spec in detectors.items():
        when = spec.get("when") if hasattr(spec, "get") else None
        for score in [s for s in (when or {}) if _is_semantic(s)]:
            del when[score]
            removed.append(f"`detectors.{name}.when.{score}`")
        if when is not None and not when:
            del spec["when"]
    tests = data.get("tests") or []
    for index in reversed(range(len(tests))):
        expect = tests[index].get("expect") if hasattr(tests[index], "get") else None
        named = {str(expect.get("rule")), *map(str, expect.get("rules") or ())} if hasattr(expect, "get") else set()
        if named & removed_ids:
            del tests[index]
    with into.open("w", encoding="utf-8") as handle:
        yaml.dump(data, handle)
    return removed if removed_ids else []
