"""Lineage: whose words a request carries.

Every response is fingerprinted under the agent that produced it. When a later request
from another agent holds enough of a recorded response, `match` names that response, how
much of it came along (containment) and where it sits in the request (spans in the
request's original text). The guard turns that into an edge `source agent → agent` and
the `source.*` and `hops` that rules see.

What a fingerprint is made of:

- Words. The text is normalised as for detection (`firewall.normalize`: NFKC, invisibles,
  accents, confusables, spaced letters, leetspeak) and split into runs of letters and
  digits; each word is casefolded and hashed with blake2b (8 bytes, remembered: a
  conversation resends the same words every turn), so no hash depends on Python's salted
  `hash()` and every process and replica computes the same values.
- Shingles: every run of `shingle` consecutive words (4 by default), hashed by mixing its
  words' hashes in order (a fixed 64-bit multiply-add, vectorised). Spans are found again
  from shingle positions when a match reports them.

The index. A recorded response is stored whole (`lineage:rec:<agent>:<exchange_id>`, with
its shingle set: at most `max_shingles_stored` of the smallest hashes, a uniform sample),
and one shingle in `sample` (3 by default) is a bucket key: those whose hash is 0 modulo
`sample`. The choice depends on the shingle alone, not on the words around it, so a quote
of a response, wherever it sits in a longer request and whatever surrounds it, holds the
same sampled shingles as the response over the words it shares with it: the request's
own sampled shingles find every response it quotes, with no alignment to get right. A
quote of n shingles holds none of the sampled ones with probability
(1 - 1/sample)^n: 2.6% for a 12-word quote, 0.03% for 20 words. Each changed word removes
the `shingle` shingles that contain it, and with them the sampled ones among them.

Recording a response stores its record and adds its id to the bucket of each of its
sampled shingles (`index_add`), all for `ttl` seconds: a 150-word response touches about
50 buckets. The memory state also forgets the oldest records beyond `memory_records`
(20,000), each with its bucket entries, so a long-running process does not grow with
every answer of the last day; Redis keeps them all for `ttl`. A bucket that would hold more than `bucket_limit` records holds only the
state's `COMMON` mark from then on (until it expires): its shingle is a stock phrase ("let
me know if you"), which says nothing about whose words these are, and reading it on every
lookup would cost more with every record. An agent could make a shingle common on purpose
by repeating it `bucket_limit` times; it then hides only that shingle, and containment is
still measured over all the others.

Matching a request fingerprints it the same way, reads the buckets of its sampled
shingles in one `index_members` call, ranks the records found by how many buckets they
share with the request (an agent's own records are left out: an agent repeating itself is
not an edge; copies of one text recorded by many agents take turns with other texts), and
reads at most `candidates` of them. Each candidate is then verified exactly: the shared
shingles between the request and the record's stored set; containment = shared / stored.
A match needs containment >= `min_similarity` and at least `min_shared_shingles` shared.
The work is bounded by the request's length and `candidates`, never by how many records
there are.

How well it finds what it should: `benchmarks/lineage_recall.py` records a response among
others, hides it (verbatim, or with words changed or inserted) at a random place in up to
600 words of other text, and counts how often `match` names it; 300 placements a case.
With the defaults, and (in brackets) with the windowed MinHash index this one replaced,
which also cost about twice as much per record:

    60 words verbatim, with 3 or 5 words changed or inserted    100%, 100%, 100%  (100%, 100%, 99.7%)
    30 words with 2 words changed or inserted                    100%              (99.7%)
    20 words verbatim, with 1 word changed or inserted           100%, 99.7%       (100%, 97.7%)
    12 words verbatim                                            97.7%             (86.0%)

A request that quotes a small part of a long response does not match: containment is
measured against the whole response.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import itertools
import re
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from firewall.agents.state import COMMON, StateBackend, StateUnavailable
from firewall.normalize import Normalized, normalize

__all__ = ["Fingerprint", "LineageIndex", "LineageMatch", "LineageRecord", "LineageSpec", "fingerprint", "record_id"]

_RECORD = "lineage:rec:"
_BUCKET = "lineage:sh:"
_FORMAT = 1  # the layout of a stored record
# Settings of the windowed MinHash index this one replaced: a clear error, not "extra input".
_REMOVED = ("permutations", "bands", "window", "stride")


class LineageSpec(BaseModel):
    """The policy's `lineage:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    shingle: int = Field(4, ge=1, le=16)  # words per shingle
    sample: int = Field(3, ge=1, le=64)  # one shingle in `sample` is a bucket key: see the module doc
    bucket_limit: int = Field(64, ge=1)  # records a bucket holds before its shingle counts as a stock phrase
    min_similarity: float = Field(0.3, gt=0, le=1)  # containment: shared / the record's shingles
    min_shared_shingles: int = Field(3, ge=1)
    ttl: float = Field(86400, gt=0)  # seconds a response is remembered
    # Responses the memory state remembers at most, the oldest forgotten first: its memory
    # stays bounded (about 15 KB a 150-word response). Redis keeps every one for `ttl`.
    memory_records: int = Field(20_000, ge=1)
    min_words: int = Field(8, ge=1)  # shorter responses are too little to attribute
    max_shingles_stored: int = Field(4096, ge=1)
    candidates: int = Field(16, ge=1)  # records read and verified per match, the most bucket hits first

    @model_validator(mode="before")
    @classmethod
    def _not_removed(cls, data: Any) -> Any:
        removed = [name for name in _REMOVED if isinstance(data, dict) and name in data]
        if removed:
            raise ValueError(f"lineage.{', lineage.'.join(removed)}: no longer settings: the index samples shingles "
                             "instead of banding MinHash signatures; remove them (lineage.sample sets how many "
                             "shingles are indexed)")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LineageSpec:
        if self.min_words < self.shingle:
            raise ValueError(f"lineage.min_words ({self.min_words}) must be at least lineage.shingle ({self.shingle}): "
                             "a fingerprint needs one whole shingle")
        return self


