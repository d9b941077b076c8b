"""`agent-firewall check` names every mistake in a policy with file:line:column."""

from __future__ import annotations

import pytest

from firewall.cli import main
from firewall.policy import PolicyError, load_policy_file

BROKEN = """\
version: 1
name: broken
lists:
  acts: [murder, kill]
patterns:
  lookahead: 'foo(?=bar)'
rules:
  - id: one
    match: {lists: [acts]}
    action: block
    colour: red
  - id: one
    if: "scores.toxicity >"
    action: block
  - id: three
    if: "agnet == 'planner'"
    action: tag
  - id: four
    match: {lists: [missing_list], scores: {toxicity: "high"}}
    action: explode
  - id: five
    direction: sideways
    match: {patterns: [lookahead]}
    action: {redact: "[{label}]"}
"""


def check(tmp_path, text, capsys):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    status = main(["check", str(path)])
    captured = capsys.readouterr()
    return status, str(path), captured.err.splitlines(), captured.out


def test_check_reports_every_mistake_with_its_position(tmp_path, capsys):
    status, path, lines, _ = check(tmp_path, BROKEN, capsys)
    assert status != 0
    assert any(line.startswith(f"{path}:6:14: patterns.lookahead:") for line in lines), lines
    assert any(line.startswith(f"{path}:13:9: rules[1].if: invalid CEL expression") for line in lines), lines
    expected_prefixes = {
        f"{path}:11:5: rules[0].colour: unknown field",
        f"{path}:19:55: rules[3].match.scores.toxicity:",
        f"{path}:20:13: rules[3].action:",
        f"{path}:22:16: rules[4].direction:",
    }
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)


def test_semantic_mistakes_are_found_once_the_shape_is_right(tmp_path, capsys):
    fixed_shape = (BROKEN.replace("    colour: red\n", "")
                   .replace('scores: {toxicity: "high"}', "scores: {toxicity: 0.5}")
                   .replace("action: explode", "action: block")
                   .replace("direction: sideways", "direction: request"))
    status, path, lines, _ = check(tmp_path, fixed_shape, capsys)
    assert status != 0
    text = "\n".join(lines)
    assert f"{path}:6:14: patterns.lookahead:" in text and "lookahead" in text
    assert f"{path}:11:9: rules[1].id: duplicate rule id 'one' (first used by rules[0])" in lines
    assert any(line.startswith(f"{path}:12:9: rules[1].if: invalid CEL expression") for line in lines), lines
    assert any(line.startswith(f"{path}:15:9: rules[2].if: unknown variable agnet") for line in lines), lines
    assert any(line.startswith(f"{path}:18:21: rules[3].match.lists[0]: unknown list 'missing_list'") for line in lines), lines
    assert not any("unknown pattern" in line for line in lines), lines  # a broken pattern is reported once


def test_regex_re2_cannot_compile_is_a_load_error_naming_the_pattern(load_policy):
    with pytest.raises(PolicyError) as raised:
        load_policy("""
            version: 1
            name: p
            patterns: {backref: '(a)\\1'}
            rules:
              - {id: r, match: {patterns: [backref]}, action: block}
        """)
    (problem, *_) = raised.value.problems
    assert problem.where == "patterns.backref"
    assert "backref" in problem.message and problem.line == 3


def test_yaml_syntax_error_and_duplicate_keys(tmp_path, capsys):
    status, path, lines, _ = check(tmp_path, "version: 1\nname: [unclosed\n", capsys)
    assert status != 0 and lines[0].startswith(f"{path}:") and "invalid YAML" in lines[0]
    status, path, lines, _ = check(tmp_path, "version: 1\nname: a\nname: b\nrules: []\n", capsys)
    assert status != 0 and lines[0].startswith(f"{path}:3:1:") and "duplicate key" in lines[0]


def test_missing_required_fields_and_wrong_types(tmp_path, capsys):
    status, path, lines, _ = check(tmp_path, "version: 2\nrules:\n  - id: x\n    action: block\n    if: 42\n", capsys)
    text = "\n".join(lines)
    assert status != 0
    assert f"{path}:1:10: version:" in text
    assert "missing required field 'name'" in text
    assert f"{path}:5:9: rules[0].if:" in text


def test_a_good_policy_checks_clean(tmp_path, capsys):
    status, _, lines, out = check(tmp_path, "version: 1\nname: ok\nrules:\n  - {id: r, if: \"agent == 'x'\", action: {tag: t}}\n", capsys)
    assert status == 0 and lines == [] and "ok: policy ok, 1 rules" in out


def test_unreadable_policy_is_a_clear_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy_file(tmp_path / "missing.yaml")


def test_policy_tests_must_name_rules_that_exist(load_policy):
    with pytest.raises(PolicyError, match="expects rule 'ghost'"):
        load_policy("""
            version: 1
            name: p
            rules: [{id: r, if: "agent == 'x'", action: block}]
            tests: [{name: t, request: hi, expect: {action: block, rule: ghost}}]
        """)
