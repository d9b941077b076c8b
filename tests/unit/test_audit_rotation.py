"""Audit log durability: rotation by size and time with one chain over the files, fsync
modes, and verify across a rotated set naming what was edited, deleted or moved."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import firewall.audit.writer as writer_module
from firewall.audit import AuditLogError, AuditWriter, VerifyReport, log_files, read_records, verify
from firewall.audit.writer import ROTATION_EVENT, record_hash, rotated_files
from firewall.cli import main


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTicker:
    """Stands in for the fsync thread: the test says when the interval has passed."""

    def __init__(self) -> None:
        self.interval: float | None = None
        self.tick: Callable[[], None] | None = None
        self.stopped = False

    def __call__(self, interval: float, tick: Callable[[], None]) -> Callable[[], None]:
        self.interval, self.tick = interval, tick
        return self.stop

    def stop(self) -> None:
        self.stopped = True

    def fire(self) -> None:
        assert self.tick is not None and not self.stopped
        self.tick()


def _record(i: int) -> dict[str, Any]:
    return {"exchange": f"ex-{i}", "action": "allow", "agent": "planner", "text": f"message {i} " + "x" * 80}


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _records_in(path: Path) -> list[dict[str, Any]]:
    """The records of one file only (read_records reads a live file's whole set)."""
    return [orjson.loads(line) for line in _lines(path)]


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _name(live: Path, number: int) -> Path:
    return live.with_name(f"{live.name}.{number:06d}")


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """A log of 5 files (4 rotated, then the live one), 4 records each besides rotation records."""
    live = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditWriter(live, rotate_seconds=60, clock=clock) as writer:
        for i in range(20):
            if i and i % 4 == 0:
                clock.advance(60)
            writer.write(_record(i))
    assert [path.name for path in log_files(live)] == [
        "audit.jsonl.000001", "audit.jsonl.000002", "audit.jsonl.000003", "audit.jsonl.000004", "audit.jsonl"
    ]
    return live


def _assert_problem(report: VerifyReport, kind: str, file: Path, line: int | None, *words: str) -> None:
    assert not report.ok
    assert report.kind == kind, report.problem
    assert report.file == file, report.problem
    assert report.line == line, report.problem
    assert report.problem is not None
    for word in words:
        assert word in report.problem, report.problem


# -- rotation --------------------------------------------------------------------------


def test_rotation_by_size(tmp_path: Path) -> None:
    live = tmp_path / "audit.jsonl"
    with AuditWriter(live, rotate_bytes=1000) as writer:
        lines = [len(orjson.dumps(writer.write(_record(i)))) + 1 for i in range(30)]
    files = log_files(live)
    assert len(files) > 3
    longest = max(lines)
    for path in files[:-1]:  # rotated once they reached the size, on the next write
        assert 1000 <= path.stat().st_size < 1000 + longest
    for path in files[1:]:
        first = orjson.loads(_lines(path)[0])
        assert first["event"] == ROTATION_EVENT and first["reason"] == "size"
    report = verify(live)
    assert report.ok and report.records == 30 + len(files) - 1
    assert sum(part.records for part in report.files) == report.records
    assert [part.path for part in report.files] == files


def test_rotation_by_time(tmp_path: Path) -> None:
    live = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditWriter(live, rotate_seconds=60, clock=clock) as writer:
        for i in range(3):
            writer.write(_record(i))
        clock.advance(59.9)
        writer.write(_record(3))
        assert not rotated_files(live)
        clock.advance(0.1)
        written = writer.write(_record(4))
    assert [path.name for path in log_files(live)] == ["audit.jsonl.000001", "audit.jsonl"]
    assert [r["seq"] for r in _records_in(_name(live, 1))] == [0, 1, 2, 3]
    marker, after = _records_in(live)
    assert marker["event"] == ROTATION_EVENT and marker["reason"] == "time"
    assert marker["previous"] == {"file": "audit.jsonl.000001", "number": 1, "first_seq": 0, "last_seq": 3}
    assert after == written and after["seq"] == 5
    assert marker["ts"] == "2027-01-15T08:01:00.000000Z"  # stamped by the injected clock too (start + 60 s)


def test_idle_time_and_rotation_records_alone_do_not_make_files(tmp_path: Path) -> None:
    live = tmp_path / "audit.jsonl"
    clock = FakeClock()
    with AuditWriter(live, rotate_seconds=60, rotate_bytes=1, clock=clock) as writer:
        clock.advance(3600)  # an empty live file is never rotated, however old
        writer.write(_record(0))
        writer.write(_record(1))
        writer.write(_record(2))
    # Each file: the rotation record and one record; no file holds a rotation record alone.
    counts = [len(_lines(path)) for path in log_files(live)]
    assert counts == [1, 2, 2]


def test_the_chain_continues_across_files(rotated: Path) -> None:
    files = log_files(rotated)
    for before, after in zip(files, files[1:]):
        last = orjson.loads(_lines(before)[-1])
        first = orjson.loads(_lines(after)[0])
        assert first["prev"] == last["hash"] and first["seq"] == last["seq"] + 1
        assert first["previous"]["file"] == before.name
    seqs = [record["seq"] for record in read_records(rotated)]
    assert seqs == list(range(24))  # 20 records and 4 rotation records, one chain


def test_verify_reports_every_file_of_a_set(rotated: Path) -> None:
    report = verify(rotated)
    assert report == VerifyReport(ok=True, records=24)
    assert [(part.path.name, part.records, part.first_seq, part.last_seq) for part in report.files] == [
        ("audit.jsonl.000001", 4, 0, 3),
        ("audit.jsonl.000002", 5, 4, 8),
        ("audit.jsonl.000003", 5, 9, 13),
        ("audit.jsonl.000004", 5, 14, 18),
        ("audit.jsonl", 5, 19, 23),
    ]


def test_a_single_unrotated_file_verifies_as_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        writer.write(_record(0))
    report = verify(path)
    assert report == VerifyReport(ok=True, records=1)
    assert [part.path for part in report.files] == [path]


def test_resuming_a_rotated_log_continues_its_numbers_and_chain(rotated: Path) -> None:
    with AuditWriter(rotated, rotate_bytes=1) as writer:
        assert writer.next_seq == 24
        writer.write(_record(20))  # the live file had data: rotated before this record
    assert [path.name for _, path in rotated_files(rotated)][-1] == "audit.jsonl.000005"
    assert verify(rotated).ok


def test_resuming_after_a_crash_during_rotation(rotated: Path) -> None:
    # Renamed, but the new live file was never started (or is still empty).
    os.rename(rotated, _name(rotated, 5))
    with AuditWriter(rotated) as writer:
        written = writer.write(_record(20))
    marker, after = _records_in(rotated)
    assert marker["reason"] == "resume" and marker["previous"]["file"] == "audit.jsonl.000005"
    assert after == written
    assert verify(rotated).ok


def test_rotation_never_overwrites_a_file_in_its_way(tmp_path: Path) -> None:
    live = tmp_path / "audit.jsonl"
    with AuditWriter(live, rotate_bytes=1) as writer:
        writer.write(_record(0))
        _name(live, 2).write_bytes(b"someone else's\n")  # where the next rotation would go
        writer.write(_record(1))
        writer.write(_record(2))
    assert _name(live, 2).read_bytes() == b"someone else's\n"
    assert orjson.loads(_lines(live)[0])["previous"]["file"] == "audit.jsonl.000003"


def test_a_set_renamed_as_a_whole_still_verifies(rotated: Path) -> None:
    for path in log_files(rotated):
        path.rename(path.with_name(path.name.replace("audit.jsonl", "old.jsonl")))
    assert verify(rotated.with_name("old.jsonl")).ok


def test_files_that_do_not_look_rotated_are_not_part_of_the_set(rotated: Path) -> None:
    for stray in ("audit.jsonl.bak", "audit.jsonl.000003.gz", "audit.jsonl.12345", "audit.jsonl.00000x"):
        rotated.with_name(stray).write_bytes(b"junk\n")
    assert len(log_files(rotated)) == 5
    assert verify(rotated).ok


def test_read_records_reads_the_whole_set_in_order(rotated: Path) -> None:
    records = [r for r in read_records(rotated) if r.get("event") != ROTATION_EVENT]
    assert [r["exchange"] for r in records] == [f"ex-{i}" for i in range(20)]


def test_callers_cannot_write_a_rotation_record(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.jsonl") as writer, pytest.raises(ValueError, match="reserved"):
        writer.write({"event": ROTATION_EVENT, "previous": {"number": 9}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rotate_bytes": 0}, "rotation size must be a positive whole number of bytes, not 0"),
        ({"rotate_bytes": 1.5}, "rotation size"),
        ({"rotate_bytes": True}, "rotation size"),
        ({"rotate_seconds": -1}, "rotation age must be a positive number of seconds, not -1"),
        ({"rotate_seconds": float("inf")}, "rotation age"),
        ({"fsync": "sometimes"}, "fsync mode must be one of record, batch, none, not 'sometimes'"),
        ({"fsync": "batch", "fsync_interval": 0}, "fsync interval must be a positive number"),
    ],
)
def test_bad_options_are_refused_clearly(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuditWriter(tmp_path / "a.jsonl", **options)
    assert not (tmp_path / "a.jsonl").exists()


def test_a_failed_rotation_writes_nothing_and_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = tmp_path / "audit.jsonl"

    def refuse(source: Any, target: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with AuditWriter(live, rotate_bytes=1) as writer:
        writer.write(_record(0))
        monkeypatch.setattr(writer_module.os, "rename", refuse)
        with pytest.raises(AuditLogError, match=r"cannot rotate it to audit\.jsonl\.000001: .*Permission denied"):
            writer.write(_record(1))
        monkeypatch.undo()
        assert writer.write(_record(1))["seq"] == 2  # rotated now: seq 1 is the rotation record
    assert verify(live) == VerifyReport(ok=True, records=3)


def test_a_new_live_file_that_cannot_be_opened_puts_the_old_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "audit.jsonl"
    open_locked = writer_module._open_locked

    def out_of_descriptors(path: Path, *, new: bool) -> int:
        if new:
            raise OSError(errno.EMFILE, "Too many open files")
        return open_locked(path, new=new)

    with AuditWriter(live, rotate_bytes=1) as writer:
        writer.write(_record(0))
        monkeypatch.setattr(writer_module, "_open_locked", out_of_descriptors)
        with pytest.raises(AuditLogError, match="cannot start a new live file: .*Too many open files"):
            writer.write(_record(1))
        assert log_files(live) == [live]  # as if never rotated
        monkeypatch.undo()
        writer.write(_record(1))
    assert [path.name for path in log_files(live)] == ["audit.jsonl.000001", "audit.jsonl"]
    assert verify(live) == VerifyReport(ok=True, records=3)


def test_a_live_file_that_appears_during_rotation_stops_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "audit.jsonl"
    rename = os.rename

    def rename_then_race(source: Any, target: Any) -> None:
        rename(source, target)
        live.write_bytes(b"")  # another writer got there first

    with AuditWriter(live, rotate_bytes=1) as writer:
        writer.write(_record(0))
        monkeypatch.setattr(writer_module.os, "rename", rename_then_race)
        with pytest.raises(AuditLogError, match="appeared while the log was being rotated: another writer"):
            writer.write(_record(1))
        monkeypatch.undo()
        with pytest.raises(AuditLogError, match="a rotation failed half-way"):
            writer.write(_record(1))
    assert [r["seq"] for r in read_records(live)] == [0]  # nothing went into the other writer's file


# -- verify across files: what was done to the set ------------------------------------------


def test_an_edited_record_in_a_rotated_file_is_named(rotated: Path) -> None:
    middle = _name(rotated, 2)
    lines = _lines(middle)
    lines[2] = lines[2].replace(b'"action":"allow"', b'"action":"block"')
    _write_lines(middle, lines)
    _assert_problem(verify(rotated), "changed", middle, 3, "line 3: record seq 6 was changed")
    assert verify(rotated).records == 6
    assert [part.path for part in verify(rotated).files] == [_name(rotated, 1)]


def test_an_edited_rotation_record_is_named(rotated: Path) -> None:
    lines = _lines(rotated)
    lines[0] = lines[0].replace(b'"last_seq":18', b'"last_seq":17')
    _write_lines(rotated, lines)
    _assert_problem(verify(rotated), "changed", rotated, 1, "record seq 19 was changed")


def test_a_deleted_record_in_a_rotated_file_is_named(rotated: Path) -> None:
    middle = _name(rotated, 3)
    lines = _lines(middle)
    del lines[2]
    _write_lines(middle, lines)
    _assert_problem(verify(rotated), "deleted", middle, 3, "seq jumps from 10 to 12", "1 record(s) deleted")


def test_a_deleted_rotation_record_is_named(rotated: Path) -> None:
    middle = _name(rotated, 3)
    _write_lines(middle, _lines(middle)[1:])
    _assert_problem(
        verify(rotated), "deleted", middle, 1, "seq jumps from 8 to 10",
        "at the end of audit.jsonl.000002 or the start of audit.jsonl.000003",
    )


def test_a_deleted_middle_file_is_named(rotated: Path) -> None:
    _name(rotated, 2).unlink()
    _assert_problem(
        verify(rotated), "missing", _name(rotated, 3), 1,
        "file audit.jsonl.000002 (seq 4 to 8, 5 record(s)) is missing",
        "the file before it here is audit.jsonl.000001",
    )


def test_a_deleted_newest_rotated_file_is_named(rotated: Path) -> None:
    _name(rotated, 4).unlink()
    report = verify(rotated)
    _assert_problem(report, "missing", rotated, 1, "file audit.jsonl.000004 (seq 14 to 18, 5 record(s)) is missing")
    assert report.records == 14  # the three files before it are good


def test_a_deleted_oldest_file_is_named(rotated: Path) -> None:
    _name(rotated, 1).unlink()
    _assert_problem(
        verify(rotated), "missing", _name(rotated, 2), 1,
        "file audit.jsonl.000001 (seq 0 to 3, 4 record(s)) is missing", "the oldest file here",
    )


def test_all_rotated_files_deleted_is_named(rotated: Path) -> None:
    for path in rotated_files(rotated):
        path[1].unlink()
    _assert_problem(verify(rotated), "missing", rotated, 1, "file audit.jsonl.000004")


def test_a_deleted_live_file_is_named(rotated: Path) -> None:
    rotated.unlink()
    _assert_problem(verify(rotated), "missing", rotated, None, "the live file audit.jsonl is missing")
    assert verify(rotated).records == 19


def test_records_cut_from_the_end_of_a_rotated_file_are_named(rotated: Path) -> None:
    middle = _name(rotated, 2)
    _write_lines(middle, _lines(middle)[:-2])
    _assert_problem(
        verify(rotated), "deleted", _name(rotated, 3), 1,
        "the last 2 record(s) of audit.jsonl.000002 were deleted", "ends at seq 6", "ended at seq 8",
    )


def test_an_emptied_rotated_file_is_named(rotated: Path) -> None:
    _name(rotated, 2).write_bytes(b"")
    _assert_problem(
        verify(rotated), "deleted", _name(rotated, 3), 1, "audit.jsonl.000002 is empty: its 5 record(s)"
    )


def test_records_added_to_the_end_of_a_rotated_file_are_named(rotated: Path) -> None:
    middle = _name(rotated, 2)
    lines = _lines(middle)
    extra = orjson.loads(lines[-1])
    extra.update(seq=extra["seq"] + 1, prev=extra["hash"], exchange="forged")
    extra["hash"] = record_hash(extra)
    _write_lines(middle, [*lines, orjson.dumps(extra, option=orjson.OPT_SORT_KEYS) + b"\n"])
    _assert_problem(
        verify(rotated), "inserted", _name(rotated, 3), 1, "audit.jsonl.000002 has 1 record(s) after seq 8"
    )


def test_files_swapped_by_renaming_are_named(rotated: Path) -> None:
    two, three = _name(rotated, 2), _name(rotated, 3)
    two.rename(rotated.with_name("swap"))
    three.rename(two)
    rotated.with_name("swap").rename(three)
    _assert_problem(
        verify(rotated), "reordered", two, 1, "files out of order: audit.jsonl.000002 says it follows audit.jsonl.000002"
    )


def test_a_file_slipped_into_the_set_is_named(rotated: Path, tmp_path: Path) -> None:
    # A forged file that chains on from audit.jsonl.000004 as a rotated file would.
    forge = tmp_path / "forge"
    forge.mkdir()
    _name(forge / "audit.jsonl", 4).write_bytes(_name(rotated, 4).read_bytes())
    with AuditWriter(forge / "audit.jsonl") as writer:
        writer.write({"exchange": "forged"})
    _name(rotated, 5).write_bytes((forge / "audit.jsonl").read_bytes())
    _assert_problem(
        verify(rotated), "inserted", rotated, 1,
        "file(s) audit.jsonl.000005 do not belong here", "audit.jsonl says it follows audit.jsonl.000004",
    )


def test_a_stray_record_file_in_the_set_is_named(rotated: Path) -> None:
    os.rename(_name(rotated, 4), _name(rotated, 6))
    _name(rotated, 5).write_bytes(_lines(_name(rotated, 1))[0])
    _assert_problem(
        verify(rotated), "inserted", _name(rotated, 5), 1,
        "seq 0 repeats the record at line 1 of audit.jsonl.000001 (an exact copy)",
    )


def test_a_record_repeated_from_an_earlier_file_is_named(rotated: Path) -> None:
    middle = _name(rotated, 3)
    lines = _lines(middle)
    lines.insert(2, _lines(_name(rotated, 1))[1])
    _write_lines(middle, lines)
    _assert_problem(
        verify(rotated), "inserted", middle, 3, "seq 1 repeats the record at line 2 of audit.jsonl.000001 (an exact copy)"
    )


def test_records_cut_from_the_end_of_the_live_file_go_unnoticed(rotated: Path) -> None:
    # The documented limit: a shorter chain is still a valid chain.
    _write_lines(rotated, _lines(rotated)[:-2])
    assert verify(rotated) == VerifyReport(ok=True, records=22)


def test_no_log_at_all_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        verify(tmp_path / "audit.jsonl")
    with pytest.raises(FileNotFoundError):
        list(read_records(tmp_path / "audit.jsonl"))


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_verify_reads_a_rotated_set(rotated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(rotated)]) == 0
    out = capsys.readouterr().out
    assert f"{_name(rotated, 1)}: ok: 4 records, seq 0 to 3" in out
    assert f"{rotated}: ok: 24 records in 5 files, hash chain intact" in out
    _name(rotated, 3).unlink()
    assert main(["audit", "verify", str(rotated)]) == 1
    out = capsys.readouterr().out
    assert f"{_name(rotated, 4)}:1: FAILED: line 1: file audit.jsonl.000003" in out and "is missing" in out


def test_cli_run_refuses_bad_audit_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: empty\nrules: []\n")
    argv = ["run", "--policy", str(policy), "--audit-log", str(tmp_path / "a.jsonl"), "--audit-rotate-bytes", "0"]
    assert main(argv) == 2
    assert "rotation size must be a positive whole number of bytes" in capsys.readouterr().err


# -- fsync -------------------------------------------------------------------------------------


def test_fsync_record_makes_every_record_durable_before_write_returns(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.jsonl", fsync="record", rotate_bytes=300) as writer:
        for i in range(5):
            seq = writer.write(_record(i))["seq"]
            assert writer.durable_seq == seq


def test_fsync_batch_syncs_when_the_interval_passes_and_on_close(tmp_path: Path) -> None:
    ticker = FakeTicker()
    writer = AuditWriter(tmp_path / "a.jsonl", fsync="batch", fsync_interval=0.25, ticker=ticker)
    assert ticker.interval == 0.25
    writer.write(_record(0))
    writer.write(_record(1))
    assert writer.durable_seq is None  # the loss window: written, not yet on disk
    ticker.fire()
    assert writer.durable_seq == 1
    ticker.fire()  # nothing new: nothing to do
    assert writer.durable_seq == 1
    writer.write(_record(2))
    assert writer.durable_seq == 1
    writer.close()
    assert ticker.stopped and writer.durable_seq == 2


def test_fsync_batch_syncs_the_old_file_before_rotating(tmp_path: Path) -> None:
    ticker = FakeTicker()
    with AuditWriter(tmp_path / "a.jsonl", fsync="batch", rotate_bytes=1, ticker=ticker) as writer:
        writer.write(_record(0))
        assert writer.durable_seq is None
        writer.write(_record(1))  # rotates first: the file that is named by its successor is on disk
        assert writer.durable_seq == 0


def test_fsync_batch_with_the_real_thread(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.jsonl", fsync="batch", fsync_interval=0.01) as writer:
        seq = writer.write(_record(0))["seq"]
        deadline = time.monotonic() + 10  # liveness, not speed: the thread gets there
        while writer.durable_seq != seq and time.monotonic() < deadline:
            time.sleep(0.005)
        assert writer.durable_seq == seq


def test_fsync_none_leaves_it_to_the_os_unless_flushed(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.jsonl") as writer:
        writer.write(_record(0))
        assert writer.durable_seq is None
        writer.flush()
        assert writer.durable_seq == 0
        writer.write(_record(1))
    assert writer.durable_seq == 0  # close does not fsync in "none" mode


def _failing_fsync(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_a_failed_fsync_in_batch_mode_stops_the_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticker = FakeTicker()
    path = tmp_path / "a.jsonl"
    writer = AuditWriter(path, fsync="batch", ticker=ticker)
    writer.write(_record(0))
    ticker.fire()
    writer.write(_record(1))
    monkeypatch.setattr(writer_module, "_fdatasync", _failing_fsync)
    ticker.fire()  # the thread cannot raise to anyone: the next write does
    with pytest.raises(AuditLogError, match=r"fsync failed \(.*Input/output error\); only records up to seq 0"):
        writer.write(_record(2))
    monkeypatch.undo()
    with pytest.raises(AuditLogError, match="fsync failed"):  # for good, not once
        writer.write(_record(2))
    with pytest.raises(AuditLogError, match="fsync failed"):
        writer.close()
    assert verify(path) == VerifyReport(ok=True, records=2)


def test_a_failed_fsync_in_record_mode_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path, fsync="record") as writer:
        writer.write(_record(0))
        monkeypatch.setattr(writer_module, "_fdatasync", _failing_fsync)
        with pytest.raises(OSError, match="Input/output error"):
            writer.write(_record(1))
        monkeypatch.undo()
        assert writer.write(_record(2))["seq"] == 1
    assert verify(path) == VerifyReport(ok=True, records=2)


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_writers_across_rotations_lose_and_repeat_nothing(tmp_path: Path) -> None:
    live = tmp_path / "audit.jsonl"
    threads, each = 4, 200
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for i in range(each):
            writer.write({"thread": t, "i": i})

    with AuditWriter(live, rotate_bytes=4000) as writer:
        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    files = log_files(live)
    assert len(files) > 10
    report = verify(live)
    assert report.ok, report.problem
    records = list(read_records(live))
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert report.records == len(records) == threads * each + len(files) - 1
    for t in range(threads):
        assert [r["i"] for r in records if r.get("thread") == t] == list(range(each))