# --- hashing ----------------------------------------------------------------------------

_MIX = np.uint64(0x9E3779B97F4A7C15)


def _blake2b64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _shingles(word_hashes: np.ndarray, size: int) -> np.ndarray:
    """The hash of every run of `size` consecutive words: w0*M^(size-1) + ... + w(size-1),
    modulo 2^64, computed in place over shifted views. The words' hashes are blake2b's, so
    their order-sensitive sum is spread over all 64 bits already: no finaliser is needed
    for sampling by the hash or for intersecting sets of them."""
    count = len(word_hashes) - size + 1
    h = word_hashes[:count].copy()
    for j in range(1, size):
        h *= _MIX
        h += word_hashes[j:j + count]
    return h


# --- words ------------------------------------------------------------------------------

# Runs of characters for which str.isalnum() holds: \w is exactly those and "_" (the
# tests check every code point).
_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD_CHAR = np.array([chr(c).isalnum() for c in range(128)] + [False], dtype=bool)
_WORD_CACHE = 1 << 16


class _WordHashes(dict[str, int]):
    """word -> its 64-bit hash. A conversation resends the same words every turn, so most
    lookups hit; a plain dict with __missing__ is read at C speed by map()."""

    def __missing__(self, word: str) -> int:
        if len(self) >= _WORD_CACHE:
            self.clear()  # bounded; refilling costs one blake2b per word
        value = self[word] = _blake2b64(word.casefold().encode())
        return value


_word_hashes = _WordHashes()


