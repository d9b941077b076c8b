"""A bound on how long a local model may take over one batch.

A detector that calls out (the judge) bounds its own round trips. A model computed in
this process (semantic embeddings, detoxify) has no socket to time out: a pathological
input, an overloaded CPU or a wedged native library would hold the request, and every
request behind it, for as long as it likes. `Deadline` runs the batch on a worker thread
of its own and stops waiting after `timeout` seconds: the detector then raises
`DetectorError`, and the engine applies the policy's `on_error` (block by default).

Python cannot stop a thread: a batch given up on runs to its end on the worker. The
worker is single, so batches that arrive meanwhile wait behind it, and are given up on
in turn when it does not finish in time; the model is never asked to run two batches at
once, which neither transformers nor the embedders promise to survive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from firewall.detectors.base import DetectorError

__all__ = ["Deadline", "timeout_option"]

T = TypeVar("T")
_MAX_TIMEOUT = 600.0


class Deadline:
    """Runs calls on one worker thread, waiting at most `timeout` seconds for each."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-deadline")

    def run(self, call: Callable[..., T], *args: Any) -> T:
        future = self._worker.submit(call, *args)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()  # still queued: never run it
            raise DetectorError(f"{self.name} gave no scores within its timeout of {self.timeout:g} s") from None


def timeout_option(detector: str, options: Mapping[str, Any]) -> float | None:
    """The `timeout` option (seconds, in (0, 600]) of a detector's policy settings, or None."""
    value = options.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= _MAX_TIMEOUT:
        raise ValueError(f"{detector}: timeout must be a number of seconds in (0, {_MAX_TIMEOUT:g}], got {value!r}")
    return float(value)
