"""Per-agent drift: is this agent scoring higher than it used to?

Each agent is compared with its own past, not with a global threshold: the first
`min_samples` observations of a metric form the agent's baseline (mean and spread, by
Welford's method), and after that every observation is tested against it, by CUSUM on
standardised deviations or by a z-score on an EWMA. Only upward drift alerts: what
matters is an agent becoming more toxic or getting blocked more often, not less.

`update` is the pure step; `DriftMonitor` keeps one `DriftStats` per agent and metric in
the state backend (`drift:<agent>:<metric>`), so every replica feeds the same baseline.
A `DriftAlert` is written to the audit log and can trigger quarantine (the caller decides).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, field_validator

from firewall.agents.state import StateBackend

__all__ = ["VIOLATIONS", "DriftAlert", "DriftMonitor", "DriftSpec", "DriftStats", "drift_key", "update"]

VIOLATIONS = "violations"  # the special metric: 1.0 when the exchange was blocked, else 0.0

_METRIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")

log = logging.getLogger("firewall.agents.drift")


class DriftSpec(BaseModel):
    """The policy's `drift:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: list[str] = [VIOLATIONS]
    min_samples: int = 30
    alpha: float = 0.1
    method: Literal["cusum", "zscore"] = "cusum"
    k: float = 0.5
    h: float = 5.0
    z: float = 4.0
    # Scores and the violation rate live in [0, 1]: below 0.2, one blocked exchange after a
    # clean baseline (a step of 1.0) would be a drift on its own; at 0.2 it takes two.
    min_std: float = 0.2
    cooldown: int = 20

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"drift needs at least one metric: a score name such as 'toxicity' or 'semantic:harm', or {VIOLATIONS!r}")
        for name in value:
            if not name or not set(name) <= _METRIC_CHARS:
                raise ValueError(f"invalid metric name {name!r}: use letters, digits and _ . : - (a score name or {VIOLATIONS!r})")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"metric {repeated[0]!r} is listed twice")
        return value

    @field_validator("min_samples")
    @classmethod
    def _min_samples(cls, value: int) -> int:
        if value < 5:
            raise ValueError(f"min_samples must be at least 5, got {value}: a smaller baseline has no meaningful spread")
        return value

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"alpha is the EWMA weight of the newest observation and must be in (0, 1], got {value}")
        return value

    @field_validator("k", "cooldown")
    @classmethod
    def _not_negative(cls, value: float, info: Any) -> float:
        if value < 0:
            raise ValueError(f"{info.field_name} must be 0 or more, got {value}")
        return value

    @field_validator("h", "z", "min_std")
    @classmethod
    def _positive(cls, value: float, info: Any) -> float:
        if not (value > 0 and math.isfinite(value)):
            why = {
                "h": "the CUSUM decision threshold",
                "z": "the z-score threshold",
                "min_std": "the floor on the baseline spread, so a flat baseline does not make every change infinite",
            }[info.field_name]
            raise ValueError(f"{info.field_name} must be a finite number above 0 ({why}), got {value}")
        return value


@dataclass(frozen=True, slots=True)
class DriftStats:
    """One agent's running statistics for one metric. `ewma` is None while the baseline
    is being built; once set, the baseline (`baseline_n`, `mean`, `m2`) is frozen, even if
    a reloaded policy changes `min_samples` (a new value applies to new baselines)."""

    n: int = 0  # observations seen, baseline included
    baseline_n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # Welford's sum of squared deviations from the mean
    ewma: float | None = None
    cusum: float = 0.0
    since_alert: int | None = None  # observations since the last alert; None before the first

    @property
    def building(self) -> bool:
        return self.ewma is None

    @property
    def std(self) -> float:
        """The baseline's sample standard deviation (no floor)."""
        return math.sqrt(self.m2 / (self.baseline_n - 1)) if self.baseline_n > 1 else 0.0

    def to_json(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies, and this runs twice per exchange.
        return orjson.dumps({name: getattr(self, name) for name in _STATS_FIELDS})

    @classmethod
    def from_json(cls, data: bytes) -> DriftStats:
        """Parse what `to_json` wrote; a ValueError for anything else."""
        raw = orjson.loads(data)
        names = _STATS_FIELDS
        if not isinstance(raw, dict) or sorted(raw) != sorted(names):
            raise ValueError(f"drift stats must be an object with exactly the keys {', '.join(names)}")
        for name in ("n", "baseline_n"):
            _check_count(raw, name)
        if raw["since_alert"] is not None:
            _check_count(raw, "since_alert")
        for name in ("mean", "m2", "cusum"):
            _check_number(raw, name)
        if raw["ewma"] is not None:
            _check_number(raw, "ewma")
        if raw["baseline_n"] > raw["n"] or raw["m2"] < 0 or raw["cusum"] < 0:
            raise ValueError("drift stats are inconsistent (baseline_n > n, or a negative m2 or cusum)")
        for name in ("mean", "m2", "cusum", "ewma"):
            if raw[name] is not None:
                raw[name] = float(raw[name])  # JSON may spell 0.0 as 0
        return cls(**raw)


_STATS_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(DriftStats))


def _check_count(raw: dict[str, Any], name: str) -> None:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"drift stats field {name!r} must be a count, got {value!r}")