def _word_runs(text: str) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each run of letters and digits in `text` (the words `_WORD` finds)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    is_word = _ASCII_WORD_CHAR[np.minimum(codes, 128)]
    if not text.isascii():
        high = np.flatnonzero(codes >= 128)
        unique, inverse = np.unique(codes[high], return_inverse=True)
        is_word[high] = np.array([chr(c).isalnum() for c in unique.tolist()], dtype=bool)[inverse]
    edges = np.diff(is_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


# --- fingerprints -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False, slots=True)
class Fingerprint:
    """The shingles of one text.

    `shingles[i]` is the hash of the shingle that starts at word i; `spans` maps shingle
    positions back to the original text.
    """

    shingles: np.ndarray  # (n,) uint64, in text order
    shingle: int  # words per shingle
    normalized: Normalized = field(repr=False)

    def bucket_keys(self, sample: int) -> list[str]:
        """The index's bucket keys for this text: one per distinct shingle whose hash is 0
        modulo `sample`."""
        return _bucket_keys(np.unique(self.shingles), sample)

    def spans(self, positions: np.ndarray | Sequence[int] | None = None) -> list[tuple[int, int]]:
        """The merged [start, end) spans, in the original text, of the shingles at
        `positions` (a boolean mask over `shingles`, or indices; all when None). Shingles
        whose words overlap or follow each other merge into one span."""
        if positions is None:
            index = np.arange(len(self.shingles))
        else:
            positions = np.asarray(positions)
            index = np.flatnonzero(positions) if positions.dtype == bool else np.unique(positions)
        if not len(index):
            return []
        # Word offsets only now: most fingerprints never report a span.
        word_starts, word_ends = _word_runs(self.normalized.text)
        first = index[np.r_[True, index[1:] > index[:-1] + self.shingle]]
        last = index[np.r_[index[1:] > index[:-1] + self.shingle, True]]
        starts = word_starts[first].tolist()
        ends = word_ends[last + self.shingle - 1].tolist()
        return [self.normalized.to_original(start, end) for start, end in zip(starts, ends)]


def _bucket_keys(distinct: np.ndarray, sample: int) -> list[str]:
    """The bucket keys of `distinct` shingle hashes (no repeats) that are 0 modulo `sample`."""
    chosen = distinct[distinct % np.uint64(sample) == 0] if sample > 1 else distinct
    digits = chosen.astype(">u8").tobytes().hex()
    return [_BUCKET + digits[i:i + 16] for i in range(0, len(digits), 16)]


def fingerprint(text: str, spec: LineageSpec) -> Fingerprint | None:
    """The fingerprint of `text`, or None when it has fewer than `spec.min_words` words."""
    return _fingerprint(text, spec, spec.min_words)


def _fingerprint(text: str, spec: LineageSpec, min_words: int) -> Fingerprint | None:
    normalized = normalize(text, max_depth=0)
    words = _WORD.findall(normalized.text)
    if len(words) < max(min_words, spec.shingle):
        return None
    word_hashes = np.fromiter(map(_word_hashes.__getitem__, words), dtype=np.uint64, count=len(words))
    return Fingerprint(_shingles(word_hashes, spec.shingle), spec.shingle, normalized)


# --- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineageRecord:
    """One agent's recorded response, as the index remembers it."""

    agent: str
    exchange_id: str
    flagged: bool = False  # the response crossed a rule
    tainted: bool = False  # it carries flagged or quarantined content
    hops: int = 0  # agents the content passed through before this one
    path: tuple[str, ...] = ()  # those agents, oldest first, ending with `agent`
    created: float = 0.0  # unix time
    shingles: tuple[int, ...] = field(default=(), repr=False)  # sorted; at most max_shingles_stored

    @property
    def id(self) -> str:
        return record_id(self.agent, self.exchange_id)

    def to_json(self, packed: bytes | None = None) -> bytes:
        """`packed`: the shingles as little-endian uint64 bytes, when the caller has them."""
        if packed is None:
            packed = np.asarray(self.shingles, dtype="<u8").tobytes()
        return orjson.dumps({
            "format": _FORMAT, "agent": self.agent, "exchange_id": self.exchange_id, "flagged": self.flagged,
            "tainted": self.tainted, "hops": self.hops, "path": list(self.path), "created": self.created,
            "shingles": base64.b64encode(packed).decode("ascii"),
        })

    @classmethod
    def from_json(cls, data: bytes) -> LineageRecord:
        """Raises ValueError, saying what is wrong, for anything `to_json` did not write."""
        fields, shingles = _parse(data)
        return cls(**fields, shingles=tuple(shingles.tolist()))


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "agent": str, "exchange_id": str, "flagged": bool, "tainted": bool, "hops": int, "created": (int, float),
}


