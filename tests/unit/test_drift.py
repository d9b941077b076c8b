"""Per-agent drift: an agent scoring above its own baseline alerts, a steady one does not."""

from __future__ import annotations

import logging
import random

import pytest
from pydantic import ValidationError

from firewall.agents.drift import DriftAlert, DriftMonitor, DriftSpec, DriftStats, drift_key, update
from firewall.agents.state import MemoryState, StateUnavailable

METHODS = ["cusum", "zscore"]


def _run(values: list[float], spec: DriftSpec) -> tuple[DriftStats, list[tuple[int, DriftAlert]]]:
    """Feed `values` through `update`; the final stats and each alert with its index."""
    stats: DriftStats | None = None
    alerts: list[tuple[int, DriftAlert]] = []
    for index, value in enumerate(values):
        stats, alert = update(stats, value, spec, metric="toxicity")
        if alert is not None:
            alerts.append((index, alert))
    assert stats is not None
    return stats, alerts


def _flat(rng: random.Random, count: int, mean: float = 0.1, std: float = 0.02) -> list[float]:
    return [rng.gauss(mean, std) for _ in range(count)]


@pytest.mark.parametrize("method", METHODS)
def test_a_flat_agent_raises_no_alert(method: str) -> None:
    stats, alerts = _run(_flat(random.Random(0), 500), DriftSpec(min_std=0.05, method=method))
    assert alerts == []
    assert stats.n == 500 and stats.baseline_n == 30


@pytest.mark.parametrize("method", METHODS)
def test_a_climbing_agent_alerts_soon_after_the_ramp_starts(method: str) -> None:
    rng = random.Random(0)
    ramp_start = 60  # 30 for the baseline, then 30 flat observations compared with it
    values = _flat(rng, ramp_start)
    values += [0.1 + 0.5 * step / 100 + rng.gauss(0, 0.02) for step in range(100)]  # 0.1 -> 0.6
    values += _flat(rng, 100, mean=0.6)
    _, alerts = _run(values, DriftSpec(min_std=0.05, method=method))
    assert alerts, "the climb was not detected"
    first, alert = alerts[0]
    assert ramp_start <= first < ramp_start + 30
    assert alert.metric == "toxicity" and alert.method == method
    assert alert.statistic > alert.threshold
    assert alert.baseline_mean == pytest.approx(0.1, abs=0.01)
    assert alert.n == first + 1


@pytest.mark.parametrize("method", METHODS)
async def test_an_agent_blocked_half_the_time_after_a_clean_baseline_alerts(method: str) -> None:
    monitor = DriftMonitor(MemoryState(), DriftSpec(min_std=0.05, method=method))
    rng = random.Random(0)
    for _ in range(40):
        assert await monitor.observe("planner", {}, violated=False) == []
    alerts: list[DriftAlert] = []
    for _ in range(20):
        alerts += await monitor.observe("planner", {}, violated=rng.random() < 0.5)
    assert [alert.metric for alert in alerts][:1] == ["violations"]
    assert alerts[0].value == 1.0 and alerts[0].baseline_mean == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_no_alert_while_the_baseline_is_built_whatever_the_values(method: str) -> None:
    spec = DriftSpec(min_std=0.05, method=method, min_samples=30)
    values = [0.0] * 10 + [1.0] * 10 + [0.0, 1.0] * 4 + [1.0]
    stats, alerts = _run(values, spec)
    assert len(values) == 29 and alerts == []
    assert stats.building and stats.ewma is None
    stats, alert = update(stats, 1.0, spec)
    assert alert is None and not stats.building
    assert stats.ewma == pytest.approx(stats.mean)  # the EWMA starts on the baseline mean


