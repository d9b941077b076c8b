"""The hold-back: the least a policy's mid-stream rules need, and no more."""

from __future__ import annotations

from pathlib import Path

import pytest

from firewall import load_policy_file
from firewall.holdback import HoldBack

DEFAULT = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"


@pytest.fixture(scope="module")
def default() -> tuple[HoldBack, object]:
    policy = load_policy_file(DEFAULT)
    return HoldBack.for_policy(policy, "openai_chat"), policy  # the MCP and A2A rules hold back nothing here


def held(hold: HoldBack, policy, text: str, released: int = 0) -> str:
    (found,) = policy.patterns.score([text[released:]])
    matches = [(released + m.start, released + m.end, m.label) for m in found.matches]
    return text[hold.hold_from(text, released, matches):]


@pytest.mark.parametrize(("text", "expected"), [
    ("The report is ready and the charts ", ""),  # nothing here could begin a match
    ("The quarterly numbers look", ""),
    ("the plan is to mur", "mur"),  # may become "murder"
    ("then set fire", "set fire"),  # may become "set fire to"
    ("Tell him: I know where", "I know where"),  # may become a threat
    ("my key is sk-pr", "sk-pr"),  # may become a key
    ("my key is s", "s"),
    ("access key AKIAIOSF", "AKIAIOSF"),
    ("ends with a dash -", "-"),  # may become -----BEGIN PRIVATE KEY-----
])
def test_only_what_could_still_become_a_match_is_held(default, text, expected):
    hold, policy = default
    assert held(hold, policy, text) == expected


def test_a_listed_term_waits_for_an_anchor_that_may_follow(default):
    hold, policy = default
    assert held(hold, policy, "the answer is murder and then") == "murder and then"
    far = "the answer is murder and then we all went home for the day"
    assert held(hold, policy, far) == ""  # six words on, no anchor came: it is not a suggestion


def test_what_was_released_is_never_held_again(default):
    hold, policy = default
    text = "the plan is to mur"
    assert hold.hold_from(text, len(text)) == len(text)
    assert hold.hold_from(text, 16) == len(text)  # no term can begin inside a word


def test_a_long_token_is_held_from_its_prefix(default):
    hold, policy = default
    assert held(hold, policy, "token: sk-proj-abcdefghij") == "sk-proj-abcdefghij"


def test_the_default_policy_needs_no_sentences_and_keeps_its_cap(default):
    hold, _ = default
    assert not hold.sentences and hold.cap == 2048 and hold.blind == 0
    assert {prefix for regex in hold.regexes for prefix in regex.width} >= {"sk-", "AKIA", "ASIA", "AIza", "eyJ", "ghp_"}


def test_model_rules_hold_whole_sentences(load_policy):
    policy = load_policy("""
        version: 1
        name: model
        rules: [{id: toxic, match: {scores: {toxicity: 0.9}}, action: block}]
    """)
    hold = HoldBack.for_policy(policy)
    assert hold.sentences
    assert held(hold, policy, "Fine. How are") == " How are"


def test_tag_rules_need_nothing_and_a_fixed_holdback_is_exact(load_policy):
    tags = load_policy("""
        version: 1
        name: tags
        stream: buffer
        lists: {bad: [murder]}
        rules: [{id: t, match: {lists: [bad]}, action: {tag: bad}}]
    """)
    assert HoldBack.for_policy(tags) == HoldBack(cap=2048, pattern_gated=True)  # no rule acts mid-stream
    assert tags.stream.mode == "buffer"
    fixed = load_policy("""
        version: 1
        name: fixed
        stream: {holdback: 10, max_holdback: 100}
        rules: []
    """)
    hold = HoldBack.for_policy(fixed)
    assert (hold.fixed, hold.cap) == (10, 100)
    assert hold.hold_from("x" * 50, 0) == 40


def test_a_regex_without_a_literal_prefix_holds_its_width(load_policy):
    policy = load_policy("""
        version: 1
        name: blind
        patterns: {digits: '[0-9]{12}'}
        rules: [{id: d, match: {patterns: [digits]}, action: {redact: "#"}}]
    """)
    hold = HoldBack.for_policy(policy)
    assert hold.blind == 12 and hold.regexes == ()
    assert held(hold, policy, "call 1234 later please") == "later please"[-12:]


def test_span_detectors_hold_the_last_words(load_policy):
    policy = load_policy("""
        version: 1
        name: detect
        rules: [{id: pii, direction: response, match: {detect: [pii]}, action: {redact: "[PII]"}}]
    """)
    hold = HoldBack.for_policy(policy)
    assert hold.tail_words == 8 and not hold.pattern_gated
    text = "one two three four five six seven eight nine ten"
    assert text[hold.hold_from(text, 0):] == "three four five six seven eight nine ten"
