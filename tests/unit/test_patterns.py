"""PatternSet: whole-word term lists and named regexes, with str offsets."""

from __future__ import annotations

import pytest

from firewall.detectors import EMPTY, Match, PatternError, PatternSet, compile_regex

VIOLENT = "list:violent_acts"


@pytest.fixture(scope="module")
def patterns() -> PatternSet:
    return PatternSet(
        lists={
            "violent_acts": ["murder", "kill", "stab", "poison*", "kill him", "strangle"],
            "pronouns": ["him", "her", "them"],
        },
        regexes={"aws_key": r"AKIA[0-9A-Z]{16}", "email": r"(?i)[a-z0-9.]+@[a-z0-9]+\.[a-z]{2,}"},
    )


def _found(patterns: PatternSet, text: str) -> list[tuple[str, str]]:
    (result,) = patterns.score([text])
    return [(text[m.start : m.end], m.label) for m in result.matches]


def test_finds_each_term_with_spans_into_the_original_text(patterns: PatternSet) -> None:
    text = "first murder, then stab; finally strangle."
    (result,) = patterns.score([text])
    assert result.matches == (
        Match(6, 12, VIOLENT),
        Match(19, 23, VIOLENT),
        Match(33, 41, VIOLENT),
    )
    assert result.scores == {VIOLENT: 1.0}


def test_case_insensitive(patterns: PatternSet) -> None:
    assert _found(patterns, "MURDER Murder mUrDeR") == [
        ("MURDER", VIOLENT),
        ("Murder", VIOLENT),
        ("mUrDeR", VIOLENT),
    ]


@pytest.mark.parametrize(
    "text", ["skill", "killing", "kills", "overkill", "kill_switch", "stabbed", "killé", "ékill"]
)
def test_no_match_inside_a_longer_word(patterns: PatternSet, text: str) -> None:
    (result,) = patterns.score([text])
    assert result == EMPTY


@pytest.mark.parametrize(
    "text", ["kill", "(kill)", "kill!", "'kill'", "kill\n", "—kill—", "x-kill-y"]
)
def test_match_next_to_punctuation(patterns: PatternSet, text: str) -> None:
    assert _found(patterns, text) == [("kill", VIOLENT)]


def test_adjacent_terms_sharing_one_separator(patterns: PatternSet) -> None:
    assert _found(patterns, "kill kill,kill") == [("kill", VIOLENT)] * 3


def test_phrase_term_wins_over_its_prefix_and_spans_any_whitespace(patterns: PatternSet) -> None:
    # Lists match independently: "Him" is also a term of "pronouns".
    assert _found(patterns, "Kill \t Him now") == [
        ("Kill \t Him", VIOLENT),
        ("Him", "list:pronouns"),
    ]
    # "kill him" does not end on a word boundary in "himself": the shorter "kill" matches.
    assert _found(patterns, "kill himself") == [("kill", VIOLENT)]


def test_prefix_term_spans_the_whole_word(patterns: PatternSet) -> None:
    assert _found(patterns, "poison, poisoned, Poisoning; antipoison") == [
        ("poison", VIOLENT),
        ("poisoned", VIOLENT),
        ("Poisoning", VIOLENT),
    ]


def test_unicode_offsets_are_str_indices(patterns: PatternSet) -> None:
    text = "日本語 😀 café: murder — AKIAABCDEFGHIJKLMNOP ✓ stab"
    (result,) = patterns.score([text])
    assert [(text[m.start : m.end], m.label) for m in result.matches] == [
        ("murder", VIOLENT),
        ("AKIAABCDEFGHIJKLMNOP", "regex:aws_key"),
        ("stab", VIOLENT),
    ]
    assert result.matches[0].start == text.index("murder")


def test_non_ascii_term(patterns: PatternSet) -> None:
    ps = PatternSet(lists={"de": ["töten", "straße"]})
    text = "Nicht TÖTEN! Die Straße."
    assert _found(ps, text) == [("TÖTEN", "list:de"), ("Straße", "list:de")]


def test_regexes_and_labels(patterns: PatternSet) -> None:
    (result,) = patterns.score(["key AKIAABCDEFGHIJKLMNOP mail Bob.Smith@Example.org"])
    assert [m.label for m in result.matches] == ["regex:aws_key", "regex:email"]
    assert result.scores == {"regex:aws_key": 1.0, "regex:email": 1.0}
    # Regexes are case-sensitive unless they say otherwise.
    (lower,) = patterns.score(["akiaabcdefghijklmnop"])
    assert lower == EMPTY


def test_term_characters_are_literal() -> None:
    ps = PatternSet(lists={"odd": ["c++", "a.b", "f*ck"]})
    assert _found(ps, "c++ and a.b and f*ck") == [
        ("c++", "list:odd"),
        ("a.b", "list:odd"),
        ("f*ck", "list:odd"),
    ]
    assert _found(ps, "cpp and axb and fuck") == []


def test_one_result_per_text_in_order(patterns: PatternSet) -> None:
    results = patterns.score(["nothing", "murder", "", "AKIAABCDEFGHIJKLMNOP"])
    assert [set(r.scores) for r in results] == [set(), {VIOLENT}, set(), {"regex:aws_key"}]


def test_empty_matches_are_ignored() -> None:
    ps = PatternSet(regexes={"maybe_a": "a*"})
    assert _found(ps, "bab") == [("a", "regex:maybe_a")]


