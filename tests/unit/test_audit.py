from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from firewall.audit import AuditLogError, AuditWriter, VerifyReport, query, read_records, verify
from firewall.audit.writer import GENESIS, REDACTED, record_hash, redact_secrets

SECRETS = ("sk-live-SECRET-one", "SECRET-two-key", "session=SECRET-three", "SECRET-four-pair", "SECRET-five")


def _record(i: int) -> dict[str, Any]:
    return {
        "exchange": f"ex-{i}",
        "direction": "request" if i % 2 == 0 else "response",
        "agent": "planner" if i % 3 else "executor",
        "action": "block" if i % 4 == 0 else "allow",
        "rules": ["violent-suggestion"] if i % 4 == 0 else [],
        "findings": [{"rule": "disclose-ai-to-ai", "score": 0.25 * (i % 4)}],
        "request": {
            "headers": {
                "Authorization": f"Bearer {SECRETS[0]}",
                "X-Api-Key": SECRETS[1],
                "X-Agent-Id": "planner",
                "nested": [{"Cookie": SECRETS[2]}],
            },
            "header_pairs": [["Set-Cookie", SECRETS[3]], ["Content-Type", "application/json"]],
            "api_key": SECRETS[4],
        },
        "text": f"message number {i}: the plan is to check the inventory",
    }


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    with AuditWriter(path) as writer:
        for i in range(10):
            writer.write(_record(i))
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _assert_problem(report: VerifyReport, kind: str, line: int, *words: str) -> None:
    assert not report.ok
    assert report.kind == kind, report.problem
    assert report.line == line, report.problem
    assert report.problem is not None and report.problem.startswith(f"line {line}: ")
    for word in words:
        assert word in report.problem


# -- writing ------------------------------------------------------------------------------


def test_a_clean_log_verifies(log: Path) -> None:
    assert verify(log) == VerifyReport(ok=True, records=10)
    records = list(read_records(log))
    assert [r["seq"] for r in records] == list(range(10))
    assert records[0]["prev"] == GENESIS
    for before, after in zip(records, records[1:]):
        assert after["prev"] == before["hash"]
    assert all(record_hash(r) == r["hash"] for r in records)
    assert all(r["ts"].endswith("Z") for r in records)


def test_lines_are_canonical_json(log: Path) -> None:
    for line in _lines(log):
        assert line == orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) + b"\n"


def test_write_returns_the_record_as_written(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.jsonl") as writer:
        first = writer.write({"event": "x", "hash": "forged", "seq": 99})
        second = writer.write({"event": "y"})
    assert (first["seq"], first["prev"]) == (0, GENESIS)
    assert first["hash"] == record_hash(first) != "forged"
    assert (second["seq"], second["prev"]) == (1, first["hash"])
    assert list(read_records(tmp_path / "a.jsonl")) == [first, second]


def test_secrets_never_reach_the_file(log: Path) -> None:
    data = log.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in data
    first = next(read_records(log))
    headers = first["request"]["headers"]
    assert headers["Authorization"] == headers["X-Api-Key"] == REDACTED
    assert headers["nested"] == [{"Cookie": REDACTED}]
    assert headers["X-Agent-Id"] == "planner"
    assert first["request"]["header_pairs"] == [["Set-Cookie", REDACTED], ["Content-Type", "application/json"]]
    assert first["request"]["api_key"] == REDACTED


def test_every_provider_key_header_is_redacted() -> None:
    headers = {"x-goog-api-key": "AIza-secret", "Proxy-Authorization": "Basic c2VjcmV0", "api_key": "k"}
    redacted = redact_secrets(None, "write", {"request": {"headers": headers}})
    assert set(redacted["request"]["headers"].values()) == {REDACTED}


def test_a_key_named_only_by_its_folded_form_is_redacted_and_a_record_without_one_is_passed_on() -> None:
    # "x-api-\u212aey" (a Kelvin sign for the k) folds to x-api-key; "X_API_KEY" too; a pair deep in a list.
    record = {"tool": {"arguments": {"x-api-\u212aey": "s1", "X_API_KEY": "s2"}},
              "calls": [[{"headers": [["COOKIE", "s3"]]}]]}
    redacted = redact_secrets(None, "write", record)
    assert redacted == {"tool": {"arguments": {"x-api-\u212aey": REDACTED, "X_API_KEY": REDACTED}},
                        "calls": [[{"headers": [["COOKIE", REDACTED]]}]]}
    plain = {"response": {"text": {"choices.0.content": "the authorization form is attached"}}}
    assert redact_secrets(None, "write", plain) is plain  # nothing to redact: not copied


def test_redaction_does_not_touch_the_callers_record() -> None:
    record = _record(1)
    redacted = redact_secrets(None, "write", record)
    assert record["request"]["headers"]["Authorization"] == f"Bearer {SECRETS[0]}"
    assert redacted["request"]["headers"]["Authorization"] == REDACTED


@dataclasses.dataclass
class _Score:  # fields deliberately not in sorted order
    value: float
    label: str


def test_non_json_values_are_written_canonically(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path) as writer:
        written = writer.write({"score": np.float32(0.5), "finding": _Score(0.9, "tox"), "tags": ("a", "b")})
    assert verify(path).ok
    (record,) = read_records(path)
    assert record["score"] == 0.5 and record["finding"] == {"label": "tox", "value": 0.9}
    assert record["hash"] == written["hash"]


def test_a_failed_write_does_not_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path) as writer:
        writer.write({"n": 0})
        with pytest.raises(TypeError, match="cannot be written as JSON.*object"):
            writer.write({"n": object()})
        assert writer.write({"n": 1})["seq"] == 1
    assert verify(path) == VerifyReport(ok=True, records=2)


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path) as writer:
        threads = [
            threading.Thread(target=lambda t=t: [writer.write({"thread": t, "i": i}) for i in range(200)])
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert verify(path) == VerifyReport(ok=True, records=800)


def test_writing_after_close_is_an_error(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "a.jsonl")
    writer.close()
    with pytest.raises(AuditLogError, match="closed"):
        writer.write({"n": 1})


def test_a_second_writer_on_the_same_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path):
        with pytest.raises(AuditLogError, match="another writer"):
            AuditWriter(path)
    AuditWriter(path).close()  # released once the first is closed


