"""What a reviewer asks of an audit log: who exchanged what with whom and how often (the
AI-to-AI edges), what each agent did (stats), and where an exchange's words came from
(trace), and a drawing of it all (graph).

An edge `source → agent` is an exchange whose request carried the source agent's words,
declared (X-Agent-Source) or found by lineage. The report counts, per edge, the requests,
those blocked, those that carried flagged or tainted words, and when it was first and
last seen; a reviewer reads it to see how content travelled between agents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from firewall.audit.reader import rule_ids

__all__ = ["AgentStats", "Edge", "edges", "graph", "stats", "trace"]


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


@dataclass(slots=True)
class AgentStats:
    agent: str
    requests: int = 0
    responses: int = 0
    blocked: int = 0  # exchanges of this agent (either direction) a rule or the guard blocked
    rules: dict[str, int] = field(default_factory=dict)  # rule -> times it fired on this agent's exchanges

    @property
    def block_rate(self) -> float:
        return self.blocked / max(1, self.requests)


def stats(records: Iterable[dict[str, Any]]) -> tuple[list[AgentStats], dict[str, int]]:
    """Per agent: requests, answers, blocks and the rules that fired; and every rule's
    count. Busiest agents first, rules by count."""
    agents: dict[str, AgentStats] = {}
    rules: dict[str, int] = {}
    for record in records:
        direction = record.get("direction")
        if direction not in ("request", "response"):
            continue  # agent events (lineage, quarantine, drift) are counted by `edges` and `show`
        agent = record.get("agent") or "-"
        entry = agents.setdefault(agent, AgentStats(agent))
        if direction == "request":
            entry.requests += 1
        else:
            entry.responses += 1
        entry.blocked += record.get("action") == "block"
        for rule in rule_ids(record):
            entry.rules[rule] = entry.rules.get(rule, 0) + 1
            rules[rule] = rules.get(rule, 0) + 1
    ordered = sorted(agents.values(), key=lambda a: (-a.requests, a.agent))
    return ordered, dict(sorted(rules.items(), key=lambda item: (-item[1], item[0])))


def trace(records: Iterable[dict[str, Any]], exchange: str, depth: int = 8) -> list[tuple[int, dict[str, Any]]]:
    """The records of `exchange`, then, for each lineage edge into it, the records of the
    exchange whose answer it carried, and so on back (at most `depth` steps): who said
    what first, and how it travelled. Each record comes with its step (0: `exchange`)."""
    by_exchange: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_exchange.setdefault(str(record.get("exchange", "")), []).append(record)
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    frontier = [exchange]
    for step in range(depth + 1):
        following: list[str] = []
        for current in frontier:
            if current in seen:
                continue
            seen.add(current)
            for record in by_exchange.get(current, []):
                out.append((step, record))
                if record.get("event") == "lineage" and record.get("source_exchange"):
                    following.append(str(record["source_exchange"]))
        if not following:
            break
        frontier = following
    return out


def graph(records: Iterable[dict[str, Any]]) -> str:
    """The agents and who passed words to whom, as Graphviz DOT: an edge per source →
    agent with its counts, red where something was blocked; an agent whose last state
    in the log is quarantine drawn filled."""
    records = list(records)
    found = edges(records)
    agents: set[str] = set()
    state: dict[str, str] = {}
    for record in records:
        if record.get("agent"):
            agents.add(str(record["agent"]))
        if record.get("event") == "quarantine" and record.get("agent"):
            state[str(record["agent"])] = str(record.get("to"))
    for edge in found:
        agents.update((edge.source, edge.agent))
    lines = ["digraph agents {", "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for agent in sorted(agents):
        quarantined = state.get(agent) == "quarantine"
        style = ', style="rounded,filled", fillcolor="#f4cccc"' if quarantined else ""
        label = _dot(agent) + ("\\n(quarantined)" if quarantined else "")  # \n: a line break in DOT
        lines.append(f'  "{_dot(agent)}" [label="{label}"{style}];')
    for edge in found:
        label = f"{edge.requests} req" + (f", {edge.blocked} blocked" if edge.blocked else "") + (
            f", {edge.flagged} flagged" if edge.flagged else "")
        colour = ', color="#cc0000", fontcolor="#cc0000"' if edge.blocked or edge.flagged else ""
        lines.append(f'  "{_dot(edge.source)}" -> "{_dot(edge.agent)}" [label="{label}"{colour}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
