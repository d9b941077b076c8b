"""Verifying an audit log's hash chain, across its rotated files, and saying what was done to it.

Each record must match its own hash (else it was changed), follow on from the record
before it by `seq` and `prev` (else one was deleted, inserted or moved), and be a whole
line of JSON (else the line is torn or corrupt). `verify` stops at the first problem and
names its file, line and kind.

A rotated log is one chain over its files (`audit.jsonl.000001`, `.000002`, ..., then the
live `audit.jsonl`): the first record of each file after the first is a rotation record
that names the file before it and that file's seq range. So a file deleted from the
middle, the newest rotated file deleted, the oldest one deleted, a file emptied or cut
short at its end, and files renamed out of order are each reported, by name.

What a chain cannot show: records cut from the END of the live file leave a shorter but
valid chain, and so does deleting the live file's records together with the live file
(CloudTrail closes that gap with signed digest files); compare `records` with an expected
count, or anchor the last hash elsewhere, to catch it. Old rotated files removed on
purpose (retention) look like missing files: the set's oldest file names its predecessor.
Nor can a chain stop someone who rewrites every hash after an edit; it makes tampering
evident, not impossible.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from firewall.audit.writer import GENESIS, record_hash, rotated_files, rotated_name, rotation_link

__all__ = ["FileReport", "VerifyReport", "verify"]

CHANGED: Final = "changed"
DELETED: Final = "deleted"
INSERTED: Final = "inserted"
REORDERED: Final = "reordered"
TORN: Final = "torn"
INVALID: Final = "invalid"
MISSING: Final = "missing"


@dataclass(frozen=True, slots=True)
class FileReport:
    """One file of the log, verified good: its records and their seq range."""

    path: Path
    records: int
    first_seq: int | None
    last_seq: int | None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """`records`: how many records were verified good (all of them when ok).
    `file` and `line` (1-based): where the first problem is. `kind`: one of changed,
    deleted, inserted, reordered, torn, invalid, missing (a whole file). `files`: the
    files verified good, oldest first (all of them when ok)."""

    ok: bool
    records: int
    problem: str | None = None
    line: int | None = None
    kind: str | None = None
    file: Path | None = None
    files: tuple[FileReport, ...] = field(default=(), compare=False)


class _Bad(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the whole chain of the log whose live file is `path`: its rotated files
    (`path.000001`, ...) oldest first, then `path` itself. FileNotFoundError if there is
    no such log at all."""
    live = Path(path)
    rotated = rotated_files(live)
    if not rotated and not live.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(live))
    return _Walk(live, rotated).run()


