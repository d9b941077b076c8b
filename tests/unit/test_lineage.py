"""Lineage: a response recorded under one agent is found again in another agent's request,
verbatim or lightly reworded, through an index and never a scan."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from firewall.agents.lineage import LineageIndex, LineageRecord, LineageSpec, fingerprint, record_id
from firewall.agents.state import MemoryState, StateUnavailable, open_state
from tests.redis_server import running_redis_server

SPEC = LineageSpec()

# A 60-word response, and a text on the same topic that says it differently.
RESPONSE = (
    "The safest way to store cleaning chemicals is on a high shelf in the garage, far from anything "
    "the children can reach. Never mix bleach with ammonia or vinegar, because the fumes that form can "
    "damage the lungs within minutes. Keep every bottle in its original container with the label facing "
    "out, and write the purchase date on the cap with a permanent marker"
)
SAME_TOPIC = (
    "Household chemicals such as bleach and ammonia belong in a locked cabinet, out of the reach of "
    "children. Mixing products is dangerous: bleach combined with vinegar releases chlorine gas, which "
    "harms your lungs. Store each product in the container it came in, keep labels readable, and open a "
    "window in the garage or laundry room whenever you use strong cleaners, and date each cap"
)
_WORD = re.compile(r"\w+")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingState(MemoryState):
    """Memory state that notes every key read with `get`."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return await super().get(key)


