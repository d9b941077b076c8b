"""Lineage: whose words a request carries.

Every response is fingerprinted under the agent that produced it. When a later request
from another agent holds enough of a recorded response, `match` names that response, how
much of it came along (containment) and where it sits in the request (spans in the
request's original text). The guard turns that into an edge `source agent → agent` and
the `source.*` and `hops` that rules see.

What a fingerprint is made of:

- Words. The text is normalised as for detection (`firewall.normalize`: NFKC, invisibles,
  accents, confusables, spaced letters, leetspeak), split into runs of letters and digits,
  and each word casefolded. Each word keeps its span, mapped back through the
  normalisation, so spans are reported in the characters the sender wrote.
- Shingles: every run of `shingle` consecutive words. A word is hashed with blake2b (8
  bytes, cached: a conversation resends the same words every turn), and a shingle's hash
  mixes its words' hashes in order (a fixed 64-bit multiply-add and the splitmix64
  finaliser, vectorised), so neither depends on Python's salted `hash()`.
- MinHash over windows. Whole-text MinHash estimates the Jaccard similarity of two texts,
  but the case that matters is containment: agent B's request (its history plus a new
  message) is far longer than the response of A that it quotes, so their Jaccard is small
  even when B carries all of A. So each text is cut into windows of `window` shingles
  every `stride` shingles (defaults 32 and 16: a window spans 35 words) and each window
  gets its own MinHash signature: `permutations` universal hashes `(a*x + b) mod p` with p
  the Mersenne prime 2^31 - 1 and a, b derived from blake2b of fixed labels, so every
  process and every replica computes the same values. A quoted response and the request
  windows that cover it now have comparable sizes, and so a high Jaccard.
- LSH bands. A window's signature is cut into `bands` bands of `permutations // bands`
  rows; each band hashes to a bucket key `lineage:band:<band>:<hex>`. Two windows of
  Jaccard s share at least one bucket with probability 1 - (1 - s^rows)^bands. The
  defaults, 16 bands of 2 rows (32 permutations), give 0.78 at s = 0.3, 0.99 at s = 0.5
  and 0.999 at s = 0.6. Rows of 4 (64 permutations), the usual choice for whole-text
  similarity, give 0.89 at s = 0.6 but 0.34 at s = 0.4: too low for the diluted windows a
  short or reworded quote leaves. The cost of 2 rows is more false candidates (a window
  pair of Jaccard 0.1 shares a bucket 15% of the time); verification rejects them, the
  candidate cap bounds them, and on 1,000 Python docstrings they were 13 records read per
  query against 8 with rows of 4, for the same number of bucket keys.

Recording a response stores its record (`lineage:rec:<agent>:<exchange_id>`, with its
shingle set, at most `max_shingles_stored` of the smallest hashes: a uniform sample) and
adds the record id to the bucket of every band of its windows (`index_add`), all for
`ttl` seconds. A response indexes only the windows that do not overlap (every `window`
shingles, and the last): a request's windows, `stride` apart, still come within
`stride // 2` shingles of one of them, and in the simulation below recall did not change
while a 150-word response needed 80 buckets instead of 128.

Matching a request fingerprints it the same way, reads the buckets of all its windows'
band keys in one `index_members` call, ranks the records found by how many buckets they
share with the request (an agent's own records are left out: an agent repeating itself is
not an edge; copies of one text recorded by many agents take turns with other texts), and
reads at most `candidates` of them: one `get` each. Each candidate is then verified
exactly: the shared shingles between the request and the record's stored set;
containment = shared / stored. A match needs containment >= `min_similarity` and at least
`min_shared_shingles` shared. The work is bounded by the request's length and
`candidates`, never by how many records there are.

Why this finds what it should. Windows start at fixed positions, so a quote never lines up
exactly with the windows of its recorded response; but the request's windows are 16
shingles apart, so one of them starts within 8 shingles of each recorded window over the
quote (Jaccard >= 0.6 when both lie inside it), and overlapping windows give further
chances. Changed
words only lower the number of shared shingles (an edit removes at most `shingle` of
them), so a lightly reworded quote still verifies. In a simulation (300 random placements
in up to 600 words of other text, each case), a recorded response was found:

    60 words verbatim, or with 3 or 5 words changed or inserted    100%
    30 words with 2 words changed or inserted                      99%
    20 words verbatim, with 1 word changed                         100%, 98%
    12 words verbatim                                              82%

(rows of 4: 99.3% and 92% for 60 words with 3 and 5 edits, 63% for 30 words with 2, 79%
and 41% for 20 words, 19% for 12). Short responses are the weak case: their one window is
diluted by the request's other words. A request that quotes a small part of a long
response does not match at all: containment is measured against the whole response.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import itertools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from firewall.agents.state import StateBackend, StateUnavailable
from firewall.normalize import Normalized, normalize

__all__ = ["Fingerprint", "LineageIndex", "LineageMatch", "LineageRecord", "LineageSpec", "fingerprint", "record_id"]

_RECORD = "lineage:rec:"
_BAND = "lineage:band:"
_FORMAT = 1  # the layout of a stored record


class LineageSpec(BaseModel):
    """The policy's `lineage:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    shingle: int = Field(4, ge=1, le=16)  # words per shingle
    permutations: int = Field(32, ge=1, le=1024)  # 16 bands of 2 rows: see the module doc
    bands: int = Field(16, ge=1)
    window: int = Field(32, ge=1)  # shingles per indexed window
    stride: int = Field(16, ge=1)  # shingles from one window's start to the next
    min_similarity: float = Field(0.3, gt=0, le=1)  # containment: shared / the record's shingles
    min_shared_shingles: int = Field(3, ge=1)
    ttl: float = Field(86400, gt=0)  # seconds a response is remembered
    min_words: int = Field(8, ge=1)  # shorter responses are too little to attribute
    max_shingles_stored: int = Field(4096, ge=1)
    candidates: int = Field(16, ge=1)  # records read and verified per match, the most bucket hits first

    @model_validator(mode="after")
    def _consistent(self) -> LineageSpec:
        if self.permutations % self.bands:
            raise ValueError(f"lineage.permutations ({self.permutations}) must be a multiple of lineage.bands "
                             f"({self.bands}): each band takes permutations // bands rows of the signature")
        if self.window % self.stride:
            raise ValueError(f"lineage.window ({self.window}) must be a multiple of lineage.stride ({self.stride})")
        if self.min_words < self.shingle:
            raise ValueError(f"lineage.min_words ({self.min_words}) must be at least lineage.shingle ({self.shingle}): "
                             "a fingerprint needs one whole shingle")
        return self

    @property
    def rows(self) -> int:
        return self.permutations // self.bands