def test_the_baseline_is_frozen_once_complete() -> None:
    spec = DriftSpec(min_std=0.05, min_samples=5)
    stats, _ = _run([0.1, 0.2, 0.1, 0.2, 0.1], spec)
    frozen = (stats.baseline_n, stats.mean, stats.m2)
    for value in (0.15, 0.12, 0.9):
        stats, _ = update(stats, value, spec)
    assert (stats.baseline_n, stats.mean, stats.m2) == frozen
    assert stats.n == 8
    assert stats.std == pytest.approx(0.0547722, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_cooldown_suppresses_repeated_alerts(method: str) -> None:
    baseline = _flat(random.Random(0), 30)
    _, alerts = _run(baseline + [0.9] * 200, DriftSpec(min_std=0.05, method=method, cooldown=20))
    indexes = [index for index, _ in alerts]
    assert indexes[0] == 30
    assert all(later - earlier > 20 for earlier, later in zip(indexes, indexes[1:]))
    assert len(indexes) > 1  # a drift that persists is reported again after the cooldown
    _, uncooled = _run(baseline + [0.9] * 200, DriftSpec(min_std=0.05, method=method, cooldown=0))
    assert len(uncooled) > len(alerts)


@pytest.mark.parametrize("method", METHODS)
def test_the_min_std_floor_ignores_a_small_bump_on_a_constant_baseline(method: str) -> None:
    spec = DriftSpec(min_std=0.05, method=method)
    constant, _ = _run([0.1] * 30, spec)
    assert constant.std == 0.0
    stats, alerts = constant, []
    for _ in range(200):
        stats, alert = update(stats, 0.11, spec)
        alerts.append(alert)
    assert alerts == [None] * 200
    stats, jump, steps = constant, None, 0
    while jump is None and steps < 10:
        stats, jump = update(stats, 0.5, spec)
        steps += 1
    assert jump is not None
    assert steps == (1 if method == "cusum" else 2)  # the EWMA moves 0.4 * alpha a step
    assert jump.baseline_std == 0.05


def test_stats_round_trip_through_json() -> None:
    stats, _ = _run(_flat(random.Random(0), 45), DriftSpec(min_std=0.05))
    stats, _ = update(stats, 0.9, DriftSpec(min_std=0.05), metric="toxicity")
    assert DriftStats.from_json(stats.to_json()) == stats
    assert stats.since_alert == 0 and stats.ewma is not None
    assert DriftStats.from_json(DriftStats().to_json()) == DriftStats()


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2]",
        b'{"n": 1}',
        b'{"n": "3", "baseline_n": 3, "mean": 0, "m2": 0, "ewma": null, "cusum": 0, "since_alert": null}',
        b'{"n": 3, "baseline_n": 3, "mean": 0, "m2": -1, "ewma": null, "cusum": 0, "since_alert": null}',
        b'{"n": 3, "baseline_n": 4, "mean": 0, "m2": 0, "ewma": null, "cusum": 0, "since_alert": null}',
        b'{"n": true, "baseline_n": 0, "mean": 0, "m2": 0, "ewma": null, "cusum": 0, "since_alert": null}',
        b'{"n": 3, "baseline_n": 3, "mean": 1e400, "m2": 0, "ewma": null, "cusum": 0, "since_alert": null}',
        b'{"n": 3, "baseline_n": 3, "mean": 0, "m2": 0, "ewma": "x", "cusum": 0, "since_alert": null, "extra": 1}',
    ],
)
def test_from_json_refuses_what_to_json_did_not_write(data: bytes) -> None:
    with pytest.raises(ValueError):
        DriftStats.from_json(data)


async def test_corrupted_stored_stats_reset_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    state = MemoryState()
    monitor = DriftMonitor(state, DriftSpec(min_std=0.05, metrics=["toxicity"]))
    await state.set(drift_key("planner", "toxicity"), b'{"n": 12, "mean": ')
    with caplog.at_level(logging.WARNING, logger="firewall.agents.drift"):
        assert await monitor.observe("planner", {"toxicity": 0.2}, violated=False) == []
    assert "drift:planner:toxicity" in caplog.text and "new baseline" in caplog.text
    stored = await state.get(drift_key("planner", "toxicity"))
    assert stored is not None
    assert DriftStats.from_json(stored) == DriftStats(n=1, baseline_n=1, mean=0.2, m2=0.0)


async def test_a_metric_absent_from_the_scores_counts_as_zero() -> None:
    state = MemoryState()
    monitor = DriftMonitor(state, DriftSpec(min_std=0.05, metrics=["toxicity", "semantic:harm", "violations"], min_samples=5))
    for _ in range(5):
        await monitor.observe("planner", {"toxicity": 0.3}, violated=False)
    harm = DriftStats.from_json(await state.get("drift:planner:semantic:harm") or b"")
    toxicity = DriftStats.from_json(await state.get("drift:planner:toxicity") or b"")
    assert harm.mean == 0.0 and harm.n == 5
    assert toxicity.mean == pytest.approx(0.3)
    alerts = await monitor.observe("planner", {"semantic:harm": 0.9}, violated=True)
    assert [alert.metric for alert in alerts] == ["semantic:harm", "violations"]


async def test_two_agents_are_independent() -> None:
    monitor = DriftMonitor(MemoryState(), DriftSpec(min_std=0.05, metrics=["toxicity"]))
    rng = random.Random(0)
    for value in _flat(rng, 30):
        await monitor.observe("planner", {"toxicity": value}, violated=False)
    for value in _flat(rng, 30, mean=0.7):
        await monitor.observe("executor", {"toxicity": value}, violated=False)
    # 0.7 is the executor's normal and far above the planner's.
    assert await monitor.observe("executor", {"toxicity": 0.7}, violated=False) == []
    alerts = await monitor.observe("planner", {"toxicity": 0.7}, violated=False)
    assert [alert.metric for alert in alerts] == ["toxicity"]