# -- resuming -----------------------------------------------------------------------------


def test_resuming_a_log_continues_the_chain(log: Path) -> None:
    with AuditWriter(log) as writer:
        assert writer.next_seq == 10
        for i in range(10, 15):
            writer.write(_record(i))
    assert verify(log) == VerifyReport(ok=True, records=15)
    assert [r["seq"] for r in read_records(log)] == list(range(15))


def test_resuming_after_a_torn_line_is_refused(log: Path) -> None:
    lines = _lines(log)
    _write_lines(log, [*lines[:-1], lines[-1][:40]])
    with pytest.raises(AuditLogError, match=r"audit\.jsonl:10: the last line is torn"):
        AuditWriter(log)


def test_resuming_after_a_changed_last_record_is_refused(log: Path) -> None:
    lines = _lines(log)
    _write_lines(log, [*lines[:-1], lines[-1].replace(b'"exchange":"ex-9"', b'"exchange":"ex-X"')])
    with pytest.raises(AuditLogError, match="no longer matches its hash"):
        AuditWriter(log)


def test_resuming_a_very_long_last_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditWriter(path) as writer:
        writer.write({"n": 0})
        writer.write({"text": "x" * 200_000})  # longer than one tail block
    with AuditWriter(path) as writer:
        assert writer.write({"n": 2})["seq"] == 2
    assert verify(path).ok


# -- tampering ----------------------------------------------------------------------------


def test_a_changed_field_is_detected(log: Path) -> None:
    lines = _lines(log)
    record = orjson.loads(lines[3])
    record["action"] = "allow" if record["action"] == "block" else "block"
    lines[3] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
    _write_lines(log, lines)
    _assert_problem(verify(log), "changed", 4, "seq 3 was changed", "no longer matches its hash")
    assert verify(log).records == 3


def test_a_deleted_record_is_detected(log: Path) -> None:
    lines = _lines(log)
    del lines[4]
    _write_lines(log, lines)
    _assert_problem(verify(log), "deleted", 5, "seq jumps from 3 to 5", "1 record(s) deleted")


def test_a_deleted_first_record_is_detected(log: Path) -> None:
    _write_lines(log, _lines(log)[1:])
    _assert_problem(verify(log), "deleted", 1, "starts at seq 1")


def test_an_inserted_copy_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines.insert(7, lines[2])
    _write_lines(log, lines)
    _assert_problem(verify(log), "inserted", 8, "seq 2 repeats the record at line 3", "exact copy")


def test_an_inserted_copy_of_a_later_record_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines.insert(2, lines[7])
    _write_lines(log, lines)
    _assert_problem(verify(log), "inserted", 3, "seq 7", "appears again at line 9")


def test_a_record_from_another_chain_is_detected(log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    with AuditWriter(other) as writer:
        for i in range(10):
            writer.write({"n": i})
    lines = _lines(log)
    lines[5] = _lines(other)[5]
    _write_lines(log, lines)
    _assert_problem(verify(log), "inserted", 6, "prev is not the hash of line 5")


def test_swapped_records_are_detected(log: Path) -> None:
    lines = _lines(log)
    lines[3], lines[4] = lines[4], lines[3]
    _write_lines(log, lines)
    _assert_problem(verify(log), "reordered", 4, "seq 4 where seq 3 was expected", "at line 5")


def test_a_torn_last_line_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    _write_lines(log, lines)
    _assert_problem(verify(log), "torn", 10, "no newline at the end")
    assert verify(log).records == 9


def test_a_truncated_middle_line_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines[5] = lines[5][:60] + b"\n"
    _write_lines(log, lines)
    _assert_problem(verify(log), "invalid", 6, "not valid JSON")


def test_a_line_that_is_not_a_record_is_detected(log: Path) -> None:
    lines = _lines(log)
    lines[2] = b'{"hello": "world"}\n'
    _write_lines(log, lines)
    _assert_problem(verify(log), "invalid", 3, "not an audit record")


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    AuditWriter(path).close()
    assert verify(path) == VerifyReport(ok=True, records=0)


# -- reading ------------------------------------------------------------------------------


def test_query_filters_by_agent_action_and_rule(log: Path) -> None:
    records = list(read_records(log))
    assert [r["seq"] for r in query(records, agent="executor")] == [0, 3, 6, 9]
    assert [r["seq"] for r in query(records, action="block")] == [0, 4, 8]
    assert [r["seq"] for r in query(records, rule="violent-suggestion", agent="planner")] == [4, 8]
    assert len(list(query(records, rule="disclose-ai-to-ai"))) == 10
    assert list(query(records, agent="nobody")) == []


def test_reading_a_torn_log_names_the_line(log: Path) -> None:
    lines = _lines(log)
    _write_lines(log, [*lines[:-1], lines[-1][:30]])
    with pytest.raises(AuditLogError, match=r":10: not valid JSON \(torn"):
        list(read_records(log))
