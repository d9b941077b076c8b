"""An embedded SQLite index of an audit log, so that `audit query`, `show` and `stats`
answer over a million records in well under a second instead of parsing every line.

The index is a cache, not evidence. It never decides what a record says: it only finds
candidate lines, which are read back from the log itself and go through the same filter
as a scan (`reader.query`), so it can narrow what is read but never change what matches.
It does not check the hash chain, and it does not notice a record edited in place in the
middle of a file (it checks each file's first line and the last line it indexed): `audit
verify` is the authority on what the log holds. Delete the index at any time; the next
use builds it again.

Where it lives: beside the log's live file, `<live path>.index.sqlite` (or any path).

How it stays right:
- Incremental: it remembers, per log file, how many bytes it has indexed, and each
  refresh reads only what was appended since.
- Files are known by content (the SHA-256 of their first line), not by name: when the
  live file is rotated to `path.00000N` it is the same file, and only its new lines and
  the new live file are read.
- A file shorter than what was indexed, or whose last indexed line no longer matches its
  hash, is indexed again from its start, and so is every file after it in the chain (the
  index keeps records in chain order); a file gone from the log leaves the index; an
  index of another schema version is rebuilt.
- The firewall appends while a reviewer queries: a last line of the live file with no
  newline yet is a write in progress, left for the next refresh.
- One write transaction per refresh, so two reviewers refreshing at once take turns,
  and an interrupted refresh leaves the index as it was.

Text search: the index keeps each record's searchable text, casefolded as the scan
casefolds it, with an FTS5 trigram index over it. A needle of three or more characters is
looked up by its trigrams, then checked with `instr`; a shorter one has no trigram, and
`instr` goes through every text. Either way, only the records found are read from the log.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from firewall.audit.reader import _rules_of, _texts_of, query, rule_ids
from firewall.audit.report import AgentStats, stats
from firewall.audit.writer import AuditLogError, log_files

__all__ = ["INDEX_SUFFIX", "SCHEMA_VERSION", "AuditIndex", "IndexUnavailable", "Refresh", "default_index_path"]

SCHEMA_VERSION: Final = 1
INDEX_SUFFIX: Final = ".index.sqlite"
_APPLICATION_ID: Final = 0x41465749  # "AFWI": a database at the index path that is not ours is never touched

_CHUNK: Final = 8 << 20  # bytes read from a log file at a time while indexing
_BATCH_GAP: Final = 16 << 10  # candidate lines this close are read back with one pread
_BATCH_SPAN: Final = 4 << 20
_MAX_TRIGRAMS: Final = 24  # a long needle is narrowed by a sample of its trigrams: any subset is a superset
_RULE_ORDER: Final = 1 << 16  # first occurrence of a rule = record id * this + its place in the record's list
_BUSY_SECONDS: Final = 120.0  # another reviewer's refresh of the same index (a first build takes a minute)
_OPEN_RETRIES: Final = 5
_WAL_LIMIT: Final = 64 << 20  # a first build passes the whole index through the WAL: give the disk back after

_REQUEST, _RESPONSE = 1, 2
_KINDS: Final = {"request": _REQUEST, "response": _RESPONSE}

_SCHEMA: Final = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # One row per log file, known by the hash of its first line. Its records hold the ids
    # first_record..last_record, and no other file's records lie between them.
    """CREATE TABLE files(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        lines INTEGER NOT NULL,
        last_offset INTEGER,
        last_length INTEGER,
        last_hash BLOB,
        first_record INTEGER,
        last_record INTEGER)""",
    # Record ids follow chain order (file order, then offset).
    """CREATE TABLE records(
        id INTEGER PRIMARY KEY,
        file INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        length INTEGER NOT NULL,
        ts TEXT NOT NULL,
        action TEXT,
        exchange TEXT,
        kind INTEGER,
        stats_agent TEXT,
        blocked INTEGER NOT NULL)""",
    # agent, source and target: the agent filter matches any of the three alike.
    "CREATE TABLE record_agents(name TEXT NOT NULL, record INTEGER NOT NULL, PRIMARY KEY(name, record)) WITHOUT ROWID",
    # Every rule the rule filter finds; `fired` and `first` are what stats counts and orders by.
    """CREATE TABLE record_rules(rule TEXT NOT NULL, record INTEGER NOT NULL, fired INTEGER NOT NULL,
        first INTEGER NOT NULL, PRIMARY KEY(rule, record)) WITHOUT ROWID""",
    # The searchable text, casefolded as the scan casefolds it (records that have any), and
    # its trigrams: which records hold all of a needle's trigrams, without their positions.
    "CREATE TABLE record_texts(id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
    """CREATE VIRTUAL TABLE texts USING fts5(text, content='record_texts', content_rowid='id', detail=none,
        columnsize=0, tokenize='trigram case_sensitive 1')""",
)
# Built after the records on a first build: one sort is cheaper than a million inserts in key order.
_SECONDARY: Final = {"records_ts": "records(ts)", "records_action": "records(action)"}


class IndexUnavailable(Exception):
    """The index cannot be opened, created or written where it is (a read-only directory,
    a file there that is not an audit index, another process holding it too long): read
    the log without it."""


def default_index_path(log: str | os.PathLike[str]) -> Path:
    """Where the index of the log whose live file is `log` lives unless told otherwise."""
    live = Path(log)
    return live.with_name(live.name + INDEX_SUFFIX)


@dataclass(frozen=True, slots=True)
class Refresh:
    """What one refresh did."""

    files: int  # files in the log
    files_read: int  # files with lines that were new to the index
    added: int  # records added
    bytes_read: int
    records: int  # records in the index now
    reindexed: tuple[str, ...]  # files indexed again from their start: changed, shortened, or after such a file
    dropped: tuple[str, ...]  # files no longer in the log, whose records left the index
    rebuilt: str | None  # why the whole index was built again, when it was
    seconds: float


@dataclass(slots=True)
class _Done:
    files_read: int = 0
    added: int = 0
    bytes_read: int = 0
    reindexed: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _LogFile:
    path: Path
    handle: IO[bytes]
    size: int
    key: str | None  # None: not even a first line yet

    @property
    def fd(self) -> int:
        return self.handle.fileno()


@dataclass(frozen=True, slots=True)
class _Known:
    id: int
    key: str
    name: str
    size: int
    lines: int
    last_offset: int | None
    last_length: int | None
    last_hash: bytes | None
    first_record: int | None
    last_record: int | None


class AuditIndex:
    """The index of the audit log whose live file is `log`, stored at `path` (default
    `default_index_path(log)`). Raises IndexUnavailable when it cannot be opened or created.

    `refresh()` brings it up to date with the log and holds the log's files open, so that
    what `query` and `stats` read back is what was indexed even if the log rotates
    meanwhile; they refresh first when nothing has been refreshed yet.
    """

    def __init__(self, log: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> None:
        self.log = Path(log)
        self.path = Path(path) if path is not None else default_index_path(log)
        if not log_files(self.log):
            raise FileNotFoundError(f"{self.log}: no such audit log")  # and no index beside nothing
        _create_like(self.path, log_files(self.log)[-1])
        self._files: dict[int, _LogFile] = {}
        self._generation = 0  # refreshes so far: a query's iterator reads only what its refresh indexed
        self._reading = False  # a read transaction is open over what the last refresh wrote
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=_BUSY_SECONDS)
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"{self.path}: cannot open the index: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: consistent after a crash is enough
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.execute("PRAGMA cache_size=-131072")  # 128 MiB: index and FTS pages during a build
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        except sqlite3.Error as exc:
            self._db.close()
            raise IndexUnavailable(f"{self.path}: cannot use the index: {exc}") from None

    # -- refreshing ----------------------------------------------------------------------

    def refresh(self, *, rebuild: bool = False) -> Refresh:
        """Index what the log gained since the last refresh (everything, with `rebuild`).
        Raises AuditLogError at a line that is not a JSON object (as a scan would),
        FileNotFoundError if there is no such log, IndexUnavailable if the index cannot be
        written."""
        started = time.perf_counter()
        while True:
            self._end_read()
            self._close_files()
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise IndexUnavailable(f"{self.path}: cannot write the index: {exc}") from None
            try:
                files = self._open_log()
                reason = self._prepare(rebuild)
                done = self._update(files)
                self._analyze(done.added)
                written = self._known_snapshot()
                self._db.execute("COMMIT")
                if done.bytes_read > _WAL_LIMIT:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._close_files()
                if isinstance(exc, sqlite3.Error):
                    raise IndexUnavailable(f"{self.path}: cannot write the index: {exc}") from None
                raise
            if self._begin_read(written):
                break
            rebuild = False  # another process refreshed it in between: catch up with that
        return Refresh(files=len(files), files_read=done.files_read, added=done.added, bytes_read=done.bytes_read,
                       records=self._count(), reindexed=tuple(done.reindexed), dropped=tuple(done.dropped),
                       rebuilt=reason, seconds=time.perf_counter() - started)

    def _prepare(self, rebuild: bool) -> str | None:
        """Make the schema current; the reason it was (re)built from nothing, if it was."""
        db = self._db
        application = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        if application != _APPLICATION_ID:
            if tables:
                raise IndexUnavailable(f"{self.path}: this file is not an audit index; choose another index path")
            reason: str | None = "new index"
        elif version != SCHEMA_VERSION:
            reason = f"index schema version {version}, this version reads {SCHEMA_VERSION}"
        elif rebuild:
            reason = "rebuild asked for"
        else:
            return None
        for name in tables:
            if not name.startswith(("sqlite_", "texts_")):  # FTS5's own tables go with `texts`
                db.execute(f'DROP TABLE IF EXISTS "{name}"')
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("INSERT INTO meta(key, value) VALUES ('next_record', 1)")
        return reason

    def _open_log(self) -> list[_LogFile]:
        """The log's files in chain order, opened. A rotation between listing the files and
        opening them would mix up the set, so the listing is taken again until it holds."""
        for _ in range(_OPEN_RETRIES):
            paths = log_files(self.log)
            if not paths:
                raise FileNotFoundError(f"{self.log}: no such audit log")
            opened: list[_LogFile] = []
            try:
                for path in paths:
                    handle = open(path, "rb", buffering=0)  # held open until the next refresh or close
                    opened.append(_LogFile(path, handle, os.fstat(handle.fileno()).st_size, None))
                if paths == log_files(self.log) and all(_same_file(item) for item in opened):
                    for item in opened:
                        item.key = _head_key(item, live=item is opened[-1])
                    return _disambiguate(opened)
            except FileNotFoundError:
                pass  # rotated away between the listing and the open: list again
            except BaseException:
                _close_all(opened)
                raise
            _close_all(opened)
        raise AuditLogError(f"{self.log}: the log's files kept changing while they were opened; try again")

    def _update(self, files: list[_LogFile]) -> _Done:
        known = {row.key: row for row in self._known()}
        # The longest prefix of the chain that the index holds, intact and in order. Only
        # the last file of it may have grown: records are numbered in chain order.
        keep: list[tuple[_LogFile, _Known]] = []
        for file in files:
            row = known.get(file.key) if file.key is not None else None
            if row is None or (keep and row.id < keep[-1][1].id) or not self._intact(row, file):
                break
            keep.append((file, row))
            if file.size > row.size:
                break
        kept = {row.key for _, row in keep}
        present = {file.key for file in files}
        dropped = [row for row in known.values() if row.key not in kept]
        for row in dropped:
            self._drop(row)
        done = _Done(reindexed=[str(file.path) for file in files[len(keep):] if file.key in known],
                     dropped=[row.name for row in dropped if row.key not in present])
        if self._db.execute("SELECT 1 FROM records LIMIT 1").fetchone() is None:
            # A first build: secondary indexes are sorted once, at the end.
            for name in _SECONDARY:
                self._db.execute(f"DROP INDEX IF EXISTS {name}")
        self._files = {row.id: file for file, row in keep}
        todo: list[tuple[_LogFile, _Known | None]] = [keep[-1]] if keep and keep[-1][0].size > keep[-1][1].size else []
        todo.extend((file, None) for file in files[len(keep):])
        for file, row in todo:
            last = file is files[-1]
            if file.key is None:
                continue  # empty, or the live file's first line still being written
            file_id, added, read = self._index_file(file, row, torn_ok=last)
            self._files[file_id] = file
            done.files_read += 1 if read else 0
            done.added += added
            done.bytes_read += read
        for name, columns in _SECONDARY.items():
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {columns}")
        held = set(map(id, self._files.values()))
        _close_all(file for file in files if id(file) not in held)
        return done

    def _intact(self, row: _Known, file: _LogFile) -> bool:
        if file.size < row.size:
            return False
        if row.last_offset is None or row.last_length is None:
            return True
        line = os.pread(file.fd, row.last_length, row.last_offset)
        return hashlib.sha256(line).digest() == row.last_hash

    def _drop(self, row: _Known) -> None:
        db = self._db
        if row.first_record is not None and row.last_record is not None:
            span = (row.first_record, row.last_record)
            db.execute("DELETE FROM records WHERE id BETWEEN ? AND ?", span)
            db.execute("DELETE FROM record_agents WHERE record BETWEEN ? AND ?", span)
            db.execute("DELETE FROM record_rules WHERE record BETWEEN ? AND ?", span)
            # An external-content FTS5 table forgets a row when told the text it indexed.
            db.execute("INSERT INTO texts(texts, rowid, text) SELECT 'delete', id, text FROM record_texts "
                       "WHERE id BETWEEN ? AND ?", span)
            db.execute("DELETE FROM record_texts WHERE id BETWEEN ? AND ?", span)
        db.execute("DELETE FROM files WHERE id = ?", (row.id,))

    def _index_file(self, file: _LogFile, row: _Known | None, *, torn_ok: bool) -> tuple[int, int, int]:
        """Index `file` from where `row` left it (from its start without one): its id in
        the index, the records added, the bytes read. `torn_ok`: it is the live file, and a
        last line without a newline is a write in progress, left for the next refresh."""
        db = self._db
        if row is None:
            file_id = db.execute("INSERT INTO files(key, name, size, lines) VALUES (?, ?, 0, 0)",
                                 (file.key, file.path.name)).lastrowid
            assert file_id is not None
            offset, lines, first_record = 0, 0, None
        else:
            file_id, offset, lines, first_record = row.id, row.size, row.lines, row.first_record
        start_id = next_id = self._meta("next_record", 1)
        start_offset = position = offset
        carry = b""
        last: tuple[int, int, bytes] | None = None
        while position < file.size:
            block = os.pread(file.fd, min(_CHUNK, file.size - position), position)
            if not block:
                break  # cut short since it was opened: the next refresh sees it
            position += len(block)
            data = carry + block if carry else block
            end = data.rfind(b"\n") + 1
            carry = data[end:]
            if end:
                next_id, lines, last = self._index_lines(file, file_id, data[:end], offset, next_id, lines)
                offset += end
        if carry and not torn_ok:  # a rotated file's last line without a newline: read as the scan reads it
            next_id, lines, last = self._index_lines(file, file_id, carry, offset, next_id, lines)
            offset += len(carry)
        if next_id > start_id:
            self._set_meta("next_record", next_id)
            first_record = start_id if first_record is None else first_record
        updates: dict[str, Any] = {"size": offset, "lines": lines, "name": file.path.name}
        if last is not None:
            updates |= {"last_offset": last[0], "last_length": last[1], "last_hash": last[2],
                        "first_record": first_record, "last_record": next_id - 1}
        db.execute(f"UPDATE files SET {', '.join(f'{name} = ?' for name in updates)} WHERE id = ?",
                   (*updates.values(), file_id))
        return file_id, next_id - start_id, offset - start_offset

    def _index_lines(self, file: _LogFile, file_id: int, data: bytes, base: int, next_id: int,
                     lines: int) -> tuple[int, int, tuple[int, int, bytes]]:
        """Index the whole lines in `data` (at byte `base` of the file; the last one may lack
        its newline): the next record id, the lines so far, and the last line's offset,
        length and hash."""
        records: list[tuple[Any, ...]] = []
        agents: list[tuple[str, int]] = []
        rules: list[tuple[str, int, int, int]] = []
        texts: list[tuple[int, str]] = []
        offset = base
        pieces = data.split(b"\n")
        if not pieces[-1]:
            pieces.pop()  # what follows the block's final newline
        final = len(pieces) - 1
        length = 0
        for number, piece in enumerate(pieces):
            lines += 1
            newline = number < final or data.endswith(b"\n")
            length = len(piece) + newline
            try:
                record = orjson.loads(piece)
            except orjson.JSONDecodeError:
                raise AuditLogError(_not_json(file.path, lines, piece, newline)) from None
            if not isinstance(record, dict):
                raise AuditLogError(f"{file.path}:{lines}: not a JSON object")
            record_id = next_id
            next_id += 1
            direction, agent, action, exchange = (record.get("direction"), record.get("agent"), record.get("action"),
                                                  record.get("exchange"))
            # stats' agent is `agent or "-"`; NULL when that is not a string (stats then runs the scan's code)
            stats_agent = (agent or "-") if isinstance(agent, str) or not agent else None
            records.append((record_id, file_id, offset, length, str(record.get("ts", "")),
                            action if isinstance(action, str) else None,
                            exchange if isinstance(exchange, str) else None,
                            _KINDS.get(direction) if isinstance(direction, str) else None,
                            stats_agent, action == "block"))
            agents.extend((name, record_id) for name in
                          {name for name in (agent, record.get("source"), record.get("target")) if isinstance(name, str)})
            found = _rules_of(record)
            if found:
                listed = rule_ids(record)
                fired = Counter(listed)
                places = {rule: place for place, rule in reversed(list(enumerate(listed)))}
                rules.extend((rule, record_id, fired.get(rule, 0),
                              record_id * _RULE_ORDER + min(places.get(rule, 0), _RULE_ORDER - 1)) for rule in found)
            text = _texts_of(record)
            if text:
                texts.append((record_id, _searchable(text)))
            offset += length
        db = self._db
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
        db.executemany("INSERT INTO record_agents VALUES (?, ?)", agents)
        db.executemany("INSERT INTO record_rules VALUES (?, ?, ?, ?)", rules)
        db.executemany("INSERT INTO record_texts VALUES (?, ?)", texts)
        db.executemany("INSERT INTO texts(rowid, text) VALUES (?, ?)", texts)
        start = offset - length
        return next_id, lines, (start, length, hashlib.sha256(data[start - base:offset - base]).digest())

    def _analyze(self, added: int) -> None:
        """Statistics for the query planner, after the index changed a lot."""
        if added and added * 10 >= self._count():
            self._db.execute("PRAGMA analysis_limit = 2000")
            self._db.execute("ANALYZE")

    # -- reading -----------------------------------------------------------------------

    def query(
        self,
        agent: str | None = None,
        action: str | None = None,
        rule: str | None = None,
        since: str | None = None,
        until: str | None = None,
        text: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """What `reader.query(read_records(log), ...)` yields, the same records in the same
        order (see there for each filter), read from the log by offset."""
        self._ready()
        where: list[str] = []
        values: list[Any] = []
        if agent is not None:
            where.append("id IN (SELECT record FROM record_agents WHERE name = ?)")
            values.append(agent)
        if rule is not None:
            where.append("id IN (SELECT record FROM record_rules WHERE rule = ?)")
            values.append(rule)
        if action is not None:
            where.append("action = ?")
            values.append(action)
        if since is not None:
            where.append("ts >= ?")
            values.append(since)
        if until is not None:
            where.append("ts < ?")
            values.append(until)
        if text and "\x00" not in text:  # (a NUL is not in the index: see _searchable)
            needle = text.casefold()
            match = _trigram_query(needle)
            if match is None:  # too short for a trigram: every text is searched
                where.append("id IN (SELECT id FROM record_texts WHERE instr(text, ?) > 0)")
                values.append(needle)
            else:
                where.append("id IN (SELECT id FROM record_texts WHERE id IN (SELECT rowid FROM texts WHERE texts MATCH ?) "
                             "AND instr(text, ?) > 0)")
                values += [match, needle]
        sql = "SELECT file, offset, length FROM records" + (" WHERE " + " AND ".join(where) if where else "")
        candidates = self._read(self._db.execute(sql + " ORDER BY id", values), self._generation)
        return query(candidates, agent=agent, action=action, rule=rule, since=since, until=until, text=text)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record the index holds, in chain order (what `read_records` reads)."""
        return self.query()

    def stats(self) -> tuple[list[AgentStats], dict[str, int]]:
        """What `report.stats(read_records(log))` returns, counted by SQL."""
        self._ready()
        db = self._db
        if db.execute("SELECT 1 FROM records WHERE kind IS NOT NULL AND stats_agent IS NULL LIMIT 1").fetchone():
            return stats(self.records())  # an agent that is not a string: only the scan's code says what it means
        agents: dict[str, AgentStats] = {}
        for name, requests, responses, blocked in db.execute(
                "SELECT stats_agent, SUM(kind = 1), SUM(kind = 2), SUM(blocked) FROM records "
                "WHERE kind IS NOT NULL GROUP BY stats_agent"):
            agents[name] = AgentStats(name, requests, responses, blocked)
        counts: dict[str, int] = {}
        # In order of each rule's first firing for each agent: the order the scan fills its dicts in.
        for name, rule, fired, _ in db.execute(
                "SELECT r.stats_agent, x.rule, SUM(x.fired), MIN(x.first) AS first FROM record_rules x "
                "JOIN records r ON r.id = x.record WHERE x.fired > 0 AND r.kind IS NOT NULL "
                "GROUP BY r.stats_agent, x.rule ORDER BY first"):
            agents[name].rules[rule] = fired
            counts[rule] = counts.get(rule, 0) + fired
        ordered = sorted(agents.values(), key=lambda a: (-a.requests, a.agent))
        return ordered, dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def _ready(self) -> None:
        if not self._reading:
            self.refresh()

    def _read(self, rows: Iterable[tuple[int, int, int]], generation: int) -> Iterator[dict[str, Any]]:
        """The records at `rows` (file, offset, length), read back in batches of nearby lines."""
        batch: list[tuple[int, int, int]] = []
        for row in rows:
            if batch and (row[0] != batch[0][0] or row[1] - (batch[-1][1] + batch[-1][2]) > _BATCH_GAP
                          or row[1] + row[2] - batch[0][1] > _BATCH_SPAN):
                yield from self._read_batch(batch, generation)
                batch = []
            batch.append(row)
        if batch:
            yield from self._read_batch(batch, generation)

    def _read_batch(self, batch: list[tuple[int, int, int]], generation: int) -> Iterator[dict[str, Any]]:
        file = self._files.get(batch[0][0])
        if generation != self._generation or not self._reading or file is None:
            raise AuditLogError(f"{self.path}: the index was refreshed or closed while a query was being read; "
                                "run the query again")
        start = batch[0][1]
        data = os.pread(file.fd, batch[-1][1] + batch[-1][2] - start, start)
        for _, offset, length in batch:
            line = data[offset - start:offset - start + length]
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                raise AuditLogError(
                    f"{file.path}: byte {offset} is not the record the index holds: the file was changed "
                    f"in place; `audit verify` it, and rebuild the index (`audit index --rebuild`)")
            yield record

    def _begin_read(self, written: list[tuple[int, str, int]]) -> bool:
        """Start a read transaction over what this process just wrote, which the files it
        holds open match. False (and no transaction) if another process changed the index
        in between."""
        self._db.execute("BEGIN")
        if self._known_snapshot() != written:
            self._db.execute("COMMIT")
            return False
        self._generation += 1
        self._reading = True
        return True

    def _end_read(self) -> None:
        if self._reading:
            self._db.execute("COMMIT")
            self._reading = False

    def _known_snapshot(self) -> list[tuple[int, str, int]]:
        return [tuple(row) for row in self._db.execute("SELECT id, key, size FROM files ORDER BY id")]  # type: ignore[misc]

    # -- small helpers ---------------------------------------------------------------------

    def _known(self) -> list[_Known]:
        return [_Known(*row) for row in self._db.execute(
            "SELECT id, key, name, size, lines, last_offset, last_length, last_hash, first_record, last_record "
            "FROM files ORDER BY id")]

    def _count(self) -> int:
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # no schema yet

    def _meta(self, key: str, default: int) -> int:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return default
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def _close_files(self) -> None:
        _close_all(self._files.values())
        self._files = {}

    def close(self) -> None:
        self._end_read()
        self._close_files()
        self._db.close()

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _create_like(path: Path, log: Path) -> None:
    """Create the index file, if it is new, readable by no one the log is not readable by:
    it holds the log's messages (SQLite gives its WAL files the same permissions)."""
    try:
        mode = os.stat(log).st_mode & 0o666
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    except FileExistsError:
        pass
    except OSError as exc:
        raise IndexUnavailable(f"{path}: cannot open the index: {exc}") from None


