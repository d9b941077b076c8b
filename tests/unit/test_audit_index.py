"""The audit index (firewall/audit/index.py): the same answers as reading every line, on
real logs written by AuditWriter, kept up to date incrementally through appends,
rotations, edits, truncations, deletions and torn lines; and the CLI around it."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firewall.audit import AuditLogError, AuditWriter, log_files, query, read_records, verify
from firewall.audit.index import INDEX_SUFFIX, SCHEMA_VERSION, AuditIndex, IndexUnavailable, default_index_path
from firewall.audit.report import stats
from firewall.cli import main

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        self.now += 60.0  # a record a minute: since/until cut between records
        return self.now


def varied(i: int) -> dict[str, Any]:
    """Records that exercise every filter: agents as agent, source or target (and a
    different case), rules in each place `query` looks for them, texts in each place,
    with casefold expansions and a NUL, events without a direction, and the odd value
    of the wrong type."""
    agents = ["planner", "executor", "researcher", "Planner", None, ""]
    record: dict[str, Any] = {"exchange": f"ex_{i // 2}", "agent": agents[i % 6]}
    if i % 7 == 3:
        record |= {"event": "lineage", "source": "researcher", "source_exchange": f"ex_{i // 2 - 1}"}
    else:
        record["direction"] = "request" if i % 2 == 0 else "response"
        record["action"] = ["allow", "allow", "block", "tag", "redact"][i % 5]
    if i % 3 == 0:
        record["source"] = ["planner", "executor", None][i % 9 // 3]
    if i % 4 == 1:
        record["target"] = "executor"
    rules: list[Any] = []
    if i % 5 == 2:
        rules.append({"id": "violent-suggestion", "action": "block", "spans": [{"start": 1, "end": 5}]})
    if i % 6 == 1:
        rules += ["disclose-ai-to-ai", {"id": "redact-secrets"}, "disclose-ai-to-ai"]  # listed twice: stats counts both
    if i % 11 == 4:
        rules.append({"no": "id"})
    record["rules"] = rules
    if i % 8 == 5:
        record["rule"] = "from-rule-key"
    if i % 5 == 2:
        record["blocking_rule"] = "violent-suggestion" if i % 10 == 2 else "blocking-only"
        record["reason"] = "A suggestion to hurt someone"
    if i % 9 == 4:
        record["findings"] = [{"rule": "from-findings", "score": 0.9}, {"score": 0.1}, "junk"]
    texts = ["Deploy the Canary build", "the CANARY is healthy", "Straße closed, ﬁle a ticket", "ok",
             "hidden \x00 kill him tonight", "Tool output: 42 rows"]
    if record.get("direction") == "request" and i % 3 != 2:
        record["content"] = [{"role": "user", "parts": [{"text": texts[i % 6], "kind": "text"}, {"kind": "image"}]},
                             "not a message"]
    if record.get("direction") == "response" and i % 4 != 3:
        record["response"] = {"text": {"choices.0.message.content": texts[(i + 1) % 6]}, "tool_calls": []}
    if i % 13 == 6:
        record["error"] = "Upstream DOWN for maintenance"
    if i % 17 == 8:
        record["ts"] = "2027-01-15T09:00:00Z"  # the writer keeps a ts it is given
    return record


def write(path: Path, start: int, count: int, **options: Any) -> None:
    clock = options.pop("clock", FakeClock())
    with AuditWriter(path, clock=clock, **options) as writer:
        for i in range(start, start + count):
            writer.write(varied(i))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rotated(tmp_path: Path, clock: FakeClock) -> Path:
    """A log of several files: rotated at 4 KB."""
    live = tmp_path / "audit.jsonl"
    write(live, 0, 120, rotate_bytes=4_000, clock=clock)
    assert len(log_files(live)) >= 5
    return live


def scanned(log: Path, **filters: Any) -> list[dict[str, Any]]:
    return list(query(read_records(log), **filters))


def total_size(log: Path) -> int:
    return sum(path.stat().st_size for path in log_files(log))


def stats_form(figures: tuple[list[Any], dict[str, int]]) -> Any:
    """Everything stats says, in order: the CLI prints agents and rules in these orders."""
    agents, rules = figures
    return ([(a.agent, a.requests, a.responses, a.blocked, list(a.rules.items())) for a in agents],
            list(rules.items()))


@pytest.fixture
def index(rotated: Path) -> Iterator[AuditIndex]:
    with AuditIndex(rotated) as opened:
        yield opened


# -- the same answers as the scan ----------------------------------------------------------------

FILTERS: list[dict[str, Any]] = [
    {},
    {"agent": "planner"}, {"agent": "executor"}, {"agent": "researcher"}, {"agent": "Planner"}, {"agent": ""},
    {"agent": "nobody"},
    {"action": "block"}, {"action": "allow"}, {"action": "Block"},
    {"rule": "violent-suggestion"}, {"rule": "disclose-ai-to-ai"}, {"rule": "redact-secrets"},
    {"rule": "from-rule-key"}, {"rule": "blocking-only"}, {"rule": "from-findings"}, {"rule": "none-such"},
    {"since": "2027-01-15T09:00"}, {"until": "2027-01-15T09:00"}, {"since": "2027-01-15T08:30", "until": "2027-01-15T09:00:00Z"},
    {"since": "2027-01-15T09:00:00Z", "until": "2027-01-15T09:00:00Z"},
    {"text": "canary"}, {"text": "CANARY"}, {"text": "the canary is"}, {"text": "ok"}, {"text": "k"}, {"text": "e"},
    {"text": "strasse"}, {"text": "STRASSE"}, {"text": "ß"}, {"text": "fi"}, {"text": "file a"}, {"text": "kill him"},
    {"text": "\x00 kill"}, {"text": "down for"}, {"text": "hurt someone"}, {"text": "42 rows"}, {"text": "not there at all"},
    {"text": ""}, {"text": '"quoted"'},
    {"agent": "planner", "action": "block"}, {"agent": "executor", "rule": "disclose-ai-to-ai", "text": "canary"},
    {"rule": "violent-suggestion", "since": "2027-01-15T08:30", "until": "2027-01-15T09:30"},
    {"agent": "researcher", "text": "ok", "until": "2027-01-15T09:30"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f) for f in FILTERS])
def test_every_filter_and_combination_gives_what_the_scan_gives_in_the_same_order(
        index: AuditIndex, rotated: Path, filters: dict[str, Any]) -> None:
    expected = scanned(rotated, **filters)
    assert list(index.query(**filters)) == expected
    if filters in ({"agent": "planner"}, {"rule": "violent-suggestion"}, {"text": "canary"}):
        assert expected  # the log holds what these filters look for


def test_the_agent_filter_finds_an_agent_as_agent_source_and_target(index: AuditIndex) -> None:
    found = list(index.query(agent="executor"))
    assert {"agent", "source", "target"} == {key for record in found for key in ("agent", "source", "target")
                                              if record.get(key) == "executor"}


def test_every_record_in_chain_order(index: AuditIndex, rotated: Path) -> None:
    records = list(index.records())
    assert records == list(read_records(rotated))
    assert [record["seq"] for record in records] == list(range(len(records)))


def test_stats_equal_the_scans_including_the_order_of_agents_and_rules(index: AuditIndex, rotated: Path) -> None:
    figures = index.stats()
    assert stats_form(figures) == stats_form(stats(read_records(rotated)))
    agents = {a.agent: a for a in figures[0]}
    assert "-" in agents  # records without an agent
    assert figures[1]["disclose-ai-to-ai"] == 2 * figures[1]["redact-secrets"] > 0  # listed twice, counted twice
    assert "from-rule-key" not in figures[1]  # stats counts the rules a record lists, as the scan does


def test_stats_with_an_agent_that_is_not_a_string_is_the_scans(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    with AuditWriter(log) as writer:
        writer.write({"direction": "request", "agent": 7, "rules": ["r"], "action": "block"})
        for _ in range(2):
            writer.write({"direction": "request", "agent": "planner", "rules": ["r", "s"]})
    with AuditIndex(log) as index:
        assert stats_form(index.stats()) == stats_form(stats(read_records(log)))
        assert [a.agent for a in index.stats()[0]] == ["planner", 7]


def test_an_empty_log_has_nothing(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    AuditWriter(log).close()
    with AuditIndex(log) as index:
        assert index.refresh().records == 0
        assert list(index.query()) == [] and index.stats() == ([], {})


# -- incremental ------------------------------------------------------------------------------------


def test_a_refresh_reads_only_what_was_appended_and_finds_it(rotated: Path, index: AuditIndex) -> None:
    first = index.refresh()
    assert first.rebuilt == "new index" and first.records == len(list(read_records(rotated)))
    assert first.bytes_read == total_size(rotated) and first.files_read == first.files == len(log_files(rotated))

    idle = index.refresh()
    assert (idle.added, idle.bytes_read, idle.files_read, idle.rebuilt) == (0, 0, 0, None)

    before, size = first.records, total_size(rotated)
    with AuditWriter(rotated) as writer:  # resumes the chain; no rotation (no rotate_bytes)
        writer.write({"direction": "request", "agent": "newcomer", "action": "allow",
                      "content": [{"role": "user", "parts": [{"text": "A brand new ZEBRA"}]}]})
    done = index.refresh()
    assert (done.added, done.files_read, done.records) == (1, 1, before + 1)
    assert done.bytes_read == total_size(rotated) - size
    assert (done.reindexed, done.dropped, done.rebuilt) == ((), (), None)
    assert [r["agent"] for r in index.query(text="zebra")] == ["newcomer"]
    assert list(index.query(agent="newcomer")) == scanned(rotated, agent="newcomer")


def test_rotation_renames_the_live_file_without_reindexing_it(rotated: Path, clock: FakeClock, index: AuditIndex) -> None:
    index.refresh()
    live_head = rotated.read_bytes().split(b"\n", 1)[0]
    files, size = len(log_files(rotated)), total_size(rotated)
    write(rotated, 120, 60, rotate_bytes=4_000, clock=clock)  # appends to the live file, then rotates it
    assert len(log_files(rotated)) > files + 1
    renamed = log_files(rotated)[files - 1]
    assert renamed != rotated and renamed.read_bytes().startswith(live_head)  # the old live file, renamed
    done = index.refresh()
    assert (done.reindexed, done.dropped, done.rebuilt) == ((), (), None)
    assert done.bytes_read == total_size(rotated) - size  # its new lines and the new files, nothing else
    assert done.files_read == len(log_files(rotated)) - files + 1
    for filters in ({}, {"agent": "planner"}, {"text": "canary"}, {"rule": "violent-suggestion"}):
        assert list(index.query(**filters)) == scanned(rotated, **filters)
    assert stats_form(index.stats()) == stats_form(stats(read_records(rotated)))


def test_a_set_renamed_as_a_whole_is_the_same_files(rotated: Path, tmp_path: Path) -> None:
    kept = tmp_path / "kept.index.sqlite"
    with AuditIndex(rotated, kept) as index:
        index.refresh()
    moved = tmp_path / "moved.jsonl"
    for path in log_files(rotated):
        path.rename(moved.with_name(moved.name + path.name[len(rotated.name):]))
    with AuditIndex(moved, kept) as index:
        done = index.refresh()
        assert (done.added, done.bytes_read, done.reindexed) == (0, 0, ())
        assert list(index.query(agent="planner")) == scanned(moved, agent="planner")


# -- changed, shortened, deleted, torn ----------------------------------------------------------


def test_an_edited_last_line_of_a_rotated_file_reindexes_it_and_the_files_after_it(rotated: Path, index: AuditIndex) -> None:
    index.refresh()
    files = log_files(rotated)
    middle = files[2]
    lines = middle.read_bytes().splitlines(keepends=True)
    edited = orjson.loads(lines[-1]) | {"agent": "intruder", "action": "block"}
    lines[-1] = orjson.dumps(edited) + b"\n"
    middle.write_bytes(b"".join(lines))
    done = index.refresh()
    assert done.reindexed == tuple(str(path) for path in files[2:])
    assert done.bytes_read == sum(path.stat().st_size for path in files[2:])
    assert done.records == len(list(read_records(rotated)))
    for filters in ({"agent": "intruder"}, {"action": "block"}, {}):
        assert list(index.query(**filters)) == scanned(rotated, **filters)
    assert [r["agent"] for r in index.query(agent="intruder")] == ["intruder"]


def test_a_shortened_live_file_is_reindexed(rotated: Path, index: AuditIndex) -> None:
    index.refresh()
    lines = rotated.read_bytes().splitlines(keepends=True)
    rotated.write_bytes(b"".join(lines[:-2]))
    done = index.refresh()
    assert done.reindexed == (str(rotated),) and done.added == len(lines) - 2
    assert list(index.records()) == list(read_records(rotated))
    assert stats_form(index.stats()) == stats_form(stats(read_records(rotated)))


def test_a_live_file_replaced_by_one_of_the_same_size_is_reindexed(rotated: Path, index: AuditIndex) -> None:
    index.refresh()
    lines = rotated.read_bytes().splitlines(keepends=True)
    last = orjson.loads(lines[-1])
    changed = orjson.dumps(last | {"exchange": "ex_" + "z" * (len(last["exchange"]) - 3)}) + b"\n"
    assert len(changed) == len(lines[-1])
    rotated.write_bytes(b"".join(lines[:-1]) + changed)
    done = index.refresh()
    assert done.reindexed == (str(rotated),)
    assert list(index.records()) == list(read_records(rotated))


def test_a_deleted_file_leaves_the_index(rotated: Path, index: AuditIndex) -> None:
    index.refresh()
    files = log_files(rotated)
    files[1].unlink()
    files[0].unlink()
    done = index.refresh()
    assert done.dropped == (files[0].name, files[1].name) and done.reindexed == () and done.added == 0
    for filters in ({}, {"agent": "planner"}, {"text": "canary"}, {"rule": "from-findings"}):
        assert list(index.query(**filters)) == scanned(rotated, **filters)
    assert stats_form(index.stats()) == stats_form(stats(read_records(rotated)))


def test_a_file_put_back_before_indexed_ones_reindexes_from_there(rotated: Path, index: AuditIndex, tmp_path: Path) -> None:
    files = log_files(rotated)
    aside = tmp_path / "aside"
    files[1].rename(aside)
    index.refresh()
    aside.rename(files[1])
    done = index.refresh()
    assert done.reindexed == tuple(str(path) for path in files[2:])
    assert list(index.records()) == list(read_records(rotated))


def test_a_torn_last_line_waits_for_its_newline(rotated: Path, index: AuditIndex) -> None:
    index.refresh()
    line = orjson.dumps({"seq": 10_000, "agent": "latecomer", "direction": "request", "action": "block"}) + b"\n"
    with open(rotated, "ab") as live:
        live.write(line[:25])  # the firewall is half-way through writing it
    with pytest.raises(AuditLogError, match="torn"):
        scanned(rotated)  # the scan stops there
    done = index.refresh()
    assert (done.added, done.bytes_read, done.files_read) == (0, 0, 0)
    assert list(index.query(agent="latecomer")) == []
    with open(rotated, "ab") as live:
        live.write(line[25:])
    done = index.refresh()
    assert (done.added, done.bytes_read) == (1, len(line))
    assert [r["agent"] for r in index.query(action="block", agent="latecomer")] == ["latecomer"]
    assert list(index.records()) == list(read_records(rotated))


def test_a_new_live_file_with_a_torn_first_line_waits_too(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write(log, 0, 10)
    log.rename(tmp_path / "audit.jsonl.000001")
    log.write_bytes(b'{"event": "audit_rot')
    with AuditIndex(log) as index:
        done = index.refresh()
        assert done.records == 10 and done.files == 2 and done.files_read == 1
        with open(log, "ab") as live:
            live.write(b'ated"}\n')
        assert index.refresh().added == 1
        assert list(index.records()) == list(read_records(log))


def test_a_bad_line_in_the_middle_is_refused_as_the_scan_refuses_it(rotated: Path) -> None:
    middle = log_files(rotated)[1]
    lines = middle.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"not": "closed"\n'
    middle.write_bytes(b"".join(lines))
    with pytest.raises(AuditLogError) as scan_error:
        scanned(rotated)
    with AuditIndex(rotated) as index, pytest.raises(AuditLogError) as index_error:
        index.refresh()
    assert str(index_error.value) == str(scan_error.value)
    assert str(index_error.value).startswith(f"{middle}:3: not valid JSON")

    lines[2] = b"[1, 2]\n"
    middle.write_bytes(b"".join(lines))
    with AuditIndex(rotated) as index, pytest.raises(AuditLogError, match=f"{middle}:3: not a JSON object"):
        index.refresh()


def test_a_rotated_file_ending_without_a_newline_is_read_as_the_scan_reads_it(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.000001").write_bytes(b'{"agent": "a", "action": "block"}\n{"agent": "b", "action": "block"}')
    log.write_bytes(b'{"agent": "c", "action": "block"}\n')
    (tmp_path / "audit.jsonl.000002").write_bytes(b'{"agent": "one-line-file"}')
    with AuditIndex(log) as index:
        assert list(index.query(action="block")) == scanned(log, action="block")
        assert [r["agent"] for r in index.records()] == ["a", "b", "one-line-file", "c"]


def test_files_with_the_same_first_line_are_told_apart(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.000001").write_bytes(b'{"same": 1}\n{"agent": "first"}\n')
    log.write_bytes(b'{"same": 1}\n{"agent": "second"}\n')
    with AuditIndex(log) as index:
        assert list(index.records()) == scanned(log)
        log.write_bytes(b'{"same": 1}\n{"agent": "second"}\n{"agent": "third"}\n')
        assert index.refresh().added == 1
        assert list(index.records()) == scanned(log)


def test_an_edit_in_place_of_the_same_length_is_for_verify_to_find(rotated: Path, index: AuditIndex) -> None:
    """The index is a cache: it checks each file's first line and the last line it read,
    not every line. A record edited in place with as many bytes is matched by what the
    index remembers of it; what it now says is read from the log; verify names it."""
    index.refresh()
    middle = log_files(rotated)[1]
    lines = middle.read_bytes().splitlines(keepends=True)
    number = next(n for n, line in enumerate(lines[:-1]) if b'"action":"allow"' in line)
    lines[number] = lines[number].replace(b'"action":"allow"', b'"action":"block"')
    middle.write_bytes(b"".join(lines))
    assert index.refresh().added == 0
    changed = orjson.loads(lines[number])
    assert changed in scanned(rotated, action="block") and changed not in list(index.query(action="block"))
    assert changed not in list(index.query(action="allow"))  # read back, it no longer says allow
    report = verify(rotated)
    assert not report.ok and report.file == middle and report.line == number + 1

    lines[number] = b"x" * (len(lines[number]) - 1) + b"\n"
    middle.write_bytes(b"".join(lines))
    index.refresh()
    with pytest.raises(AuditLogError, match=f"{middle}: byte \\d+ is not the record the index holds"):
        list(index.records())


# -- the index file -------------------------------------------------------------------------------


def test_another_schema_version_is_rebuilt(rotated: Path) -> None:
    with AuditIndex(rotated) as index:
        index.refresh()
    with sqlite3.connect(default_index_path(rotated)) as db:
        db.execute("PRAGMA user_version = 99")
    with AuditIndex(rotated) as index:
        done = index.refresh()
        assert done.rebuilt == f"index schema version 99, this version reads {SCHEMA_VERSION}"
        assert done.added == done.records == len(list(read_records(rotated)))
        assert list(index.query(rule="violent-suggestion")) == scanned(rotated, rule="violent-suggestion")
        assert index.refresh(rebuild=True).rebuilt == "rebuild asked for"
        assert index.refresh().rebuilt is None


def test_the_index_lives_beside_the_live_file_unless_told(rotated: Path, tmp_path: Path) -> None:
    assert default_index_path(rotated) == rotated.with_name("audit.jsonl" + INDEX_SUFFIX)
    with AuditIndex(rotated) as index:
        index.refresh()
    assert default_index_path(rotated).exists()
    assert default_index_path(rotated) not in log_files(rotated)  # not mistaken for a rotated file
    elsewhere = tmp_path / "elsewhere" / "x.sqlite"
    elsewhere.parent.mkdir()
    with AuditIndex(rotated, elsewhere) as index:
        assert index.refresh().rebuilt == "new index"
    assert elsewhere.exists()


def test_the_index_is_readable_by_no_one_the_log_is_not_readable_by(rotated: Path) -> None:
    assert rotated.stat().st_mode & 0o777 == 0o600  # as AuditWriter creates it
    with AuditIndex(rotated) as index:
        index.refresh()
        wal = Path(f"{index.path}-wal")
        assert wal.exists() and wal.stat().st_mode & 0o777 == 0o600
    assert default_index_path(rotated).stat().st_mode & 0o777 == 0o600


def test_a_file_that_is_not_an_index_is_left_alone(rotated: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("my notes, not a database\n" * 100)
    with pytest.raises(IndexUnavailable, match="notes.txt"):
        AuditIndex(rotated, text).refresh()
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE precious(x)")
    with pytest.raises(IndexUnavailable, match="not an audit index"):
        AuditIndex(rotated, other).refresh()
    assert text.read_text().startswith("my notes")
    with sqlite3.connect(other) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("precious",)]


def test_no_log_no_index(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such audit log"):
        AuditIndex(tmp_path / "missing.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_a_query_reads_what_its_refresh_indexed_even_if_the_log_rotates_meanwhile(
        rotated: Path, clock: FakeClock, index: AuditIndex) -> None:
    index.refresh()
    expected = scanned(rotated, agent="planner")
    write(rotated, 120, 60, rotate_bytes=4_000, clock=clock)
    assert list(index.query(agent="planner")) == expected  # the files it opened, as they were
    index.refresh()
    assert list(index.query(agent="planner")) == scanned(rotated, agent="planner")


def test_a_query_left_unread_across_a_refresh_says_so(rotated: Path, index: AuditIndex) -> None:
    pending = index.query()
    index.refresh()
    with pytest.raises(AuditLogError, match="refreshed or closed while a query was being read"):
        next(pending)


def test_two_reviewers_share_one_index(rotated: Path, clock: FakeClock) -> None:
    with AuditIndex(rotated) as first, AuditIndex(rotated) as second:
        assert first.refresh().added > 0
        assert second.refresh().added == 0  # the first one built it
        write(rotated, 120, 30, rotate_bytes=4_000, clock=clock)
        assert second.refresh().added > 0
        assert first.refresh().added == 0
        assert list(first.query(text="canary")) == list(second.query(text="canary")) == scanned(rotated, text="canary")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_query_and_stats_use_the_index_and_answer_as_the_scan(rotated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "query", str(rotated), "--agent", "planner", "--text", "canary", "--json"]
    assert main([*argv, "--no-index"]) == 0
    scanned_out = capsys.readouterr().out
    assert not default_index_path(rotated).exists()
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out == scanned_out and out.err == ""
    assert [orjson.loads(line) for line in out.out.splitlines()] == scanned(rotated, agent="planner", text="canary")
    assert default_index_path(rotated).exists()

    assert main(["audit", "stats", str(rotated), "--no-index"]) == 0
    plain = capsys.readouterr().out
    assert main(["audit", "stats", str(rotated)]) == 0
    assert capsys.readouterr().out == plain
    assert main(["audit", "stats", str(rotated), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["rules"] == stats(read_records(rotated))[1]
    assert main(["audit", "show", str(rotated), "--rule", "violent-suggestion"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(scanned(rotated, rule="violent-suggestion"))


def test_cli_index_option_puts_it_elsewhere(rotated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "cache.sqlite"
    assert main(["audit", "show", str(rotated), "--action", "block", "--index", str(elsewhere)]) == 0
    assert elsewhere.exists() and not default_index_path(rotated).exists()
    assert len(capsys.readouterr().out.splitlines()) == len(scanned(rotated, action="block"))


def test_cli_index_says_what_it_did(rotated: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    records, files = len(list(read_records(rotated))), len(log_files(rotated))
    assert main(["audit", "index", str(rotated)]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == (f"{default_index_path(rotated)}: {records:,} records of {rotated} ({files} files); "
                     "built from nothing (new index)")
    assert second.startswith(f"read {records:,} new records, {total_size(rotated):,} bytes from {files} files in ")
    assert main(["audit", "index", str(rotated)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("read 0 new records, 0 bytes from 0 files in ")

    log_files(rotated)[0].unlink()
    lines = rotated.read_bytes().splitlines(keepends=True)
    rotated.write_bytes(b"".join(lines[:-1]))
    assert main(["audit", "index", str(rotated)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == f"indexed again from the start (changed or shortened, or after such a file): {rotated}"
    assert out[3] == f"no longer in the log, dropped: {rotated.name}.000001"
    assert main(["audit", "index", str(rotated), "--rebuild"]) == 0
    assert "built from nothing (rebuild asked for)" in capsys.readouterr().out


def test_cli_falls_back_to_the_scan_when_the_index_cannot_be_written(
        rotated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unwritable = blocker / "index.sqlite"
    assert main(["audit", "query", str(rotated), "--agent", "planner", "--json", "--index", str(unwritable)]) == 0
    out = capsys.readouterr()
    assert [orjson.loads(line) for line in out.out.splitlines()] == scanned(rotated, agent="planner")
    assert out.err.count("\n") == 1
    assert out.err.startswith(f"agent-firewall: {unwritable}: cannot open the index: ")
    assert out.err.rstrip().endswith("; reading the whole log instead")
    assert main(["audit", "stats", str(rotated), "--index", str(unwritable)]) == 0
    assert "reading the whole log instead" in capsys.readouterr().err
    assert main(["audit", "index", str(rotated), "--index", str(unwritable)]) == 1
    assert "cannot open the index" in capsys.readouterr().err


def test_cli_falls_back_in_a_read_only_directory(rotated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = rotated.parent
    directory.chmod(0o555)
    try:
        probe = directory / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("this user writes into read-only directories (root): the --index test covers the fallback")
        assert main(["audit", "query", str(rotated), "--action", "block", "--json"]) == 0
        out = capsys.readouterr()
        assert [orjson.loads(line) for line in out.out.splitlines()] == scanned(rotated, action="block")
        assert "cannot open the index" in out.err and out.err.count("\n") == 1
    finally:
        directory.chmod(0o755)


def test_cli_says_what_is_wrong_with_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    for flags in ([], ["--no-index"]):
        assert main(["audit", "query", str(missing), *flags]) == 1
        assert capsys.readouterr().err.startswith("agent-firewall: ")
    assert not default_index_path(missing).exists()
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"agent": "a"}\nnot json\n')
    for flags in ([], ["--no-index"]):
        assert main(["audit", "stats", str(broken), *flags]) == 1
        assert capsys.readouterr().err.startswith(f"agent-firewall: {broken}:2: not valid JSON")


def test_index_files_are_not_log_files(rotated: Path) -> None:
    with AuditIndex(rotated) as index:
        index.refresh()
        names = sorted(os.listdir(rotated.parent))
        assert any(name.endswith(INDEX_SUFFIX) for name in names)
        assert all(Path(rotated.parent, name) in log_files(rotated) for name in names if INDEX_SUFFIX not in name)
    assert verify(rotated).ok
