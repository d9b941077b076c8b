"""Who exchanged what with whom, and how often: the AI-to-AI edges of an audit log.

An edge `source → agent` is an exchange whose request carried the source agent's words,
declared (X-Agent-Source) or found by lineage. The report counts, per edge, the requests,
those blocked, those that carried flagged or tainted words, and when it was first and
last seen; a reviewer reads it to see how content travelled between agents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Edge", "edges"]


@dataclass(slots=True)
class Edge:
    source: str
    agent: str
    requests: int = 0
    blocked: int = 0
    flagged: int = 0  # requests that carried words from a flagged or tainted output
    first: str = ""
    last: str = ""
    example: str = ""  # an exchange id, to look up with `audit show`


def edges(records: Iterable[dict[str, Any]]) -> list[Edge]:
    """The edges in `records`, busiest first."""
    found: dict[tuple[str, str], Edge] = {}
    for record in records:
        if record.get("direction") != "request" or "messages" not in record:
            continue  # exchange records of requests only: events and responses say nothing new
        source, agent = record.get("source"), record.get("agent")
        if not source or not agent or source == agent:
            continue
        edge = found.setdefault((source, agent), Edge(source, agent, example=str(record.get("exchange", ""))))
        edge.requests += 1
        edge.blocked += record.get("action") == "block"
        provenance = record.get("provenance") or {}
        edge.flagged += bool(provenance.get("flagged") or provenance.get("tainted"))
        moment = str(record.get("ts", ""))
        edge.first = min(edge.first, moment) if edge.first else moment
        edge.last = max(edge.last, moment)
    return sorted(found.values(), key=lambda e: (-e.requests, e.source, e.agent))