async def test_what_another_writer_stored_since_is_read_not_what_this_monitor_last_wrote() -> None:
    # Two monitors on one state stand for two policies (a reload) or two replicas.
    state = MemoryState()
    spec = DriftSpec(min_std=0.05, metrics=["toxicity"])
    first, second = DriftMonitor(state, spec), DriftMonitor(state, spec)
    await first.observe("planner", {"toxicity": 0.1}, violated=False)
    await second.observe("planner", {"toxicity": 0.3}, violated=False)
    await first.observe("planner", {"toxicity": 0.5}, violated=False)
    stats = DriftStats.from_json(await state.get(drift_key("planner", "toxicity")) or b"")
    assert (stats.n, stats.mean) == (3, pytest.approx(0.3))
    await state.set(drift_key("planner", "toxicity"), DriftStats(n=40, baseline_n=40, mean=0.2, ewma=0.2).to_json())
    await first.observe("planner", {"toxicity": 0.2}, violated=False)
    assert DriftStats.from_json(await state.get(drift_key("planner", "toxicity")) or b"").n == 41


async def test_a_non_finite_score_is_refused_before_anything_is_written() -> None:
    state = MemoryState()
    monitor = DriftMonitor(state, DriftSpec(min_std=0.05, metrics=["toxicity", "semantic:harm"]))
    with pytest.raises(ValueError, match="'semantic:harm' of agent 'planner'.*not a finite number"):
        await monitor.observe("planner", {"toxicity": 0.1, "semantic:harm": float("nan")}, violated=False)
    assert await state.keys("drift:") == []
    with pytest.raises(ValueError, match="not a finite number"):
        update(None, float("inf"), DriftSpec(min_std=0.05))


class _Down(MemoryState):
    """A backend that cannot be reached (no Redis in unit tests)."""

    async def get(self, key: str) -> bytes | None:
        raise StateUnavailable("connection refused")


async def test_an_unreachable_backend_propagates() -> None:
    with pytest.raises(StateUnavailable):
        await DriftMonitor(_Down(), DriftSpec(min_std=0.05)).observe("planner", {}, violated=True)


def test_the_alert_record_is_plain_json_data() -> None:
    _, alerts = _run([0.1] * 30 + [0.9], DriftSpec(min_std=0.05))
    record = alerts[0][1].as_record()
    assert record == {
        "event": "drift",
        "metric": "toxicity",
        "method": "cusum",
        "value": 0.9,
        "baseline": {"mean": 0.1, "std": 0.05},
        "statistic": pytest.approx(15.5),
        "threshold": 5.0,
        "n": 31,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metrics", [], "at least one metric"),
        ("metrics", ["toxicity", "toxicity"], "'toxicity' is listed twice"),
        ("metrics", ["tox icity"], "invalid metric name 'tox icity'"),
        ("min_samples", 4, "min_samples must be at least 5"),
        ("alpha", 0.0, "alpha is the EWMA weight"),
        ("alpha", 1.5, "must be in \\(0, 1\\]"),
        ("k", -0.1, "k must be 0 or more"),
        ("cooldown", -1, "cooldown must be 0 or more"),
        ("h", 0.0, "h must be a finite number above 0"),
        ("z", -1.0, "z must be a finite number above 0"),
        ("min_std", 0.0, "min_std must be a finite number above 0"),
        ("method", "ewma", "'cusum' or 'zscore'"),
        ("threshold", 3, "Extra inputs are not permitted"),
    ],
)
def test_spec_validation_errors_are_clear(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        DriftSpec.model_validate({field: value})
    assert caught.value.errors()[0]["loc"][0] == field


def test_spec_defaults() -> None:
    spec = DriftSpec()
    assert spec.metrics == ["violations"] and spec.method == "cusum" and spec.min_samples == 30
    assert DriftSpec(alpha=1.0, cooldown=0, k=0.0).alpha == 1.0


def test_the_default_floor_lets_one_blocked_exchange_pass_and_catches_a_run_of_them() -> None:
    spec = DriftSpec(min_samples=10)  # the default min_std, for scores and rates in [0, 1]
    _, one = _run([0.0] * 10 + [1.0] + [0.0] * 20, spec)
    _, run = _run([0.0] * 10 + [1.0, 1.0], spec)
    assert one == [] and len(run) == 1
