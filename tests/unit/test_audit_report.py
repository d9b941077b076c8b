"""What a reviewer asks of an audit log: AI-to-AI edges, per-agent stats, and traces back
through lineage."""

from __future__ import annotations

from firewall.audit.report import edges, stats, trace


def request(exchange: str, agent: str, *, source: str | None = None, action: str = "allow",
            rules: tuple[str, ...] = (), flagged: bool = False, ts: str = "2026-11-28T10:00:00Z") -> dict:
    record = {"exchange": exchange, "direction": "request", "agent": agent, "source": source, "action": action,
              "messages": 1, "rules": [{"id": rule} for rule in rules], "ts": ts}
    if flagged:
        record["provenance"] = {"agent": source, "flagged": True, "tainted": True}
    return record


def response(exchange: str, agent: str, *, action: str = "allow", rules: tuple[str, ...] = ()) -> dict:
    return {"exchange": exchange, "direction": "response", "agent": agent, "action": action, "messages": 1,
            "rules": [{"id": rule} for rule in rules]}


def lineage(exchange: str, source: str, agent: str, source_exchange: str) -> dict:
    return {"exchange": exchange, "event": "lineage", "source": source, "agent": agent,
            "source_exchange": source_exchange}


LOG = [
    request("e1", "planner"), response("e1", "planner", rules=("harm",)),
    lineage("e2", "planner", "researcher", "e1"),
    request("e2", "researcher", source="planner", action="block", rules=("carries-flagged",), flagged=True,
            ts="2026-11-28T10:01:00Z"),
    request("e3", "researcher", source="planner", ts="2026-11-28T10:02:00Z"), response("e3", "researcher"),
    lineage("e4", "researcher", "executor", "e3"),
    request("e4", "executor", source="researcher"), response("e4", "executor", action="block", rules=("harm",)),
    {"exchange": "admin_1", "event": "quarantine", "agent": "planner", "from": "observe", "to": "quarantine"},
]


def test_edges_count_requests_blocks_and_flagged_words_per_source_and_agent():
    found = {(e.source, e.agent): e for e in edges(LOG)}
    assert set(found) == {("planner", "researcher"), ("researcher", "executor")}
    edge = found[("planner", "researcher")]
    assert (edge.requests, edge.blocked, edge.flagged) == (2, 1, 1)
    assert (edge.first, edge.last, edge.example) == ("2026-11-28T10:01:00Z", "2026-11-28T10:02:00Z", "e2")
    assert edges([request("x", "a", source="a"), request("y", "a")]) == []  # an agent quoting itself is no edge


def test_stats_count_each_agents_exchanges_blocks_and_rules():
    agents, rules = stats(LOG)
    by_name = {a.agent: a for a in agents}
    assert [a.agent for a in agents] == ["researcher", "executor", "planner"]  # busiest first, then by name
    assert (by_name["researcher"].requests, by_name["researcher"].responses, by_name["researcher"].blocked) == (2, 1, 1)
    assert by_name["researcher"].block_rate == 0.5
    assert by_name["executor"].rules == {"harm": 1} and by_name["planner"].rules == {"harm": 1}
    assert rules == {"harm": 2, "carries-flagged": 1}


def test_trace_follows_lineage_back_to_the_first_answer():
    steps = [(step, record["exchange"], record.get("direction") or record["event"]) for step, record in trace(LOG, "e4")]
    assert steps == [(0, "e4", "lineage"), (0, "e4", "request"), (0, "e4", "response"),
                     (1, "e3", "request"), (1, "e3", "response")]
    assert trace(LOG, "nope") == []
    # a loop in the log does not loop the trace
    looped = [lineage("a", "x", "y", "b"), lineage("b", "y", "x", "a")]
    assert [exchange for _, exchange in ((s, r["exchange"]) for s, r in trace(looped, "a"))] == ["a", "b"]
    assert len(trace(LOG, "e4", depth=0)) == 3


def test_query_filters_by_who_when_and_what_was_said():
    from firewall.audit import query

    log = [
        {"exchange": "a", "direction": "request", "agent": "executor", "source": "planner", "ts": "2026-11-28T09:59:59Z",
         "content": [{"role": "user", "parts": [{"text": "Deploy the Canary build", "kind": "text"}]}]},
        {"exchange": "b", "direction": "response", "agent": "planner", "ts": "2026-11-28T10:00:00Z",
         "response": {"text": {"choices.0.message.content": "The canary is healthy."}}},
        {"exchange": "c", "event": "upstream_error", "agent": "planner", "ts": "2026-11-28T11:00:00Z",
         "error": "Canary upstream down"},
        {"exchange": "d", "direction": "request", "agent": "researcher", "ts": "2026-11-28T12:00:00Z"},
    ]

    def ids(**filters) -> list[str]:
        return [record["exchange"] for record in query(log, **filters)]

    assert ids(agent="planner") == ["a", "b", "c"]  # as the speaker, and as the source of a's words
    assert ids(since="2026-11-28T10:00") == ["b", "c", "d"]
    assert ids(since="2026-11-28T10:00", until="2026-11-28T12:00") == ["b", "c"]
    assert ids(text="CANARY") == ["a", "b", "c"]  # messages kept, answers released, errors
    assert ids(text="canary", agent="executor") == ["a"]
