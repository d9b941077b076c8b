"""The audit log writer: JSONL, secrets redacted at the source, hash-chained.

Like AWS CloudTrail log validation, every record carries the hash of the record before
it (`prev`) and its own hash (`hash`, SHA-256 of its canonical JSON without `hash`), so
a changed, deleted, inserted or reordered record breaks the chain (see `verify.py`).

A record goes through structlog: a bound logger whose processors are plain callables,
`(logger, method_name, event_dict) -> event_dict` (timestamp, secret redaction, the
hash chain), ending in a renderer that returns the line's bytes, which structlog hands
to the file sink. Numbering a record and appending its line happen under one lock.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

try:  # one writer per log file; flock is how we refuse a second one (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

GENESIS: Final = "0" * 64
REDACTED: Final = "[REDACTED]"
SECRET_KEYS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)

EventDict = dict[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]

_TAIL_BLOCK: Final = 64 * 1024


class AuditLogError(ValueError):
    """The log file cannot be appended to or read as it is (torn, corrupt, locked)."""


# -- canonical form (shared with verify.py) ----------------------------------------------


def _default(value: Any) -> Any:
    """What orjson cannot serialise by itself, made JSON-native so that the bytes that
    were hashed are the bytes a verifier reproduces from the parsed line."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist"):  # numpy scalars and arrays (detector scores)
        return value.tolist()
    raise TypeError(type(value).__name__)  # orjson replaces the message with its own


# Dataclasses go through _default so that their keys are sorted like a dict's.
_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(record: Mapping[str, Any]) -> bytes:
    """Sorted-key compact JSON, the form that is hashed and written."""
    try:
        return orjson.dumps(record, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"audit record cannot be written as JSON: {exc}") from exc


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of `record` without its `hash` field."""
    if "hash" in record:
        record = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(record)).hexdigest()


# -- the processors ------------------------------------------------------------------------


def add_timestamp(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """`ts`: the time of writing, ISO 8601 UTC with microseconds (kept if already set)."""
    if "ts" not in event_dict:
        now = datetime.datetime.now(datetime.UTC)
        event_dict["ts"] = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return event_dict


def redact_secrets(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every credential-bearing key, at any depth, with [REDACTED].

    Keys match case-insensitively, with `_` read as `-` (x_api_key). A two-item
    [name, value] pair whose name is such a key (headers as a list of pairs) is
    redacted too. The caller's nested objects are never modified: containers are copied.
    """
    return _redact_mapping(event_dict)


def _is_secret(key: Any) -> bool:
    return isinstance(key, str) and _is_secret_name(key)


@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    # Records repeat the same few dozen keys: normalise each once, not once per record.
    return key.lower().replace("_", "-") in SECRET_KEYS