def filler(words: int, seed: int) -> str:
    """Prose-shaped text that shares no run of words with anything else here."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(3)) for _ in range(3000)]
    return " ".join(rng.choice(vocabulary) + rng.choice(["", "", "", ",", "."]) for _ in range(words))


def index(clock: Clock | None = None, spec: LineageSpec = SPEC) -> LineageIndex:
    clock = clock or Clock()
    return LineageIndex(MemoryState(clock=clock), spec, clock=clock)


def test_spec_checks_its_numbers():
    assert (SPEC.sample, SPEC.bucket_limit) == (3, 64)
    with pytest.raises(ValidationError, match=r"lineage.bands, lineage.stride: no longer settings: .*\(lineage.sample sets"):
        LineageSpec(bands=16, stride=16)
    with pytest.raises(ValidationError, match="sample"):
        LineageSpec(sample=0)
    with pytest.raises(ValidationError, match=r"min_words \(3\) must be at least lineage.shingle \(4\)"):
        LineageSpec(min_words=3)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LineageSpec(shingles=4)


async def test_a_verbatim_quote_in_a_long_request_is_found_with_its_span():
    lineage = index()
    recorded = await lineage.record("planner", "ex_1", RESPONSE)
    assert recorded is not None and recorded.id == "planner:ex_1" and recorded.path == ("planner",)
    request = f"{filler(1000, 1)}\n\nHere is what the planner said: {RESPONSE}. Now {filler(1000, 2)}"
    assert len(_WORD.findall(request)) > 2000

    [found] = await lineage.match("executor", request)
    assert found.record.id == "planner:ex_1"
    assert (found.containment, found.shared) == (1.0, len(_WORD.findall(RESPONSE)) - SPEC.shingle + 1)
    assert [request[start:end] for start, end in found.spans] == [RESPONSE]


async def test_a_lightly_reworded_quote_is_still_found_without_the_changed_words():
    lineage = index()
    await lineage.record("planner", "ex_1", RESPONSE)
    reworded = (RESPONSE.replace("The safest way", "The best way").replace("within minutes", "within seconds")
                .replace("Keep every bottle", "Keep every single bottle"))
    request = f"{filler(600, 3)} {reworded} {filler(600, 4)}"

    [found] = await lineage.match("executor", request)
    assert found.record.id == "planner:ex_1"
    assert SPEC.min_similarity <= found.containment < 1
    covered = "".join(request[start:end] for start, end in found.spans)
    assert "window" not in covered and "best" not in covered and "seconds" not in covered and "single" not in covered
    assert "far from anything the children can reach" in covered
    start = request.index(reworded)
    assert all(start <= s < e <= start + len(reworded) for s, e in found.spans)


async def test_spans_point_into_the_original_text_through_normalisation():
    lineage = index()
    await lineage.record("planner", "ex_1", RESPONSE)
    # Shouted, with a zero-width space inside a word and a fullwidth letter: the
    # normalised text is shorter than the original, and the span must still fit it.
    disguised = RESPONSE.upper().replace("BLEACH", "BLE\u200bACH").replace("GARAGE", "ＧARAGE")
    request = f"{filler(50, 5)}\u200b {disguised} {filler(50, 6)}"

    [found] = await lineage.match("executor", request)
    assert found.containment == 1.0
    assert [request[start:end] for start, end in found.spans] == [disguised]


async def test_text_on_the_same_topic_is_not_a_match():
    lineage = index()
    await lineage.record("planner", "ex_1", RESPONSE)
    assert await lineage.match("executor", f"{filler(300, 7)} {SAME_TOPIC} {filler(300, 8)}") == []


async def test_an_agent_is_not_its_own_source():
    lineage = index()
    await lineage.record("planner", "ex_1", RESPONSE)
    assert await lineage.match("planner", f"As I said: {RESPONSE}") == []
    # An agent whose id extends another's with ':' is a different agent.
    await lineage.record("planner:v2", "ex_2", RESPONSE)
    assert [m.record.id for m in await lineage.match("planner", RESPONSE)] == ["planner:v2:ex_2"]
    assert {m.record.agent for m in await lineage.match("executor", RESPONSE)} == {"planner", "planner:v2"}


async def test_matches_come_best_first_and_each_record_once():
    lineage = index()
    other = filler(60, 9)
    await lineage.record("planner", "ex_1", RESPONSE)
    await lineage.record("researcher", "ex_2", other)
    half = " ".join(other.split()[:30])
    request = f"{half} {filler(100, 10)} {RESPONSE} {filler(10, 10)} {RESPONSE}"

    found = await lineage.match("executor", request)
    assert [m.record.id for m in found] == ["planner:ex_1", "researcher:ex_2"]
    assert found[0].containment == 1.0 > found[1].containment >= SPEC.min_similarity
    assert len(found[0].spans) == 2  # both copies of the quote


async def test_short_texts_are_not_fingerprinted():
    lineage = index()
    assert fingerprint("a reply of seven words, no more", SPEC) is None
    assert await lineage.record("planner", "ex_1", "a reply of seven words, no more") is None
    assert await lineage.state.keys("lineage:") == []
    assert await lineage.match("executor", "yes.") == []


async def test_records_expire_and_stale_buckets_are_skipped():
    clock = Clock()
    lineage = index(clock, LineageSpec(ttl=100))
    await lineage.record("planner", "ex_1", RESPONSE)
    clock.now += 90
    await lineage.record("planner", "ex_2", RESPONSE)  # the same buckets, kept alive longer
    clock.now += 20
    # ex_1 is gone but its id is still in the buckets that ex_2 refreshed.
    assert [m.record.id for m in await lineage.match("executor", RESPONSE)] == ["planner:ex_2"]
    assert await lineage.mark("planner:ex_1", flagged=True) is None
    clock.now += 100
    assert await lineage.match("executor", RESPONSE) == []
    assert await lineage.state.keys("lineage:") == []


async def test_mark_changes_what_later_matches_see_and_keeps_the_expiry():
    clock = Clock()
    lineage = index(clock, LineageSpec(ttl=100))
    await lineage.record("planner", "ex_1", RESPONSE, hops=1, path=("researcher", "planner"))
    clock.now += 50
    marked = await lineage.mark("planner:ex_1", flagged=True)
    assert marked is not None and (marked.flagged, marked.tainted) == (True, False)
    marked = await lineage.mark("planner:ex_1", tainted=True)
    assert marked is not None and (marked.flagged, marked.tainted) == (True, True)

    [found] = await lineage.match("executor", RESPONSE)
    assert (found.record.flagged, found.record.tainted, found.record.hops) == (True, True, 1)
    assert found.record.path == ("researcher", "planner")
    clock.now += 51
    assert await lineage.state.get("lineage:rec:planner:ex_1") is None
    assert await lineage.mark("planner:never", flagged=True) is None


def test_records_round_trip_through_json():
    record = LineageRecord("planner", "ex_1", True, False, 2, ("a", "planner"), 12.5, (1, 2**64 - 1))
    assert LineageRecord.from_json(record.to_json()) == record
    for broken, why in [(b"{", "not JSON"), (b'{"format": 1}', "'agent' is None"), (b"[]", "not a lineage record")]:
        with pytest.raises(ValueError, match=why):
            LineageRecord.from_json(broken)


async def test_an_unreadable_record_is_a_state_error_naming_it():
    lineage = index()
    await lineage.record("planner", "ex_1", RESPONSE)
    await lineage.state.set("lineage:rec:planner:ex_1", b'{"format": 1, "agent": 7}')
    with pytest.raises(StateUnavailable, match=r"lineage record 'lineage:rec:planner:ex_1' cannot be read: 'agent' is 7"):
        await lineage.match("executor", RESPONSE)


async def test_ids_that_cannot_be_split_are_refused():
    lineage = index()
    with pytest.raises(ValueError, match="invalid exchange id 'ex:1'"):
        await lineage.record("planner", "ex:1", RESPONSE)
    with pytest.raises(ValueError, match="empty agent id"):
        await lineage.record("", "ex_1", RESPONSE)
    assert record_id("team:planner", "ex_1") == "team:planner:ex_1"


def test_odd_text_is_fingerprinted_without_error():
    text = "lone \ud800 surrogate " + " ".join(["mot", "déjà", "vu", "日本語", "текст", "x²"] * 3)
    found = fingerprint(text, SPEC)
    assert found is not None and len(found.shingles) == 20 - SPEC.shingle + 1  # the surrogate is no word
    assert found.spans() == [(0, len(text))]


_SIGNATURE = (
    "import json, sys; from firewall.agents.lineage import LineageSpec, fingerprint; "
    "f = fingerprint(sys.argv[1], LineageSpec()); "
    "print(json.dumps([f.shingles.tolist(), f.bucket_keys(3)]))"
)


def test_fingerprints_are_the_same_in_every_process():
    here = fingerprint(RESPONSE, SPEC)
    assert here is not None
    expected = [here.shingles.tolist(), here.bucket_keys(3)]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _SIGNATURE, RESPONSE], env=env, cwd=Path(__file__).parents[2],
                              capture_output=True, text=True, check=True, timeout=60)
        assert json.loads(done.stdout) == expected


async def test_a_text_many_agents_repeat_does_not_crowd_out_the_others():
    lineage = LineageIndex(CountingState(), SPEC)
    boilerplate = filler(40, 11)
    for n in range(40):
        await lineage.record(f"echo-{n}", f"ex_{n}", boilerplate)
    await lineage.record("planner", "ex_p", RESPONSE)
    lineage.state.reads.clear()

    found = await lineage.match("executor", f"{boilerplate} {RESPONSE}")
    assert len(lineage.state.reads) == SPEC.candidates
    assert "planner:ex_p" in {m.record.id for m in found}


async def test_a_lookup_among_ten_thousand_records_reads_only_candidates():
    state = CountingState()
    lineage = LineageIndex(state, SPEC)
    rng = random.Random(12)
    vocabulary = filler(4000, 13).replace(",", "").replace(".", "").split()
    texts = {}
    for n in range(10_000):
        texts[n] = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(10, 30)))
        await lineage.record(f"agent-{n % 100}", f"ex_{n}", texts[n])
    state.reads.clear()

    request = f"{filler(400, 14)} {texts[4321]} {filler(400, 15)}"
    found = await lineage.match("observer", request)
    assert [m.record.id for m in found] == ["agent-21:ex_4321"]
    assert 1 <= len(state.reads) <= SPEC.candidates
    query = fingerprint(request, SPEC)
    assert query is not None
    keys = query.bucket_keys(SPEC.sample)
    bucketed = {member for members in (await state.index_members(keys)).values() for member in members}
    assert {key.removeprefix("lineage:rec:") for key in state.reads} <= bucketed


async def test_replicas_sharing_redis_see_each_others_records(tmp_path: Path):
    with running_redis_server(tmp_path / "redis") as server:
        one, two = open_state(server.url), open_state(server.url)
        try:
            first, second = LineageIndex(one, SPEC), LineageIndex(two, SPEC)
            await first.record("planner", "ex_1", RESPONSE)
            [found] = await second.match("executor", f"{filler(200, 16)} {RESPONSE}")
            assert (found.record.id, found.containment) == ("planner:ex_1", 1.0)
            await second.mark("planner:ex_1", flagged=True)
            [found] = await first.match("executor", RESPONSE)
            assert found.record.flagged
        finally:
            await one.close()
            await two.close()


def test_words_are_runs_of_alphanumeric_characters_for_every_code_point():
    # The fast regex and the numpy word runs (spans) must find the same words.
    import sys as _sys

    from firewall.agents.lineage import _WORD
    wrong = [c for c in range(_sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF
             and bool(_WORD.fullmatch(chr(c))) != chr(c).isalnum()]
    assert wrong == []


def test_the_sampled_shingles_of_a_quote_do_not_depend_on_what_surrounds_it():
    alone = fingerprint(RESPONSE, SPEC)
    inside = fingerprint(f"{filler(150, 21)}. {RESPONSE} {filler(90, 22)}", SPEC)
    assert alone is not None and inside is not None
    keys = alone.bucket_keys(SPEC.sample)
    assert 0 < len(keys) < len(set(alone.shingles.tolist()))  # a sample, not every shingle
    assert set(keys) <= set(inside.bucket_keys(SPEC.sample))
    assert len(alone.bucket_keys(1)) == len(set(alone.shingles.tolist()))


async def test_a_stock_phrase_stops_being_a_lead_once_its_bucket_is_full():
    spec = LineageSpec(bucket_limit=5)
    state = CountingState()
    lineage = LineageIndex(state, spec)
    stock = "Let me know if you have any other questions about this, I am always happy to help you out"
    for n in range(6):
        await lineage.record(f"helper-{n}", f"ex_{n}", f"{filler(30, 30 + n)} {stock}")
    query = fingerprint(stock, spec)
    assert query is not None
    buckets = await state.index_members(query.bucket_keys(spec.sample))
    assert buckets and all(members == {"*"} for members in buckets.values())  # full: marked common
    state.reads.clear()
    assert await lineage.match("reader", stock) == []
    assert state.reads == []  # no record was read for a stock phrase
    # A response that carries the phrase and words of its own is still found by those.
    await lineage.record("planner", "ex_p", f"{RESPONSE} {stock}")
    [found] = await lineage.match("reader", f"{RESPONSE} {stock}")
    assert found.record.id == "planner:ex_p"


async def test_a_deferred_record_is_written_before_any_lookup_sees_the_index():
    lineage = index()
    lineage.defer("planner", "ex_1", RESPONSE, flagged=True)
    assert lineage.deferred == 1
    assert await lineage.state.keys("lineage:rec:") == []  # nothing written yet
    [found] = await lineage.match("executor", f"{filler(50, 23)} {RESPONSE}")
    assert (found.record.id, found.record.flagged, lineage.deferred) == ("planner:ex_1", True, 0)


async def test_an_index_built_for_a_reloaded_policy_writes_what_the_old_one_deferred():
    state = MemoryState()
    old, new = LineageIndex(state, SPEC), LineageIndex(state, SPEC)
    old.defer("planner", "ex_1", RESPONSE)
    assert new.deferred == 1
    [found] = await new.match("executor", RESPONSE)
    assert found.record.id == "planner:ex_1"
    await old.flush()  # nothing left: the record is written once
    assert await state.keys("lineage:rec:") == ["lineage:rec:planner:ex_1"]


async def test_records_are_not_deferred_on_a_shared_state(tmp_path: Path):
    with running_redis_server(tmp_path / "redis") as server:
        state = open_state(server.url)
        try:
            with pytest.raises(ValueError, match="cannot be deferred on a shared state backend"):
                LineageIndex(state, SPEC).defer("planner", "ex_1", RESPONSE)
        finally:
            await state.close()


def test_a_bad_id_is_refused_when_deferred_not_when_flushed():
    with pytest.raises(ValueError, match="invalid exchange id"):
        index().defer("planner", "ex:1", RESPONSE)
