"""Graceful shutdown: the requests in flight, and how they end when the firewall stops.

On SIGTERM the listener stops accepting connections, the requests and streams in flight
go on to their natural end for up to a deadline, and those still running then are cut
off: each handler is cancelled with `CUT_OFF` as the message, so that it can tell this
cancellation from any other and end its answer in the provider's terms (a stream with an
error event, a request with a provider-shaped 503) and record it, rather than drop the
connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["CUT_OFF", "Drain"]

CUT_OFF = "agent-firewall: drain deadline passed"
# After the cut-off, the time a handler has to write its last event and its audit record.
_LAST_WORDS_SECONDS = 5.0


class Drain:
    """Tracks the handler tasks in flight; `finish` waits for them, then cuts off the rest."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.draining = False  # no new request is taken
        self.cutting = False  # the deadline passed: handlers in flight are being cancelled

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def enter(self) -> asyncio.Task[Any] | None:
        """Count the current task (a request's handler) as in flight until `leave(task)`.
        Not aiohttp's `request.task`: that is the connection's task, which outlives the
        request (a keep-alive connection's next request), and would keep `finish` waiting."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._tasks.discard(task)

    def is_cut_off(self, error: asyncio.CancelledError) -> bool:
        """Whether `error` is this drain's cut-off (not a client gone, nor a server stop)."""
        return self.cutting and bool(error.args) and error.args[0] == CUT_OFF

    async def finish(self, seconds: float) -> int:
        """Take no new request; wait up to `seconds` for those in flight, then cut off the
        rest and give them a moment to end their answers. Returns how many were cut off."""
        self.draining = True
        deadline = time.monotonic() + seconds
        while self._tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left, return_when=asyncio.FIRST_COMPLETED)
        remaining = set(self._tasks)
        if not remaining:
            return 0
        self.cutting = True
        for task in remaining:
            task.cancel(CUT_OFF)
        await asyncio.wait(remaining, timeout=_LAST_WORDS_SECONDS)
        return len(remaining)
