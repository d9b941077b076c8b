"""Parsed messages, remembered: an agent resends its whole history on every turn, and
parsing it again is most of what a request costs once its verdicts are cached."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import orjson

from firewall.model import Message

_LIMIT: Final = 16_384


class MessageMemo:
    """Message objects by (position, the message's JSON), or by (position, role, text) for
    a message of those two strings only. A message at the same position with the same JSON
    parses to the same Message, paths included."""

    def __init__(self, limit: int = _LIMIT) -> None:
        self._limit = limit
        self._memo: dict[tuple[Any, ...], Message] = {}
        self._lock = threading.Lock()

    def parse(self, index: int, raw: Any, parse: Callable[[], Message]) -> Message:
        key: tuple[Any, ...] | None = None
        if type(raw) is dict and len(raw) == 2:
            # The commonest message, {"role": ..., "content": "..."}, keyed by its two
            # strings: what it parses to depends on nothing else, and no serialising.
            role, content = raw.get("role"), raw.get("content")
            if type(role) is str and type(content) is str:
                key = (index, role, content)
        if key is None:
            try:
                key = (index, orjson.dumps(raw))
            except TypeError:  # not JSON-serialisable: it will fail to parse anyway
                return parse()
        found = self._memo.get(key)
        if found is not None:
            return found
        message = parse()  # a shape error raises here and nothing is remembered
        with self._lock:
            if len(self._memo) >= self._limit:
                for stale in list(self._memo)[: self._limit // 8]:
                    del self._memo[stale]
            self._memo[key] = message
        return message
