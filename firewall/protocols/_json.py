"""Strict JSON parsing for request and response bodies: duplicate keys are refused.

Parsers disagree on `{"role": "user", "role": "system"}`: most keep the last value, some
the first. A firewall that reads one value while the upstream reads the other can be
walked past, so a body with a duplicate key in any object is refused outright.

orjson parses; duplicates are then ruled out by counting. Every object member in the raw
bytes is one `"key"` followed by `:` (after optional whitespace), and a `":` inside a
string needs an escaped quote. So the number of unescaped `"` + `:` sequences is the
number of members written, and it equals the total size of the parsed objects exactly when
no key was repeated. Only when the counts differ does the slow path re-parse with
`json.loads(object_pairs_hook=...)` to find the path of the first duplicate.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

__all__ = ["DuplicateKeyError", "NestingTooDeepError", "loads_strict"]

_KEY_COLON = b'":'
_ESCAPED_QUOTE = b'\\"'
_SPACED_COLON = re.compile(rb'"[ \t\r\n]+:')
# An unescaped quote (preceded by an even run of backslashes), optional whitespace, ':'.
_MEMBER = re.compile(rb'(\\*)"[ \t\r\n]*:')
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A JSON string, escapes included (the unrolled form: no backtracking on long strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key; `path` is the JSONPath of the repeated member."""

    def __init__(self, path: str) -> None:
        super().__init__(f"duplicate key in JSON object at {path}")
        self.path = path


def loads_strict(raw: bytes | bytearray | memoryview | str, *, max_depth: int | None = None) -> Any:
    """Parse JSON like `orjson.loads`, but raise DuplicateKeyError for a repeated key, and
    NestingTooDeepError for arrays and objects nested deeper than `max_depth`.

    Invalid JSON raises `orjson.JSONDecodeError` (a ValueError), as `orjson.loads` does.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    # orjson parses at most 1,024 levels deep, in C without recursion into Python, so the
    # depth is checked on what it parsed (one walk with the members' count); a body it
    # refuses is checked from its bytes, so that too deep is said as such.
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        if max_depth is not None:
            _check_depth(data, max_depth)
        raise
    members, depth = _parsed_shape(value)
    if max_depth is not None and depth > max_depth:
        raise NestingTooDeepError(depth, max_depth)
    if _count_members(data) == members:
        return value
    path = _first_duplicate(data)
    if path is not None:
        raise DuplicateKeyError(path)
    return value  # unreachable for valid JSON; kept so a miscount never rejects a body


def _count_members(data: bytes) -> int:
    # A one-byte search first: most bodies hold no backslash at all.
    if (b"\\" not in data or _ESCAPED_QUOTE not in data) and _SPACED_COLON.search(data) is None:
        return data.count(_KEY_COLON)
    return sum(len(m.group(1)) % 2 == 0 for m in _MEMBER.finditer(data))


def _parsed_shape(value: Any) -> tuple[int, int]:
    """The members of every object in `value`, and how deep its arrays and objects nest."""
    try:
        return _shape_recursive(value)
    except RecursionError:  # orjson nests deeper than Python's default recursion limit
        return _shape_iterative(value)


def _shape_recursive(item: Any) -> tuple[int, int]:
    # Recursion with exact type checks: about twice as fast as an explicit stack here.
    kind = type(item)
    if kind is dict:
        total = len(item)
        children = item.values()
    elif kind is list:
        total = 0
        children = item
    else:
        return 0, 0
    deepest = 0
    for child in children:
        child_kind = type(child)
        if child_kind is dict or child_kind is list:
            members, depth = _shape_recursive(child)
            total += members
            if depth > deepest:
                deepest = depth
    return total, deepest + 1


def _shape_iterative(value: Any) -> tuple[int, int]:
    total = 0
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            total += len(item)
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return total, deepest


class NestingTooDeepError(ValueError):
    """A JSON value nests arrays and objects deeper than allowed."""

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(f"JSON nested {depth} levels deep (the limit is {limit})")
        self.depth = depth
        self.limit = limit


def _check_depth(data: bytes, limit: int) -> None:
    """Refuse nesting deeper than `limit` from the bytes alone: brackets are counted
    outside strings, without recursion."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return  # fewer openers than the limit: cannot nest deeper
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if not brackets:
        return
    depth = int(np.cumsum(_BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int64).max())
    if depth > limit:
        raise NestingTooDeepError(depth, limit)


class _Pairs(list[tuple[str, Any]]):
    """An object as its members in order, duplicates kept."""


def _first_duplicate(data: bytes) -> str | None:
    try:
        return _find(json.loads(data, object_pairs_hook=_Pairs), "$")
    except RecursionError:
        raise ValueError("JSON nested too deeply to check it for duplicate keys") from None


def _find(node: Any, path: str) -> str | None:
    # Depth-first in document order, so the first duplicate reported is the first written.
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            member = _member_path(path, key)
            if key in seen:
                return member
            seen.add(key)
            found = _find(value, member)
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _find(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _member_path(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
