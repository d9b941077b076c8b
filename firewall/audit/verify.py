"""Verifying an audit log's hash chain, and saying what was done to it.

Each record must match its own hash (else it was changed), follow on from the record
before it by `seq` and `prev` (else one was deleted, inserted or moved), and be a whole
line of JSON (else the line is torn or corrupt). `verify` stops at the first problem and
names its line and kind.

What a chain cannot show: records cut from the END of the log leave a shorter but valid
chain (CloudTrail closes that gap with signed digest files); compare `records` with an
expected count, or anchor the last hash elsewhere, to catch it. Nor can it stop someone
who rewrites every hash after an edit; the chain makes tampering evident, not impossible.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from firewall.audit.writer import GENESIS, record_hash

CHANGED: Final = "changed"
DELETED: Final = "deleted"
INSERTED: Final = "inserted"
REORDERED: Final = "reordered"
TORN: Final = "torn"
INVALID: Final = "invalid"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """`records`: how many records were verified good (all of them when ok).
    `line`: 1-based line of the first problem. `kind`: one of changed, deleted,
    inserted, reordered, torn, invalid."""

    ok: bool
    records: int
    problem: str | None = None
    line: int | None = None
    kind: str | None = None


class _Bad(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check the whole chain of the log at `path` (FileNotFoundError if there is none)."""
    path = Path(path)
    expected_seq = 0
    prev_hash = GENESIS
    number = 0
    good = 0
    try:
        for number, raw in _lines(path):
            record = _parse(raw)
            seq, prev, digest = record["seq"], record["prev"], record["hash"]
            if record_hash(record) != digest:
                raise _Bad(CHANGED, f"record seq {seq} was changed: its content no longer matches its hash")
            if seq != expected_seq or prev != prev_hash:
                raise _chain_break(path, number, seq, prev, expected_seq)
            expected_seq = seq + 1
            prev_hash = digest
            good += 1
    except _Bad as bad:
        problem = f"line {number}: {bad.message}"
        return VerifyReport(ok=False, records=good, problem=problem, line=number, kind=bad.kind)
    return VerifyReport(ok=True, records=good)


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


def _chain_break(path: Path, number: int, seq: int, prev: str, expected: int) -> _Bad:
    """Classify a record that is intact itself but does not follow the one before."""
    before = "the genesis hash" if number == 1 else f"the hash of line {number - 1}"
    if seq == expected:
        return _Bad(
            INSERTED,
            f"inserted record: seq {seq} is in sequence, but its prev is not {before}; "
            "it does not belong to this chain",
        )
    if seq < expected:
        # Everything before was consecutive from seq 0 on line 1, so seq N sits on line N+1.
        original = seq + 1
        copy = " (an exact copy)" if _hash_at(path, original) == _hash_at(path, number) else ""
        return _Bad(INSERTED, f"inserted record: seq {seq} repeats the record at line {original}{copy}")
    again, missing = _look_ahead(path, number, seq, expected)
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
    if expected == 0:
        return _Bad(DELETED, f"the log starts at seq {seq}: the first {gap} record(s) were deleted")
    return _Bad(DELETED, f"seq jumps from {expected - 1} to {seq}: {gap} record(s) deleted before this line")


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