def _check_number(raw: dict[str, Any], name: str) -> None:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"drift stats field {name!r} must be a finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class DriftAlert:
    metric: str
    method: str
    value: float  # the observation that raised the alert
    baseline_mean: float
    baseline_std: float  # after the min_std floor: the spread the statistic was measured in
    statistic: float  # the CUSUM sum, or the EWMA's z-score
    threshold: float  # h, or z
    n: int  # observations of this metric so far, this one included

    def as_record(self) -> dict[str, Any]:
        """The alert's part of an audit record; the caller adds the agent and the policy."""
        return {
            "event": "drift",
            "metric": self.metric,
            "method": self.method,
            "value": round(self.value, 6),
            "baseline": {"mean": round(self.baseline_mean, 6), "std": round(self.baseline_std, 6)},
            "statistic": round(self.statistic, 6),
            "threshold": self.threshold,
            "n": self.n,
        }


def update(
    stats: DriftStats | None, value: float, spec: DriftSpec, *, metric: str = ""
) -> tuple[DriftStats, DriftAlert | None]:
    """One observation: the new statistics, and an alert when this observation shows the
    metric has drifted up from the baseline (and the last alert is over `cooldown` ago)."""
    if not math.isfinite(value):
        raise ValueError(f"drift metric {metric or '?'}: observation {value!r} is not a finite number")
    stats = stats or DriftStats()
    n = stats.n + 1
    if stats.ewma is None:
        baseline_n = stats.baseline_n + 1
        delta = value - stats.mean
        mean = stats.mean + delta / baseline_n
        m2 = stats.m2 + delta * (value - mean)
        ewma = mean if baseline_n >= spec.min_samples else None  # the EWMA chart starts on target
        return DriftStats(n=n, baseline_n=baseline_n, mean=mean, m2=m2, ewma=ewma), None

    mu, sigma = stats.mean, max(stats.std, spec.min_std)
    ewma = spec.alpha * value + (1.0 - spec.alpha) * stats.ewma
    cusum = stats.cusum
    if spec.method == "cusum":
        cusum = max(0.0, cusum + (value - mu) / sigma - spec.k)
        statistic, threshold = cusum, spec.h
        crossed = cusum > spec.h
        if crossed:
            cusum = 0.0  # restart the chart whether or not the cooldown lets the alert out
    else:
        statistic = (ewma - mu) / (sigma * math.sqrt(spec.alpha / (2.0 - spec.alpha)))
        threshold = spec.z
        crossed = statistic > spec.z
    since_alert = None if stats.since_alert is None else stats.since_alert + 1
    alert = None
    if crossed and (since_alert is None or since_alert > spec.cooldown):
        alert = DriftAlert(metric=metric, method=spec.method, value=value, baseline_mean=mu, baseline_std=sigma,
                           statistic=statistic, threshold=threshold, n=n)
        since_alert = 0
    new = dataclasses.replace(stats, n=n, ewma=ewma, cusum=cusum, since_alert=since_alert)
    return new, alert


def drift_key(agent: str, metric: str) -> str:
    return f"drift:{agent}:{metric}"


_WRITTEN_LIMIT = 65_536  # (agent, metric) pairs whose last write is remembered


class DriftMonitor:
    """Feeds each inspected exchange's scores into its agent's drift statistics."""

    def __init__(self, state: StateBackend, spec: DriftSpec) -> None:
        self.state = state
        self.spec = spec
        # key -> (the bytes this monitor last wrote there, what they say). A process-local
        # state hands back the very object written, so it need not be parsed again; any
        # other value (another replica wrote since, or a network backend) is parsed.
        self._written: dict[str, tuple[bytes, DriftStats]] = {}

    async def observe(self, agent: str, scores: Mapping[str, float], violated: bool,
                      measured: Collection[str] | None = None) -> list[DriftAlert]:
        """Record one exchange of `agent`: a metric absent from `scores` counts as 0.0
        (the detector found nothing). With `measured`, only those metrics (and
        `violations`, which every exchange measures) are observed. `StateUnavailable`
        propagates: the caller applies the policy's `on_error`."""
        metrics = [m for m in self.spec.metrics if measured is None or m == VIOLATIONS or m in measured]
        values = {metric: self._value(metric, scores, violated) for metric in metrics}
        bad = {metric: value for metric, value in values.items() if not math.isfinite(value)}
        if bad:  # checked before any write, so one bad score leaves every metric untouched
            metric, value = next(iter(bad.items()))
            raise ValueError(f"drift metric {metric!r} of agent {agent!r}: score {value!r} is not a finite number")
        alerts: list[DriftAlert] = []
        for metric, value in values.items():
            key = drift_key(agent, metric)
            # Read, update, write: two replicas observing the same agent at once may drop
            # one sample. A baseline of dozens of samples tolerates that; a lock or a
            # server-side script per observation would cost more than it protects.
            data = await self.state.get(key)
            written = self._written.get(key)
            stats = written[1] if written is not None and written[0] is data else self._parse(key, data)
            stats, alert = update(stats, value, self.spec, metric=metric)
            payload = stats.to_json()
            await self.state.set(key, payload)
            if len(self._written) >= _WRITTEN_LIMIT:
                self._written.clear()
            self._written[key] = (payload, stats)
            if alert is not None:
                alerts.append(alert)
        return alerts

    @staticmethod
    def _value(metric: str, scores: Mapping[str, float], violated: bool) -> float:
        if metric == VIOLATIONS:
            return 1.0 if violated else 0.0
        return float(scores.get(metric, 0.0))

    @staticmethod
    def _parse(key: str, data: bytes | None) -> DriftStats | None:
        if data is None:
            return None
        try:
            return DriftStats.from_json(data)
        except (ValueError, TypeError) as error:
            log.warning("drift stats at %r are unreadable (%s): starting a new baseline", key, error)
            return None