class _Walk:
    """One pass over the files in chain order, remembering only what the checks need."""

    def __init__(self, live: Path, rotated: list[tuple[int, Path]]) -> None:
        self.live = live
        self.order: list[tuple[int | None, Path]] = [*rotated, (None, live)]
        self.expected_seq = 0
        self.prev_hash = GENESIS
        self.good = 0
        # [file, first seq, records] per file so far: verified records are consecutive,
        # so any earlier seq can be located without keeping an index of them all.
        self.spans: list[list[Any]] = []
        self.done: list[FileReport] = []

    def run(self) -> VerifyReport:
        for index, (_, file) in enumerate(self.order):
            if file == self.live and not file.exists():
                newest = self.order[index - 1][1].name
                problem = (
                    f"the live file {file.name} is missing: the log's newest file is gone, "
                    f"and with it every record after {newest}"
                )
                return self._failed(MISSING, problem, file, None)
            span: list[Any] = [file, None, 0]
            self.spans.append(span)
            number = 0
            try:
                for number, raw in _lines(file):
                    self._check(index, file, number, raw, span)
            except _Bad as bad:
                return self._failed(bad.kind, f"line {number}: {bad.message}", file, number)
            last = None if span[1] is None else span[1] + span[2] - 1
            self.done.append(FileReport(file, span[2], span[1], last))
        return VerifyReport(ok=True, records=self.good, files=tuple(self.done))

    def _failed(self, kind: str, problem: str, file: Path, line: int | None) -> VerifyReport:
        return VerifyReport(
            ok=False, records=self.good, problem=problem, line=line, kind=kind, file=file, files=tuple(self.done)
        )

    def _check(self, index: int, file: Path, number: int, raw: bytes, span: list[Any]) -> None:
        record = _parse(raw)
        seq, prev, digest = record["seq"], record["prev"], record["hash"]
        if record_hash(record) != digest:
            raise _Bad(CHANGED, f"record seq {seq} was changed: its content no longer matches its hash")
        if number == 1 and (link := rotation_link(record)) is not None:
            self._check_link(index, file, link)
        if seq != self.expected_seq or prev != self.prev_hash:
            raise self._chain_break(index, file, number, seq)
        self.expected_seq = seq + 1
        self.prev_hash = digest
        self.good += 1
        if span[1] is None:
            span[1] = seq
        span[2] += 1

    # -- between files ------------------------------------------------------------------

    def _check_link(self, index: int, file: Path, link: dict[str, Any]) -> None:
        """A rotation record names the file that came before this one: is it the one here?"""
        claimed = link.get("number")
        if not isinstance(claimed, int) or isinstance(claimed, bool):
            raise _Bad(INVALID, "a rotation record without the number of the file before it")
        # By number, in this set's own name: a set renamed as a whole still verifies.
        name = rotated_name(self.live, claimed).name
        what = _seq_range(link)
        if index == 0:
            raise _Bad(
                MISSING,
                f"file {name} ({what}) is missing: {file.name} is the oldest file here, "
                f"and its rotation record says that {name} came before it",
            )
        before_number, before = self.order[index - 1]
        if before_number == claimed:
            self._check_ending(file, name, link, before)
            return
        positions = {n: i for i, (n, _) in enumerate(self.order) if n is not None}
        if claimed in positions and positions[claimed] >= index:
            raise _Bad(
                REORDERED, f"files out of order: {file.name} says it follows {name}, which is not before it here"
            )
        if claimed in positions:
            extra = ", ".join(path.name for _, path in self.order[positions[claimed] + 1 : index])
            raise _Bad(INSERTED, f"file(s) {extra} do not belong here: {file.name} says it follows {name}")
        raise _Bad(
            MISSING,
            f"file {name} ({what}) is missing: {file.name} says it follows {name}, "
            f"but the file before it here is {before.name}",
        )

    def _check_ending(self, file: Path, name: str, link: dict[str, Any], before: Path) -> None:
        """The file before ends where this file's rotation record says it did."""
        said = link.get("last_seq")
        if not isinstance(said, int) or isinstance(said, bool):
            return
        have = self.expected_seq - 1
        if said > have:
            lost = said - have
            if self.spans[-2][2] == 0:
                raise _Bad(DELETED, f"{name} is empty: its {lost} record(s) ({_seq_range(link)}) were deleted")
            raise _Bad(
                DELETED,
                f"the last {lost} record(s) of {name} were deleted: it ends at seq {have}, "
                f"but {file.name}'s rotation record says it ended at seq {said}",
            )
        if said < have:
            raise _Bad(
                INSERTED,
                f"{name} has {have - said} record(s) after seq {said}, where {file.name}'s rotation record says it ended",
            )

    # -- within a file --------------------------------------------------------------------

    def _chain_break(self, index: int, file: Path, number: int, seq: int) -> _Bad:
        """Classify a record that is intact itself but does not follow the one before."""
        expected = self.expected_seq
        if number > 1:
            before = f"the hash of line {number - 1}"
        elif self.good == 0:
            before = "the genesis hash"
        else:
            before = f"the hash of the last record of {self._last_file_name()}"
        if seq == expected:
            return _Bad(
                INSERTED,
                f"inserted record: seq {seq} is in sequence, but its prev is not {before}; "
                "it does not belong to this chain",
            )
        if seq < expected:
            where, line = self._locate(seq)
            copy = " (an exact copy)" if _hash_at(where, line) == _hash_at(file, number) else ""
            place = f"line {line}" if where == file else f"line {line} of {where.name}"
            return _Bad(INSERTED, f"inserted record: seq {seq} repeats the record at {place}{copy}")
        again, missing = _look_ahead(file, number, seq, expected)
        if again is not None:
            return _Bad(
                INSERTED,
                f"inserted record: seq {seq} does not belong here and appears again at line {again} (a copied record)",
            )
        if missing is not None:
            return _Bad(
                REORDERED,
                f"records out of order: seq {seq} where seq {expected} was expected; seq {expected} comes later, "
                f"at line {missing}",
            )
        gap = seq - expected
        if self.good == 0:
            return _Bad(DELETED, f"the log starts at seq {seq}: the first {gap} record(s) were deleted")
        where = ""
        if number == 1:
            where = f" (at the end of {self._last_file_name()} or the start of {file.name})"
        return _Bad(DELETED, f"seq jumps from {expected - 1} to {seq}: {gap} record(s) deleted before this line{where}")

    def _last_file_name(self) -> str:
        """The file that holds the last verified record."""
        for path, _, count in reversed(self.spans[:-1]):
            if count:
                return str(path.name)
        return "the file before"

    def _locate(self, seq: int) -> tuple[Path, int]:
        """The file and line of an already verified record."""
        for path, first, count in self.spans:
            if first is not None and first <= seq < first + count:
                return path, seq - first + 1
        return self.spans[0][0], seq + 1  # pragma: no cover - seq < expected is always verified


def _seq_range(link: dict[str, Any]) -> str:
    first, last = link.get("first_seq"), link.get("last_seq")
    if isinstance(first, int) and isinstance(last, int):
        return f"seq {first} to {last}, {last - first + 1} record(s)"
    return f"up to seq {last}" if isinstance(last, int) else "its records unknown"


def _lines(path: Path, start: int = 1) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            if number >= start:
                yield number, raw


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw.endswith(b"\n"):
        raise _Bad(
            TORN, "torn record: the last line is incomplete (no newline at the end), as when a write is cut short"
        )
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Bad(INVALID, f"not valid JSON ({exc}): the line is corrupt or was cut") from None
    if not isinstance(record, dict):
        raise _Bad(INVALID, "not a JSON object")
    seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise _Bad(INVALID, "not an audit record: no valid 'seq'")
    if not _is_digest(prev) or not _is_digest(digest):
        raise _Bad(INVALID, "not an audit record: 'prev' and 'hash' must be 64 hex digits")
    return record


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _look_ahead(path: Path, number: int, seq: int, expected: int) -> tuple[int | None, int | None]:
    """Lines after `number` holding `seq` again, and holding `expected`. Failure path only."""
    again: int | None = None
    missing: int | None = None
    for later, raw in _lines(path, number + 1):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("seq") == seq and again is None:
            again = later
        if record.get("seq") == expected and missing is None:
            missing = later
        if again is not None and missing is not None:
            break
    return again, missing


def _hash_at(path: Path, number: int) -> str | None:
    for _, raw in _lines(path, number):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return record.get("hash") if isinstance(record, dict) else None
    return None
