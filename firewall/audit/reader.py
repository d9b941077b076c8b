"""Reading an audit log back: records one at a time, and a simple filter.

Reading does not check the hash chain (that is `verify`'s job); it only refuses lines
that are not JSON records, naming the file and line. A rotated log is read whole: its
rotated files oldest first, then the live file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from firewall.audit.writer import AuditLogError, log_files


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield each record of the log whose live file is `path`, in chain order: its rotated
    files (`path.000001`, ...) oldest first, then `path`. Raises AuditLogError at a line
    that is not a JSON object (a torn last line included), FileNotFoundError if there is
    no such log."""
    files = log_files(path) or [path]  # none at all: let open() say so
    for file in files:
        yield from _records_of(file)


def _records_of(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                torn = "" if line.endswith(b"\n") else " (torn: no newline at the end)"
                raise AuditLogError(f"{os.fspath(path)}:{number}: not valid JSON{torn}: {exc}") from None
            if not isinstance(record, dict):
                raise AuditLogError(f"{os.fspath(path)}:{number}: not a JSON object")
            yield record


def query(
    records: Iterable[dict[str, Any]],
    agent: str | None = None,
    action: str | None = None,
    rule: str | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The records that match every filter given.

    agent: the record's `agent`, `source` or `target` (who spoke, whose words, to whom).
    action: the record's `action`.
    rule: the record's `rule`, an entry of its `rules` list, or the `rule` of one of
    its `findings` (the decision's blocking rule or any rule that fired).
    since, until: ISO 8601 UTC times (`2026-11-28`, `2026-11-28T10:00`); `ts` at or
    after `since`, before `until`.
    text: case-insensitive, in what the record holds of the exchange: its messages (when
    the policy keeps them), the answer released, an error.
    """
    needle = text.casefold() if text else None
    for record in records:
        if agent is not None and agent not in (record.get("agent"), record.get("source"), record.get("target")):
            continue
        if action is not None and record.get("action") != action:
            continue
        if rule is not None and rule not in _rules_of(record):
            continue
        moment = str(record.get("ts", ""))
        if since is not None and moment < since:
            continue
        if until is not None and moment >= until:
            continue
        if needle is not None and needle not in _texts_of(record).casefold():
            continue
        yield record


def _texts_of(record: dict[str, Any]) -> str:
    pieces: list[str] = []
    for message in record.get("content") or ():
        if isinstance(message, dict):
            pieces.extend(str(part.get("text", "")) for part in message.get("parts", ()) if isinstance(part, dict))
    response = record.get("response")
    if isinstance(response, dict) and isinstance(response.get("text"), dict):
        pieces.extend(str(value) for value in response["text"].values())
    pieces.extend(str(record[key]) for key in ("error", "reason") if isinstance(record.get(key), str))
    return "\n".join(pieces)


def rule_ids(record: dict[str, Any]) -> list[str]:
    """The rules a record lists as fired, in its order (`rules`: entries with an `id`)."""
    listed = record.get("rules")
    if not isinstance(listed, list):
        return []
    return [item if isinstance(item, str) else item["id"] for item in listed
            if isinstance(item, str) or (isinstance(item, dict) and isinstance(item.get("id"), str))]


def _rules_of(record: dict[str, Any]) -> set[str]:
    rules: set[str] = set(rule_ids(record))
    for key in ("rule", "blocking_rule"):
        if isinstance(record.get(key), str):
            rules.add(record[key])
    findings = record.get("findings")
    if isinstance(findings, list):
        rules.update(
            finding["rule"]
            for finding in findings
            if isinstance(finding, dict) and isinstance(finding.get("rule"), str)
        )
    return rules
