"""The audit log writer: JSONL, secrets redacted at the source, hash-chained.

Like AWS CloudTrail log validation, every record carries the hash of the record before
it (`prev`) and its own hash (`hash`, SHA-256 of its canonical JSON without `hash`), so
a changed, deleted, inserted or reordered record breaks the chain (see `verify.py`).

A record goes through a chain of plain callables in structlog's processor form,
`(logger, method_name, event_dict) -> event_dict` (timestamp, secret redaction, the
hash chain), then a renderer that returns the line's bytes, appended to the file. The
chain is run directly rather than through a structlog logger: the firewall writes two
records per request, and the logger's machinery cost as much as the processors did.
Numbering a record and appending its line happen under one lock.

Rotation (off unless asked for): the live file keeps its name (audit.jsonl); when it
reaches `rotate_bytes` or is `rotate_seconds` old, the next write first renames it to
`audit.jsonl.000001` (then .000002, ...: six or more digits, numbered in the order the
files were rotated, so they sort by name) and starts a new live file. The chain does not
restart: the new file's first record is a rotation record (`event: audit_rotated`),
chained to the last record of the file before it, which names that file and its seq
range. A file deleted from the middle of the set, or the newest rotated file, is
therefore named by the file that follows it (see verify.py). A file is rotated on the
first write after it reached the limit, so it ends up at most one record over
`rotate_bytes`; it always holds at least one record besides its rotation record.

Durability (`fsync`): "none" (the default, as before rotation existed) writes each line
with one write(2) and never fsyncs: a record survives a crash of this process the moment
`write` returns, but an OS crash or power loss can lose what the kernel has not written
back yet (on Linux, typically the last 5 to 30 seconds). "record" fsyncs after every
record before `write` returns: nothing acknowledged is lost, at the price of one disk
flush per record on the writer's thread. "batch" fsyncs from a background thread every
`fsync_interval` seconds (when something was written) and on rotation and close: an OS
crash loses at most the records of the last interval (plus one fsync's duration).
`durable_seq` says how far the log is known to be on disk.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

import orjson
import re2

try:  # one writer per log file; flock is how we refuse a second one (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

GENESIS: Final = "0" * 64
REDACTED: Final = "[REDACTED]"
SECRET_KEYS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "set-cookie"}
)

ROTATION_EVENT: Final = "audit_rotated"

EventDict = dict[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]
FsyncMode = Literal["record", "batch", "none"]
FSYNC_MODES: Final[tuple[str, ...]] = get_args(FsyncMode)
Clock = Callable[[], float]
"""Seconds since the epoch, like `time.time` (the default). Tests pass a fake one."""
Ticker = Callable[[float, Callable[[], None]], Callable[[], None]]
"""`ticker(interval, tick) -> stop`: call `tick` every `interval` seconds until `stop()`."""

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


def timestamper(clock: Clock = time.time) -> Processor:
    """A processor that sets `ts`, the time of writing by `clock`, ISO 8601 UTC with
    microseconds (kept if already set)."""
    # The date and time to the second are formatted once per second, not once per record.
    last: list[Any] = [None, ""]

    def add_timestamp(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if "ts" not in event_dict:
            now = clock()
            second = math.floor(now)
            micro = round((now - second) * 1_000_000)
            if micro == 1_000_000:
                second, micro = second + 1, 0
            if second != last[0]:
                last[0] = second
                last[1] = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            event_dict["ts"] = f"{last[1]}.{micro:06d}Z"
        return event_dict

    return add_timestamp


add_timestamp: Final = timestamper()


def _epoch(ts: Any) -> float | None:
    """The `ts` of a record back in seconds since the epoch (None if it is not one)."""
    try:
        return datetime.datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else None
    except ValueError:
        return None


# Each credential-bearing key's name as a JSON string, in any case and with `_` for `-`
# (as `_is_secret_name` folds a key): one pass of RE2's automaton over the serialised record.
_SECRET_NAME: Final = re2.compile(
    b'(?i)"(?:' + b"|".join(key.encode().replace(b"-", b"[-_]") for key in sorted(SECRET_KEYS)) + b')"')
_KELVIN: Final = "\u212a".encode()  # the one non-ASCII letter whose lower() is an ASCII one ("k")


def redact_secrets(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace the value of every credential-bearing key, at any depth, with [REDACTED].

    Keys match case-insensitively, with `_` read as `-` (x_api_key). A two-item
    [name, value] pair whose name is such a key (headers as a list of pairs) is
    redacted too. The caller's nested objects are never modified: containers are copied.

    Nearly every record names no such key anywhere: one look at its serialised form says
    so (a few µs, where walking a record with its texts took about ten), and it is passed
    on unchanged. A record that does, even as a value, is walked."""
    try:
        serialised = orjson.dumps(event_dict, default=_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    except orjson.JSONEncodeError:
        serialised = None  # the walk, then canonical_json, say what is wrong
    if serialised is not None and not _may_name_a_secret(serialised):
        return event_dict
    return _redact_mapping(event_dict)


def _may_name_a_secret(serialised: bytes) -> bool:
    if _KELVIN[:1] in serialised and _KELVIN in serialised:  # a one-byte search clears ASCII records
        return True
    return _SECRET_NAME.search(serialised) is not None


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


# -- the files of one log -------------------------------------------------------------------

_ROTATED_SUFFIX: Final = re.compile(r"[0-9]{6,}")


def rotated_name(live: Path, number: int) -> Path:
    """Where the live file goes when it is rotated for the `number`th time."""
    return live.with_name(f"{live.name}.{number:06d}")


def rotated_files(live: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The rotated files of the log whose live file is `live`, oldest first, with their
    numbers. Only `<live name>.<6+ digits>` counts: a `.bak` or `.gz` beside it does not."""
    live = Path(live)
    prefix = live.name + "."
    try:
        names = os.listdir(live.parent)
    except FileNotFoundError:
        return []
    found = [
        (int(name[len(prefix) :]), live.with_name(name))
        for name in names
        if name.startswith(prefix) and _ROTATED_SUFFIX.fullmatch(name[len(prefix) :])
    ]
    return sorted(found)


def log_files(live: str | os.PathLike[str]) -> list[Path]:
    """Every file of the log whose live file is `live`, in chain order: the rotated files
    oldest first, then the live file itself (when it exists)."""
    files = [path for _, path in rotated_files(live)]
    if os.path.exists(live):
        files.append(Path(live))
    return files


def rotation_link(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a rotation record says about the file before it (None for other records)."""
    previous = record.get("previous")
    if record.get("event") != ROTATION_EVENT or not isinstance(previous, dict):
        return None
    return previous


# -- where the lines go -----------------------------------------------------------------

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # data and size, not atime


def _open_locked(path: Path, *, new: bool) -> int:
    """Open `path` for appending and take its writer lock; `new`: it must not exist yet."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise AuditLogError(
            f"{path}: appeared while the log was being rotated: another writer has this audit log open"
        ) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditLogError(f"{path}: another writer has this audit log open") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _sync_directory(directory: Path) -> None:
    """Make a created or renamed file's name durable, not only its data."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system can sync a directory; the files' data were synced
    finally:
        os.close(fd)


class _LiveFile:
    """The live file: appends lines, one write each; fsyncs; rotates.

    `write` and `rotate` run under the writer's lock. `sync` may come from the fsync
    thread at any moment, so the descriptor is only swapped or closed under `_fd_lock`,
    never while a sync is using it.
    """

    def __init__(self, path: Path, *, sync_each: bool) -> None:
        self.path = path
        self.sync_each = sync_each
        self._fd_lock = threading.Lock()
        # Unbuffered and O_APPEND: each line is one write(2), so it reaches the OS
        # (survives a crash of this process) the moment write() returns.
        self._fd = _open_locked(path, new=False)
        try:
            self.size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def write(self, line: bytes) -> None:
        fd = self._fd
        if fd < 0:
            raise AuditLogError(f"{self.path}: the audit log file is closed (a rotation failed half-way)")
        start = self.size
        view = memoryview(line)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.sync_each:
                _fdatasync(fd)
        except BaseException:
            # Never leave a torn line behind a failed write: the next record would
            # follow garbage and the whole log would fail verification from there.
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        self.size = start + len(line)

    def sync(self) -> None:
        with self._fd_lock:
            if self._fd >= 0:
                _fdatasync(self._fd)

    def rotate(self, target: Path, *, sync_directory: bool) -> None:
        """Rename the live file to `target` and carry on in a new, empty live file."""
        with self._fd_lock:
            try:
                os.rename(self.path, target)
            except OSError as exc:
                raise AuditLogError(f"{self.path}: cannot rotate it to {target.name}: {exc}") from exc
            try:
                fd = _open_locked(self.path, new=True)
            except AuditLogError:
                self._break()  # the live name is someone else's now: stop rather than mix logs
                raise
            except OSError as exc:
                try:
                    os.rename(target, self.path)  # carry on in the old file, as if never rotated
                except OSError:
                    self._break()
                raise AuditLogError(f"{self.path}: cannot start a new live file: {exc}") from exc
            os.close(self._fd)
            self._fd, self.size = fd, 0
        if sync_directory:
            _sync_directory(self.path.parent)

    @property
    def broken(self) -> bool:
        return self._fd < 0

    def _break(self) -> None:
        os.close(self._fd)
        self._fd = -1

    def close(self) -> None:
        with self._fd_lock:
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1


def thread_ticker(interval: float, tick: Callable[[], None]) -> Callable[[], None]:
    """The default Ticker: calls `tick` every `interval` seconds from a daemon thread."""
    stopped = threading.Event()

    def run() -> None:
        while not stopped.wait(interval):
            tick()

    thread = threading.Thread(target=run, name="audit-fsync", daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join()

    return stop


# -- the writer ------------------------------------------------------------------------------


class AuditWriter:
    """Appends records to a hash-chained JSONL audit log. Thread-safe.

    Opening an existing log resumes its chain from the last record (of the newest rotated
    file when the live file is empty, as after a crash during a rotation); a log whose last
    line is torn (a crash mid-write) or whose last record does not match its own hash is
    refused with AuditLogError rather than silently continued.

    rotate_bytes / rotate_seconds: start a new live file once the current one has reached
    this size, or is this old (by `clock`); None: never. fsync: "none", "batch" (every
    `fsync_interval` seconds, by `ticker`) or "record" (see the module's docstring for
    what each can lose). `clock` also stamps the records' `ts`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rotate_bytes: int | None = None,
        rotate_seconds: float | None = None,
        fsync: FsyncMode = "none",
        fsync_interval: float = 1.0,
        clock: Clock = time.time,
        ticker: Ticker = thread_ticker,
    ) -> None:
        _check_options(rotate_bytes, rotate_seconds, fsync, fsync_interval)
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.fsync: FsyncMode = fsync
        self.fsync_interval = fsync_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fsync at a time; durable_seq only moves forward
        self._closed = False
        self._sync_error: OSError | None = None
        self._written_seq: int | None = None
        self._durable_seq: int | None = None
        self._stop_ticker: Callable[[], None] | None = None
        self._live = _LiveFile(self.path, sync_each=fsync == "record")
        try:
            self._chain = self._resume()
            self.processors: list[Processor] = [timestamper(clock), redact_secrets, self._chain]
            self.render: Callable[[Any, str, EventDict], bytes] = render_jsonl
            if fsync != "none":
                _sync_directory(self.path.parent)
            if self._pending is not None:
                self._emit(self._pending)
                self._pending = None
            if fsync == "batch":
                self._stop_ticker = ticker(fsync_interval, self._tick)
        except BaseException:
            self._live.close()
            raise

    def _resume(self) -> HashChain:
        """Where the chain and the live file stand: read from the files on disk."""
        rotated = rotated_files(self.path)
        self._next_number = max((number for number, _ in rotated), default=0) + 1
        self._pending: EventDict | None = None  # a rotation record still to be written
        self._file_first_seq: int | None = None
        self._file_started: float | None = None
        self._file_has_data = False  # records besides the rotation record: worth rotating
        last = _last_record(self.path)
        if last is not None:
            first = _first_record(self.path) or last
            self._file_first_seq = first.get("seq") if isinstance(first.get("seq"), int) else None
            self._file_started = _epoch(first.get("ts")) or self._clock()
            self._file_has_data = rotation_link(last) is None
            self._written_seq = last["seq"]
            return HashChain(last["seq"] + 1, last["hash"])
        if not rotated:
            return HashChain()
        number, newest = rotated[-1]
        tail = _last_record(newest)
        if tail is None:
            raise AuditLogError(f"{newest}: the newest rotated file is empty; cannot tell where the chain stands")
        head = _first_record(newest) or tail
        self._pending = _rotation_record("resume", newest, number, head.get("seq"), tail["seq"])
        self._written_seq = tail["seq"]
        return HashChain(tail["seq"] + 1, tail["hash"])

    def write(self, record: Mapping[str, Any]) -> EventDict:
        """Append one record; return it as written (with ts, seq, prev and hash).

        Rotates first when the live file is due. Raises AuditLogError when the writer is
        closed, when a rotation fails (the record is then not written) and, for good,
        after an fsync failed (what was written may not be on disk: refuse to go on as if
        it were)."""
        if record.get("event") == ROTATION_EVENT:
            raise ValueError(f"event {ROTATION_EVENT!r} is reserved for the writer's own rotation records")
        with self._lock:
            if self._closed:
                raise AuditLogError(f"{self.path}: the audit writer is closed")
            if self._live.broken:
                raise AuditLogError(f"{self.path}: a rotation failed half-way; this audit writer cannot go on")
            if self._sync_error is not None:
                raise self._fsync_failed()
            if self._pending is not None:
                self._emit(self._pending)
                self._pending = None
            reason = self._rotation_due()
            if reason is not None:
                self._rotate(reason)
            return self._emit(record)

    def _emit(self, record: Mapping[str, Any]) -> EventDict:
        state = self._chain.state
        written = dict(record)  # the caller's record is not changed
        try:
            for processor in self.processors:
                written = processor(None, "write", written)
            self._live.write(self.render(None, "write", written))
        except BaseException:
            self._chain.restore(state)
            raise
        seq = written["seq"]
        if self._file_first_seq is None:
            self._file_first_seq = seq
            self._file_started = self._clock()
        if record is not self._pending:
            self._file_has_data = True
        self._written_seq = seq
        if self.fsync == "record":
            with self._sync_lock:
                self._durable_seq = seq
        return written

    def _rotation_due(self) -> str | None:
        if not self._file_has_data:
            return None
        if self.rotate_bytes is not None and self._live.size >= self.rotate_bytes:
            return "size"
        if self.rotate_seconds is not None and self._clock() - (self._file_started or 0.0) >= self.rotate_seconds:
            return "time"
        return None

    def _rotate(self, reason: str) -> None:
        number = self._next_number
        while rotated_name(self.path, number).exists():  # never overwrite a file that is in the way
            number += 1
        target = rotated_name(self.path, number)
        durable = self.fsync != "none"
        if durable:
            self.flush()  # the rotated file is complete on disk before its successor names it
        self._live.rotate(target, sync_directory=durable)
        self._next_number = number + 1
        first_seq = self._file_first_seq
        self._file_first_seq = self._file_started = None
        self._file_has_data = False
        self._pending = _rotation_record(reason, target, number, first_seq, self._chain.next_seq - 1)
        self._emit(self._pending)
        self._pending = None

    def flush(self) -> None:
        """fsync everything written so far, whatever the mode; `durable_seq` follows.
        Raises AuditLogError if the fsync fails (and every write after it does too)."""
        with self._sync_lock:
            if self._sync_error is not None:
                raise self._fsync_failed()
            seq = self._written_seq  # read first: every line up to it is already written
            if seq is None or seq == self._durable_seq:
                return
            try:
                self._live.sync()
            except OSError as exc:
                self._sync_error = exc
                raise self._fsync_failed() from exc
            self._durable_seq = seq

    def _tick(self) -> None:
        try:
            self.flush()
        except AuditLogError:
            pass  # remembered in _sync_error: the next write refuses, and says why

    def _fsync_failed(self) -> AuditLogError:
        safe = "no record" if self._durable_seq is None else f"records up to seq {self._durable_seq}"
        return AuditLogError(
            f"{self.path}: fsync failed ({self._sync_error}); only {safe} are known to be on disk; "
            "refusing to write more"
        )

    @property
    def next_seq(self) -> int:
        return self._chain.next_seq

    @property
    def durable_seq(self) -> int | None:
        """The seq of the last record known to be on disk (fsynced); None: none is known."""
        return self._durable_seq

    def close(self) -> None:
        """Stop the fsync thread, fsync in "batch" mode, close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._stop_ticker is not None:
                self._stop_ticker()
            if self.fsync == "batch":
                self.flush()
        finally:
            self._live.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_options(rotate_bytes: Any, rotate_seconds: Any, fsync: Any, fsync_interval: Any) -> None:
    def positive(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")

    if rotate_bytes is not None and not (positive(rotate_bytes) and isinstance(rotate_bytes, int)):
        raise ValueError(f"audit rotation size must be a positive whole number of bytes, not {rotate_bytes!r}")
    if rotate_seconds is not None and not positive(rotate_seconds):
        raise ValueError(f"audit rotation age must be a positive number of seconds, not {rotate_seconds!r}")
    if fsync not in FSYNC_MODES:
        raise ValueError(f"audit fsync mode must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
    if not positive(fsync_interval):
        raise ValueError(f"audit fsync interval must be a positive number of seconds, not {fsync_interval!r}")


def _rotation_record(reason: str, previous: Path, number: int, first_seq: Any, last_seq: int) -> EventDict:
    """The first record of a new live file: names the file before it, and its seq range,
    so that verify can say which file went missing."""
    return {
        "event": ROTATION_EVENT,
        "reason": reason,
        "previous": {"file": previous.name, "number": number, "first_seq": first_seq, "last_seq": last_seq},
    }


def _first_record(path: Path) -> dict[str, Any] | None:
    """The first record of a log file, if its first line is one (no checks: a hint)."""
    with open(path, "rb") as file:
        line = file.readline()
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _last_record(path: Path) -> dict[str, Any] | None:
    """The last record of an existing log file, checked enough to chain onto safely."""
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