# Most values in a record are scalars: they are checked inline, without a call each.
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _redact_mapping(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {
        key: REDACTED if _is_secret(key) else (value if type(value) in _SCALARS else _redact(value))
        for key, value in mapping.items()
    }


def _redact(value: Any) -> Any:
    if type(value) in _SCALARS or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Mapping):
        return _redact_mapping(value)
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and _is_secret(value[0]):
            return [value[0], REDACTED]
        return [item if type(item) in _SCALARS else _redact(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _redact_mapping({field.name: getattr(value, field.name) for field in dataclasses.fields(value)})
    return value


class HashChain:
    """Adds `seq`, `prev` and `hash`. Stateful: it remembers the last record's seq and
    hash; `state`/`restore` let the writer undo a record whose line failed to write."""

    def __init__(self, next_seq: int = 0, prev: str = GENESIS) -> None:
        self.next_seq = next_seq
        self.prev = prev

    @property
    def state(self) -> tuple[int, str]:
        return self.next_seq, self.prev

    def restore(self, state: tuple[int, str]) -> None:
        self.next_seq, self.prev = state

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.pop("hash", None)  # a caller-supplied hash would be a lie
        event_dict["seq"] = self.next_seq
        event_dict["prev"] = self.prev
        digest = hashlib.sha256(canonical_json(event_dict)).hexdigest()
        event_dict["hash"] = digest
        self.next_seq += 1
        self.prev = digest
        return event_dict


def render_jsonl(logger: Any, method_name: str, event_dict: EventDict) -> bytes:
    """The renderer: one canonical JSON line, newline-terminated."""
    return orjson.dumps(event_dict, default=_default, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


# -- where the lines go -----------------------------------------------------------------


class _FileSink:
    """Appends lines to the log file, one write per line.

    This is the seam for the durability and rotation policies (a later issue): when
    to fsync, and when to start a new file, are decided here and nowhere else.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Unbuffered and O_APPEND: each line is one write(2), so it reaches the OS
        # (survives a crash of this process) the moment write() returns.
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise AuditLogError(f"{path}: another writer has this audit log open") from None
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, line: bytes) -> None:
        start = self._size
        view = memoryview(line)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BaseException:
            # Never leave a torn line behind a failed write: the next record would
            # follow garbage and the whole log would fail verification from there.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise
        self._size = start + len(line)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1


# -- the writer ------------------------------------------------------------------------------


class AuditWriter:
    """Appends records to a hash-chained JSONL audit log. Thread-safe.

    Opening an existing log resumes its chain from the last record; a log whose last
    line is torn (a crash mid-write) or whose last record does not match its own hash
    is refused with AuditLogError rather than silently continued.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._sink = _FileSink(self.path)
        try:
            last = _last_record(self.path)
        except BaseException:
            self._sink.close()
            raise
        self._chain = HashChain() if last is None else HashChain(last["seq"] + 1, last["hash"])
        self._written: EventDict = {}
        self.processors: list[Processor] = [add_timestamp, redact_secrets, self._chain, self._keep, render_jsonl]
        self._logger = structlog.wrap_logger(
            self._sink, processors=self.processors, context_class=dict, wrapper_class=structlog.BoundLogger
        )
        self._closed = False

    def _keep(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        self._written = event_dict
        return event_dict

    def write(self, record: Mapping[str, Any]) -> EventDict:
        """Append one record; return it as written (with ts, seq, prev and hash)."""
        with self._lock:
            if self._closed:
                raise AuditLogError(f"{self.path}: the audit writer is closed")
            state = self._chain.state
            try:
                self._logger.write(**record)
            except BaseException:
                self._chain.restore(state)
                raise
            return self._written

    @property
    def next_seq(self) -> int:
        return self._chain.next_seq

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._sink.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _last_record(path: Path) -> dict[str, Any] | None:
    """The last record of an existing log, checked enough to chain onto safely."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return None
        file.seek(size - 1)
        if file.read(1) != b"\n":
            raise AuditLogError(
                f"{path}:{_count_lines(path)}: the last line is torn (no newline at the end), "
                "as when a write is cut short by a crash; refusing to append after it. "
                "Run verify, then truncate the torn line to resume the log."
            )
        # Read backwards block by block until the newline before the last line.
        end = size - 1  # the final newline
        position = end
        tail = b""
        while True:
            step = min(_TAIL_BLOCK, position)
            position -= step
            file.seek(position)
            tail = file.read(step) + tail
            cut = tail.rfind(b"\n")
            if cut >= 0:
                line = tail[cut + 1 :]
                break
            if position == 0:
                line = tail
                break
    where = f"{path}:{_count_lines(path)}"
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise AuditLogError(f"{where}: the last record is not valid JSON ({exc}); refusing to append") from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("seq"), int)
        or not isinstance(record.get("hash"), str)
    ):
        raise AuditLogError(f"{where}: the last line is not an audit record (no seq/hash); refusing to append")
    if record_hash(record) != record["hash"]:
        raise AuditLogError(
            f"{where}: the last record no longer matches its hash (it was changed); refusing to append"
        )
    return record


def _count_lines(path: Path) -> int:
    """1-based number of the last line (error messages only, so a full read is fine)."""
    with open(path, "rb") as file:
        newlines = sum(block.count(b"\n") for block in iter(lambda: file.read(1 << 20), b""))
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - 1))
        ends_with_newline = file.read(1) == b"\n"
    return newlines if ends_with_newline else newlines + 1