def _same_file(file: _LogFile) -> bool:
    """The name still leads to the file that was opened (no rotation in between)."""
    try:
        named = os.stat(file.path)
    except FileNotFoundError:
        return False
    opened = os.fstat(file.fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _head_key(file: _LogFile, *, live: bool) -> str | None:
    """The SHA-256 of the file's first line, newline included: who the file is, whatever
    its name. None while the live file has no whole first line (or nothing at all); a
    rotated file without a newline is all first line, as the scan reads it."""
    head = b""
    while len(head) < file.size:
        block = os.pread(file.fd, min(64 << 10, file.size - len(head)), len(head))
        if not block:
            break
        cut = block.find(b"\n")
        if cut >= 0:
            return hashlib.sha256(head + block[:cut + 1]).hexdigest()
        head += block
    return hashlib.sha256(head).hexdigest() if head and not live else None


def _disambiguate(files: list[_LogFile]) -> list[_LogFile]:
    """Files with the same first line (copies, or logs not written by AuditWriter) are told
    apart by their order among themselves."""
    seen: Counter[str] = Counter()
    for file in files:
        if file.key is not None:
            seen[file.key] += 1
            if seen[file.key] > 1:
                file.key = f"{file.key}#{seen[file.key]}"
    return files


def _close_all(files: Iterable[_LogFile]) -> None:
    for file in files:
        file.handle.close()


def _not_json(path: Path, number: int, line: bytes, newline: bool) -> str:
    """The scan's message for a line that is not JSON, word for word (its parser saw the newline)."""
    try:
        orjson.loads(line + b"\n" if newline else line)
    except orjson.JSONDecodeError as exc:
        torn = "" if newline else " (torn: no newline at the end)"
        return f"{path}:{number}: not valid JSON{torn}: {exc}"
    return f"{path}:{number}: not valid JSON"


def _searchable(text: str) -> str:
    """What the index holds of a record's text: casefolded as the scan casefolds it, and
    without NULs, at which SQLite's text functions and tokenizers stop reading (a message
    could otherwise hide words from the index behind one)."""
    return text.casefold().replace("\x00", "\ufffd")


def _trigram_query(needle: str) -> str | None:
    """An FTS5 query for the records whose text holds every trigram of `needle`: a
    superset of those holding `needle`. None when a needle is too short to have one."""
    if len(needle) < 3:
        return None
    grams = sorted({needle[i:i + 3] for i in range(len(needle) - 2)})
    if len(grams) > _MAX_TRIGRAMS:
        step = len(grams) / _MAX_TRIGRAMS
        grams = [grams[int(i * step)] for i in range(_MAX_TRIGRAMS)]
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)