def _parse(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    """A stored record's fields (without shingles) and its shingles as an array."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error})") from error
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise ValueError(f"not a lineage record of format {_FORMAT}")
    fields: dict[str, Any] = {}
    for name, kind in _FIELD_TYPES.items():
        value = raw.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ValueError(f"{name!r} is {value!r}")
        fields[name] = value
    fields["created"] = float(fields["created"])
    path = raw.get("path")
    if not isinstance(path, list) or not all(isinstance(agent, str) for agent in path):
        raise ValueError(f"'path' is {path!r}")
    fields["path"] = tuple(path)
    try:
        packed = base64.b64decode(raw.get("shingles", ""), validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise ValueError(f"'shingles' is not base64 ({error})") from error
    if len(packed) % 8:
        raise ValueError(f"'shingles' holds {len(packed)} bytes, not a whole number of 8-byte hashes")
    return fields, np.frombuffer(packed, dtype="<u8").astype(np.uint64)


def record_id(agent: str, exchange_id: str) -> str:
    """`<agent>:<exchange_id>`. An agent id may hold ':', an exchange id may not, so the
    agent is everything before the last ':'."""
    if not agent:
        raise ValueError("lineage needs the agent that produced the response: got an empty agent id")
    if not exchange_id or ":" in exchange_id:
        raise ValueError(f"invalid exchange id {exchange_id!r}: it must be non-empty and hold no ':' "
                         "(the record id <agent>:<exchange_id> is split at its last ':')")
    return f"{agent}:{exchange_id}"


def _agent_of(member: str) -> str:
    return member.rpartition(":")[0]


@dataclass(frozen=True, slots=True)
class LineageMatch:
    """A recorded response found in a request."""

    record: LineageRecord
    containment: float  # shared / the record's stored shingles
    shared: int  # shingles of the record found in the request
    spans: tuple[tuple[int, int], ...]  # where, in the request's original text (merged, in order)


# --- the index --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A response waiting to be recorded (see `LineageIndex.defer`)."""

    agent: str
    exchange_id: str
    text: str
    flagged: bool
    tainted: bool
    hops: int
    path: tuple[str, ...] | None


# Per state backend, not per index: a reloaded policy builds a new index, and it must
# record what the one before it queued before it looks anything up.
_QUEUES: weakref.WeakKeyDictionary[StateBackend, list[_Deferred]] = weakref.WeakKeyDictionary()


class LineageIndex:
    """Records responses and finds them again in other agents' requests, in a state
    backend shared by every firewall process that uses it."""

    def __init__(self, state: StateBackend, spec: LineageSpec, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.spec = spec
        self._clock = clock
        # A request can hold a whole response in as few words as make min_shared_shingles.
        self._query_min_words = spec.shingle + spec.min_shared_shingles - 1
        self._deferred = _QUEUES.setdefault(state, [])

    def defer(self, agent: str, exchange_id: str, text: str, *, flagged: bool = False, tainted: bool = False,
              hops: int = 0, path: tuple[str, ...] | None = None) -> None:
        """`record`, later: by `flush`, and in any case before the next `match` on this
        state backend in this process. So an answer can be released before it is
        fingerprinted, and still no request this process sees afterwards can miss it. Only
        for a state that this process alone reads (`state.shared` False): another process
        would look before the record exists."""
        if self.state.shared:
            raise ValueError(f"lineage records cannot be deferred on a shared state backend ({self.state.name}): "
                             "another process could look them up before they are written")
        record_id(agent, exchange_id)  # a bad id is the caller's error now, not the flush's
        self._deferred.append(_Deferred(agent, exchange_id, text, flagged, tainted, hops, path))

    @property
    def deferred(self) -> int:
        """Responses waiting to be recorded."""
        return len(self._deferred)

    async def flush(self) -> None:
        """Record every deferred response, oldest first."""
        queue = self._deferred
        while queue:
            item = queue[0]
            try:
                await self.record(item.agent, item.exchange_id, item.text, flagged=item.flagged,
                                  tainted=item.tainted, hops=item.hops, path=item.path)
            finally:  # off the queue once written (or failed: one bad record must not block the rest)
                if queue and queue[0] is item:
                    queue.pop(0)

    async def record(self, agent: str, exchange_id: str, text: str, *, flagged: bool = False, tainted: bool = False,
                     hops: int = 0, path: tuple[str, ...] | None = None) -> LineageRecord | None:
        """Remember `text` as what `agent` answered in `exchange_id`; None (nothing stored)
        when it has fewer than `min_words` words. `path` defaults to `(agent,)`."""
        member = record_id(agent, exchange_id)
        found = fingerprint(text, self.spec)
        if found is None:
            return None
        distinct = np.unique(found.shingles)
        stored = distinct[:self.spec.max_shingles_stored]
        record = LineageRecord(agent, exchange_id, flagged, tainted, hops, (agent,) if path is None else tuple(path),
                               self._clock(), tuple(stored.tolist()))
        # The record before its buckets: a reader that finds the id finds the record.
        await self.state.set(_RECORD + member, record.to_json(stored.astype("<u8").tobytes()), ttl=self.spec.ttl)
        await self.state.index_add(_bucket_keys(distinct, self.spec.sample), member, ttl=self.spec.ttl,
                                   limit=self.spec.bucket_limit, attached=(_RECORD + member,),
                                   max_members=self.spec.memory_records)
        return record

    async def match(self, agent: str, text: str) -> list[LineageMatch]:
        """Other agents' recorded responses that `text` carries, the most contained first,
        each at most once."""
        if self._deferred:
            await self.flush()
        spec = self.spec
        found = _fingerprint(text, spec, self._query_min_words)
        if found is None:
            return []
        query = np.unique(found.shingles)
        buckets = await self.state.index_members(_bucket_keys(query, spec.sample))
        candidates = _candidates(buckets, agent, spec.candidates)
        values = await self.state.get_many([_RECORD + member for member in candidates])
        matches: list[LineageMatch] = []
        for member, value in zip(candidates, values):
            if value is None:
                continue  # expired or deleted; its buckets can outlive it
            fields, stored = _read(member, value)
            if fields["agent"] == agent or not len(stored):
                continue
            shared = int(np.count_nonzero(_contains(query, stored)))
            containment = shared / len(stored)
            if shared < spec.min_shared_shingles or containment < spec.min_similarity:
                continue
            record = LineageRecord(**fields, shingles=tuple(stored.tolist()))
            spans = found.spans(_contains(np.sort(stored), found.shingles))
            matches.append(LineageMatch(record, containment, shared, tuple(spans)))
        matches.sort(key=lambda m: (-m.containment, -m.shared, m.record.id))
        return matches

    async def mark(self, record_id: str, *, flagged: bool | None = None, tainted: bool | None = None) -> LineageRecord | None:
        """Change what is known of a recorded response (found flagged later, or its agent
        quarantined); it keeps its expiry. The updated record, or None when it is gone.
        Two marks of one record at the same moment can lose one of the changes: the
        backend offers no compare-and-set."""
        if self._deferred:
            await self.flush()
        key = _RECORD + record_id
        value = await self.state.get(key)
        if value is None:
            return None
        fields, stored = _read(record_id, value)
        left = fields["created"] + self.spec.ttl - self._clock()
        if left <= 0:
            return None
        record = LineageRecord(**fields, shingles=tuple(stored.tolist()))
        changes = {name: new for name, new in (("flagged", flagged), ("tainted", tainted)) if new is not None}
        record = dataclasses.replace(record, **changes)
        await self.state.set(key, record.to_json(), ttl=left)
        return record


def _candidates(buckets: dict[str, set[str]], agent: str, limit: int) -> list[str]:
    """At most `limit` record ids from `buckets`, not `agent`'s own, the most buckets hit
    first. Records that hit exactly the same buckets (one text said by several agents)
    take turns with the others, so that a text many agents repeat cannot crowd out the
    rest."""
    hit: dict[str, list[str]] = {}
    for key, members in buckets.items():
        if COMMON in members:
            continue  # a stock phrase: see the module doc
        for member in members:
            if _agent_of(member) != agent:
                hit.setdefault(member, []).append(key)
    alike: dict[tuple[str, ...], list[str]] = {}
    for member, keys in hit.items():
        alike.setdefault(tuple(keys), []).append(member)
    ranked = sorted((-len(keys), sorted(members)) for keys, members in alike.items())
    chosen: list[str] = []
    for turn in itertools.zip_longest(*(members for _, members in ranked)):
        chosen.extend(member for member in turn if member is not None)
        if len(chosen) >= limit:
            break
    return chosen[:limit]


def _read(member: str, value: bytes) -> tuple[dict[str, Any], np.ndarray]:
    try:
        return _parse(value)
    except ValueError as error:
        raise StateUnavailable(f"lineage record {_RECORD + member!r} cannot be read: {error}") from error


def _contains(sorted_values: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """For each of `probes`, whether it is in `sorted_values` (sorted, non-empty)."""
    at = np.searchsorted(sorted_values, probes)
    np.minimum(at, len(sorted_values) - 1, out=at)
    return sorted_values[at] == probes