# --- hashing ----------------------------------------------------------------------------

_PRIME = (1 << 31) - 1
_P = np.uint64(_PRIME)
_SHIFT31 = np.uint64(31)
_TO_31_BITS = np.uint64(33)
_MIX = np.uint64(0x9E3779B97F4A7C15)
# Shingles hashed at once: the (permutations x shingles) array stays small enough to be
# reused by the allocator and to sit in cache (a fresh large array costs more than the arithmetic).
_CHUNK = 512


def _blake2b64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@lru_cache(maxsize=1 << 16)
def _word_hash(word: str) -> int:
    return _blake2b64(word.casefold().encode())


@lru_cache(maxsize=8)
def _universal(permutations: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (a, b) of each permutation: the i-th pair never depends on how many
    there are, nor on numpy's random generators (whose streams may change between
    versions: replicas sharing a Redis must agree)."""
    a = [1 + _blake2b64(f"afw-lineage:a:{i}".encode()) % (_PRIME - 1) for i in range(permutations)]
    b = [_blake2b64(f"afw-lineage:b:{i}".encode()) % _PRIME for i in range(permutations)]
    return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)


def _avalanche(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _combine(columns: np.ndarray) -> np.ndarray:
    """Hash each row of `columns` (..., n) uint64 to one uint64, order-sensitive."""
    h = columns[..., 0].copy()
    for j in range(1, columns.shape[-1]):
        h = h * _MIX + columns[..., j]
    return _avalanche(h)


def _mod_prime(v: np.ndarray) -> np.ndarray:
    """v mod 2^31 - 1 for v < 2^63, in place, with masks and shifts (numpy's % is
    several times slower)."""
    low = v & _P
    v >>= _SHIFT31
    v += low  # < 2^32 + 1
    np.bitwise_and(v, _P, out=low)
    v >>= _SHIFT31
    v += low  # <= 2^31 + 1
    np.subtract(v, _P, out=v, where=v >= _P)
    return v


# --- words ------------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_WORD_CHAR = np.array([chr(c).isalnum() for c in range(128)] + [False], dtype=bool)


def _word_runs(text: str) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each run of letters and digits in `text`."""
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
    """The shingles of one text and the MinHash signature of each of its windows.

    `shingles[i]` is the hash of the shingle that starts at word i; `spans` maps shingle
    positions back to the original text.
    """

    shingles: np.ndarray  # (n,) uint64, in text order
    signatures: np.ndarray  # (windows, permutations) uint64: one MinHash signature per window
    bands: int
    shingle: int  # words per shingle
    normalized: Normalized = field(repr=False)
    word_starts: np.ndarray = field(repr=False)  # offsets of each word in `normalized.text`
    word_ends: np.ndarray = field(repr=False)

    @property
    def signature(self) -> np.ndarray:
        """The MinHash signature of the whole text (the minimum over its windows)."""
        return self.signatures.min(axis=0)

    def band_keys(self, every: int = 1) -> list[str]:
        """The LSH bucket keys of every band of every `every`-th window and the last,
        without repeats."""
        signatures = self.signatures
        if every > 1 and len(signatures) > 1:
            signatures = signatures[sorted({*range(0, len(signatures), every), len(signatures) - 1})]
        windows, permutations = signatures.shape
        rows = permutations // self.bands
        hashes = _combine(signatures.reshape(windows, self.bands, rows))
        digits = hashes.astype(">u8").tobytes().hex()
        prefixes = [f"{_BAND}{band}:" for band in range(self.bands)]
        keys = [prefixes[i % self.bands] + digits[16 * i:16 * i + 16] for i in range(hashes.size)]
        return list(dict.fromkeys(keys))

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
        first = index[np.r_[True, index[1:] > index[:-1] + self.shingle]]
        last = index[np.r_[index[1:] > index[:-1] + self.shingle, True]]
        starts = self.word_starts[first].tolist()
        ends = self.word_ends[last + self.shingle - 1].tolist()
        return [self.normalized.to_original(start, end) for start, end in zip(starts, ends)]


