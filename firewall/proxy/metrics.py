"""Prometheus metrics for one firewall, served by the admin API at /metrics.

Each Firewall has its own registry (not the process-wide default), so that two firewalls
in one process, as in the tests, count apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from firewall.model import Decision, Direction

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Detectors run from microseconds (patterns) to tens of milliseconds (an embedding).
_DETECTOR_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_HOLDBACK_BUCKETS = (0, 16, 64, 256, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("agent_firewall_requests", "Answers sent to agents, by route and HTTP status",
                                ["route", "status"], registry=self.registry)
        self.decisions = Counter("agent_firewall_decisions", "Decisions, by direction, action and rule "
                                 "(rule \"-\" when none fired)", ["direction", "action", "rule"], registry=self.registry)
        self.detector_seconds = Histogram("agent_firewall_detector_seconds", "Time a detector took over the new "
                                          "texts of one exchange", ["detector"], buckets=_DETECTOR_BUCKETS,
                                          registry=self.registry)
        self.upstream_seconds = Histogram("agent_firewall_upstream_seconds", "Time to the upstream's response "
                                          "headers", ["provider"], buckets=_UPSTREAM_BUCKETS, registry=self.registry)
        self.holdback_chars = Histogram("agent_firewall_stream_holdback_chars", "The most characters of a stream "
                                        "held back at once", buckets=_HOLDBACK_BUCKETS, registry=self.registry)
        self.quarantined = Gauge("agent_firewall_agents_quarantined", "Agents in quarantine (read at scrape time)",
                                 registry=self.registry)
        self.in_flight = Gauge("agent_firewall_in_flight", "Requests and streams being handled (read at scrape "
                               "time)", registry=self.registry)
        self.draining = Gauge("agent_firewall_draining", "1 while the firewall shuts down and takes no new request",
                              registry=self.registry)
        self.audit_errors = Counter("agent_firewall_audit_write_errors", "Audit records that could not be written",
                                    registry=self.registry)
        self.agent_events = Counter("agent_firewall_agent_events", "What the firewall learnt about agents, by event "
                                    "(lineage, quarantine, drift, protocol)", ["event"], registry=self.registry)

        # Each labelled child once found, by its labels: `labels()` validates and locks on
        # every call, and the proxy counts three or four times per request.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *labels: object) -> Any:
        # Keyed by the label values as given (enums, ints); turned into text once, here.
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*(str(label) for label in labels))
        return child

    def answered(self, route: str, status: int) -> None:
        """An answer sent to an agent."""
        self._child(self.requests, route, status).inc()

    def upstream_answered(self, provider: str, seconds: float) -> None:
        """An upstream's response headers arrived after `seconds`."""
        self._child(self.upstream_seconds, provider).observe(seconds)

    def decided(self, direction: Direction, decision: Decision) -> None:
        rules = decision.rules if decision.findings else ("-",)
        for rule in rules:
            self._child(self.decisions, direction, decision.action, rule).inc()
        for run in decision.detectors:
            if run.texts:
                self._child(self.detector_seconds, run.detector).observe(run.ms / 1000)

    def learnt(self, records: Iterable[dict[str, object]]) -> None:
        for record in records:
            self._child(self.agent_events, str(record.get("event", "other"))).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
