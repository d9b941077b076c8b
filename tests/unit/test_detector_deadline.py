"""A local model's batch is bounded by its `timeout`: past it the detector raises, and the
engine applies `on_error`."""

from __future__ import annotations

import threading

import pytest

from firewall.detectors import DetectorError
from firewall.detectors.deadline import Deadline, timeout_option


def test_a_batch_within_its_timeout_returns_its_result():
    assert Deadline("model", 30).run(lambda texts: [len(t) for t in texts], ["ab", "c"]) == [2, 1]


def test_a_wedged_batch_raises_and_batches_behind_it_are_given_up_too():
    wedged = threading.Event()
    deadline = Deadline("model", 0.2)
    with pytest.raises(DetectorError, match="model gave no scores within its timeout of 0.2 s"):
        deadline.run(wedged.wait)
    ran = threading.Event()
    with pytest.raises(DetectorError):
        deadline.run(ran.set)  # queued behind the wedged batch: never run
    wedged.set()
    assert deadline.run(lambda: "free again") == "free again"
    assert not ran.is_set()


def test_an_error_in_the_batch_is_raised_as_it_is():
    def broken() -> None:
        raise RuntimeError("native library failed")

    with pytest.raises(RuntimeError, match="native library failed"):
        Deadline("model", 30).run(broken)


@pytest.mark.parametrize("value", [0, -1, 601, "5", True])
def test_a_timeout_option_out_of_range_is_refused_clearly(value):
    with pytest.raises(ValueError, match=r"semantic: timeout must be a number of seconds in \(0, 600\]"):
        timeout_option("semantic", {"timeout": value})


def test_no_timeout_option_means_unbounded():
    assert timeout_option("semantic", {}) is None
    assert timeout_option("semantic", {"timeout": 2}) == 2.0