def fingerprint(text: str, spec: LineageSpec) -> Fingerprint | None:
    """The fingerprint of `text`, or None when it has fewer than `spec.min_words` words."""
    return _fingerprint(text, spec, spec.min_words)


def _fingerprint(text: str, spec: LineageSpec, min_words: int) -> Fingerprint | None:
    if not text.isascii() and _SURROGATE.search(text):
        # A lone surrogate (JSON allows "\ud800") cannot be encoded: normalisation would
        # fail on it. One character for one keeps every offset.
        text = _SURROGATE.sub("\ufffd", text)
    normalized = normalize(text, max_depth=0)
    starts, ends = _word_runs(normalized.text)
    if len(starts) < max(min_words, spec.shingle):
        return None
    clean = normalized.text
    words = [clean[start:end] for start, end in zip(starts.tolist(), ends.tolist())]
    word_hashes = np.fromiter(map(_word_hash, words), dtype=np.uint64, count=len(words))
    count = len(words) - spec.shingle + 1
    shingles = _combine(np.stack([word_hashes[j:j + count] for j in range(spec.shingle)], axis=-1))
    signatures = _window_signatures(shingles, spec)
    return Fingerprint(shingles, signatures, spec.bands, spec.shingle, normalized, starts, ends)


def _window_signatures(shingles: np.ndarray, spec: LineageSpec) -> np.ndarray:
    """MinHash of each window: the minimum per permutation over its blocks of `stride`
    shingles (a window is `window // stride` consecutive blocks; the last block may be
    short, and a text shorter than a window is one window)."""
    a, b = _universal(spec.permutations)
    a, b = a[:, None], b[:, None]
    x = (shingles >> _TO_31_BITS)[None, :]  # 31 bits, so that a*x + b < 2^63
    chunk = spec.stride * max(1, _CHUNK // spec.stride)
    blocks = []
    for start in range(0, x.shape[1], chunk):
        values = np.multiply(a, x[:, start:start + chunk])  # (permutations, shingles)
        values += b
        _mod_prime(values)
        blocks.append(np.minimum.reduceat(values, np.arange(0, values.shape[1], spec.stride), axis=1))
    block_minima = np.concatenate(blocks, axis=1).T
    per_window = spec.window // spec.stride
    if len(block_minima) <= per_window:
        return block_minima.min(axis=0, keepdims=True)
    windows = block_minima[:len(block_minima) - per_window + 1].copy()
    for j in range(1, per_window):
        np.minimum(windows, block_minima[j:j + len(windows)], out=windows)
    return windows


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

    def to_json(self) -> bytes:
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


class LineageIndex:
    """Records responses and finds them again in other agents' requests, in a state
    backend shared by every firewall process that uses it."""

    def __init__(self, state: StateBackend, spec: LineageSpec, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.spec = spec
        self._clock = clock
        # A request can hold a whole response in as few words as make min_shared_shingles.
        self._query_min_words = spec.shingle + spec.min_shared_shingles - 1

    async def record(self, agent: str, exchange_id: str, text: str, *, flagged: bool = False, tainted: bool = False,
                     hops: int = 0, path: tuple[str, ...] | None = None) -> LineageRecord | None:
        """Remember `text` as what `agent` answered in `exchange_id`; None (nothing stored)
        when it has fewer than `min_words` words. `path` defaults to `(agent,)`."""
        member = record_id(agent, exchange_id)
        found = fingerprint(text, self.spec)
        if found is None:
            return None
        stored = np.unique(found.shingles)[:self.spec.max_shingles_stored]
        record = LineageRecord(agent, exchange_id, flagged, tainted, hops, (agent,) if path is None else tuple(path),
                               self._clock(), tuple(stored.tolist()))
        # The record before its buckets: a reader that finds the id finds the record.
        await self.state.set(_RECORD + member, record.to_json(), ttl=self.spec.ttl)
        await self.state.index_add(found.band_keys(every=self.spec.window // self.spec.stride), member, ttl=self.spec.ttl)
        return record

    async def match(self, agent: str, text: str) -> list[LineageMatch]:
        """Other agents' recorded responses that `text` carries, the most contained first,
        each at most once."""
        spec = self.spec
        found = _fingerprint(text, spec, self._query_min_words)
        if found is None:
            return []
        buckets = await self.state.index_members(found.band_keys())
        candidates = _candidates(buckets, agent, spec.candidates)
        values = await self.state.get_many([_RECORD + member for member in candidates])
        query = np.unique(found.shingles)
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