def test_bad_regex_raises_pattern_error_naming_it() -> None:
    with pytest.raises(PatternError, match=r"regex 'lookahead'.*invalid perl operator"):
        PatternSet(regexes={"ok": "abc", "lookahead": "foo(?=bar)"})
    with pytest.raises(PatternError, match=r"regex 'paren'.*missing \)"):
        compile_regex("paren", "(abc")


def test_compile_regex_returns_a_usable_regex() -> None:
    assert compile_regex("aws_key", "AKIA[0-9A-Z]{16}").search("AKIAABCDEFGHIJKLMNOP") is not None


@pytest.mark.parametrize("terms", [["ok", ""], ["*"], ["  "], "kill"])
def test_bad_terms_raise_pattern_error_naming_the_list(terms: object) -> None:
    with pytest.raises(PatternError, match="list 'bad'"):
        PatternSet(lists={"bad": terms})  # type: ignore[dict-item]


def test_empty_list_never_matches() -> None:
    ps = PatternSet(lists={"none": []})
    assert ps.score(["anything at all"]) == [EMPTY]
    assert ps.near("anything at all", "none", ["all"], 5) == ()


def test_near_true_within_distance(patterns: PatternSet) -> None:
    text = "the best solution is to murder him in his sleep"
    near = patterns.near(text, "violent_acts", ["him", "her", "them"], 6)
    assert near == (Match(24, 30, VIOLENT),)


def test_near_counts_words_in_both_directions(patterns: PatternSet) -> None:
    text = "her you should stab"  # "her" is 3 words before "stab"
    assert patterns.near(text, "violent_acts", ["HER"], 3) == (Match(15, 19, VIOLENT),)
    assert patterns.near(text, "violent_acts", ["her"], 2) == ()


def test_near_false_when_too_far_or_absent(patterns: PatternSet) -> None:
    far = "murder one two three four five six seven him"
    assert patterns.near(far, "violent_acts", ["him"], 6) == ()
    assert patterns.near(far, "violent_acts", ["him"], 8) == (Match(0, 6, VIOLENT),)
    assert patterns.near("murder is a crime", "violent_acts", ["him"], 6) == ()
    assert patterns.near("himself murder", "violent_acts", ["him"], 6) == ()  # whole words only


def test_near_returns_only_qualifying_terms(patterns: PatternSet) -> None:
    text = "stab the bread. later: poison them"
    (match,) = patterns.near(text, "violent_acts", ["them"], 2)
    assert text[match.start : match.end] == "poison"


def test_near_ignores_words_inside_the_term_itself(patterns: PatternSet) -> None:
    assert patterns.near("kill him", "violent_acts", ["him"], 6) == ()
    assert patterns.near("kill him, yes him", "violent_acts", ["him"], 6) == (Match(0, 8, VIOLENT),)


def test_near_unicode_offsets(patterns: PatternSet) -> None:
    text = "😀😀 café — murder him"
    (match,) = patterns.near(text, "violent_acts", ["him"], 1)
    assert text[match.start : match.end] == "murder"


def test_near_unknown_list_names_the_known_ones(patterns: PatternSet) -> None:
    with pytest.raises(KeyError, match="unknown list 'nope'; lists defined: pronouns, violent_"):
        patterns.near("x", "nope", ["him"], 3)


def test_near_memoises_the_compiled_words(patterns: PatternSet) -> None:
    patterns.near("murder him", "violent_acts", ["him", "her"], 3)
    first = patterns._anchors("violent_acts", ["him", "her"])
    assert patterns._anchors("violent_acts", ("him", "her")) is first


def test_re2_caret_is_not_anchored_at_the_resume_position() -> None:
    # The term scan resumes mid-text; "^" must still mean the start of the text.
    ps = PatternSet(lists={"l": ["kill"]})
    assert _found(ps, "xkill kill") == [("kill", "list:l")]
    assert _found(ps, "akill") == []


def test_unterminated_quote_regex_still_matches_alongside_others() -> None:
    # \Q quotes to the end of its pattern; the one-pass prefilter must not change that.
    ps = PatternSet(lists={"l": ["kill"]}, regexes={"quoted": r"\Qa.b)"})
    assert _found(ps, "see a.b) here") == [("a.b)", "regex:quoted")]


def test_near_agrees_with_a_naive_word_count() -> None:
    import random

    rng = random.Random(7)
    vocabulary = ["murder", "stab", "him", "her", "the", "a", "plan", "now", "Him,", "(her)"]
    ps = PatternSet(lists={"acts": ["murder", "stab"]})
    for _ in range(300):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 25))]
        within = rng.randint(0, 6)
        text = " ".join(words)
        bare = [w.strip(",()").lower() for w in words]
        anchors = [i for i, w in enumerate(bare) if w in ("him", "her")]
        expected = [
            i
            for i, w in enumerate(bare)
            if w in ("murder", "stab") and any(abs(i - j) <= within for j in anchors)
        ]
        got = ps.near(text, "acts", ["him", "her"], within)
        offsets = [sum(len(w) + 1 for w in words[:i]) for i in expected]
        assert [m.start for m in got] == offsets, (text, within)


def test_lone_surrogate_keeps_offsets_aligned() -> None:
    ps = PatternSet(lists={"l": ["kill"]}, regexes={"word_run": r"[a-zé]+"})
    text = "\ud800é kill \udfff"
    (result,) = ps.score([text])
    assert [(text[m.start : m.end], m.label) for m in result.matches] == [
        ("é", "regex:word_run"),
        ("kill", "list:l"),
        ("kill", "regex:word_run"),
    ]
