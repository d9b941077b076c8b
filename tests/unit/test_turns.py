"""Earlier turns remembered by id (firewall/agents/turns.py), on the memory backend."""

from __future__ import annotations

from firewall.agents.state import MemoryState
from firewall.agents.turns import Recalled, TurnMemory, as_forwarded, in_body, streamed_messages
from firewall.model import EARLIER, EMBEDDED_JSON, Message, Part, PartKind, Rewrite, ToolCall


def _conversation() -> tuple[Message, ...]:
    return (
        Message("system", (Part("Be brief.", ("instructions",)),)),
        Message("user", (Part("key sk-live-1 please", ("input", 0, "content")),)),
        Message("assistant", (Part("prod", ("input", 1, "arguments", EMBEDDED_JSON, "env"), PartKind.TOOL_ARGUMENTS),),
                (ToolCall("call_1", "deploy", {"env": "prod"}),)),
        Message("tool", (Part("done", ("input", 2, "output"), PartKind.TOOL_RESULT),), tool_call_id="call_1"),
    )


async def test_a_turn_is_recalled_with_every_part_marked_earlier() -> None:
    memory = TurnMemory(MemoryState())
    await memory.remember("openai_responses", ("resp_1", "conv_1"), _conversation(), after=None, agent="planner", ttl=60)
    for turn_id in ("resp_1", "conv_1"):
        recalled = await memory.recall("openai_responses", turn_id)
        assert recalled.seen and recalled.agent == "planner" and recalled.id == turn_id and recalled.turns == ("resp_1",)
        assert [(m.role, m.text, m.tool_call_id) for m in recalled.messages] == [
            (m.role, m.text, m.tool_call_id) for m in _conversation()]
        assert [p.kind for m in recalled.messages for p in m.parts] == [p.kind for m in _conversation() for p in m.parts]
        assert all(p.path[0] is EARLIER for m in recalled.messages for p in m.parts)
        assert [(c.id, c.name) for c in recalled.messages[2].tool_calls] == [("call_1", "deploy")]
    assert recalled.audit() == {"continues": "conv_1", "seen": True, "earlier_messages": 4, "agent": "planner"}


def _turn(n: int) -> tuple[Message, ...]:
    return (Message("user", (Part(f"question {n}", ("input",)),)), Message("assistant", (Part(f"answer {n}", ()),)))


async def _chain(memory: TurnMemory, turns: int, *, ttl: float = 60, conversation: str | None = None) -> Recalled | None:
    """`turns` turns, each continuing the one before; the last one recalled."""
    before: Recalled | None = None
    for n in range(turns):
        ids = (f"resp_{n}",) if conversation is None else (f"resp_{n}", conversation)
        await memory.remember("w", ids, _turn(n), after=before, agent="a", ttl=ttl)
        before = await memory.recall("w", ids[-1])
    return before


async def test_each_turn_is_stored_once_and_a_recall_follows_the_chain() -> None:
    state = MemoryState()
    recalled = await _chain(TurnMemory(state), 40)  # more turns than one batch of reads
    assert recalled is not None and recalled.turns == tuple(f"resp_{n}" for n in reversed(range(40)))
    assert [m.text for m in recalled.messages] == [text for n in range(40) for text in (f"question {n}", f"answer {n}")]
    assert not recalled.truncated and recalled.expired == 0
    # Storage grows with the turns, not with their square: each holds its own messages.
    sizes = [len(await state.get(f"turns:w:resp_{n}") or b"") for n in (1, 39)]
    assert sizes[1] - sizes[0] < 38 * 12 + 100  # the longer chain of ids, and nothing more


async def test_a_conversation_id_names_its_newest_turn() -> None:
    memory = TurnMemory(MemoryState())
    recalled = await _chain(memory, 3, conversation="conv_1")
    assert recalled is not None and recalled.id == "conv_1" and recalled.turns == ("resp_2", "resp_1", "resp_0")
    assert [m.text for m in recalled.messages][-2:] == ["question 2", "answer 2"]


async def test_an_unknown_or_expired_turn_is_said_so() -> None:
    now = [0.0]
    memory = TurnMemory(MemoryState(clock=lambda: now[0]))
    await memory.remember("openai_responses", ("resp_1",), _conversation(), after=None, agent=None, ttl=10)
    now[0] = 11.0
    recalled = await memory.recall("openai_responses", "resp_1")
    assert recalled == Recalled("resp_1", (), seen=False)
    assert recalled.audit()["seen"] is False and "unknown previous turn resp_1" in recalled.audit()["note"]
    assert not (await memory.recall("anthropic_messages", "resp_1")).seen  # ids are per wire format


async def test_an_expired_earlier_turn_is_counted_and_the_rest_recalled() -> None:
    now = [0.0]
    memory = TurnMemory(MemoryState(clock=lambda: now[0]))
    first = await _chain(memory, 1, ttl=5)
    await memory.remember("w", ("resp_1",), _turn(1), after=first, agent="a", ttl=60)
    now[0] = 6.0
    recalled = await memory.recall("w", "resp_1")
    assert [m.text for m in recalled.messages] == ["question 1", "answer 1"]
    assert recalled.expired == 1 and recalled.audit()["expired_turns"] == 1


async def test_a_long_conversation_keeps_its_newest_messages() -> None:
    memory = TurnMemory(MemoryState(), max_chars=30)
    recalled = await _chain(memory, 5)
    assert recalled is not None and [m.text for m in recalled.messages] == ["answer 3", "question 4", "answer 4"]
    assert recalled.truncated and recalled.audit()["truncated"] is True
    await memory.remember("w", ("big",), (Message("user", (Part("x" * 100, ("input",)),)),), after=None, agent=None,
                          ttl=60)
    assert len((await memory.recall("w", "big")).messages) == 1  # the newest message is kept whatever its size


def test_no_rewrite_targets_an_earlier_part() -> None:
    rewrites = (Rewrite((EARLIER, 0, 0), "x"), Rewrite(("input", 0, "content"), "y"))
    assert in_body(rewrites) == (rewrites[1],)


def test_forwarded_messages_carry_their_redactions() -> None:
    out = as_forwarded(_conversation(), (Rewrite(("input", 0, "content"), "key [KEY] please"),))
    assert out[1].text == "key [KEY] please" and out[1].parts[0].path == ("input", 0, "content")
    assert out[2] == _conversation()[2]
    assert as_forwarded(_conversation(), ()) == _conversation()


def test_a_streamed_answer_is_one_message_per_channel() -> None:
    said = streamed_messages({"output.0.content.0.text": "Hi", "output.1.arguments": '{"a": 1}'},
                             [{"channel": ("output", 1, "arguments"), "id": "call_1", "name": "save"}])
    assert [(m.role, m.text, m.parts[0].kind, m.tool_calls) for m in said] == [
        ("assistant", "Hi", PartKind.TEXT, ()),
        ("assistant", '{"a": 1}', PartKind.TOOL_ARGUMENTS, (ToolCall("call_1", "save", '{"a": 1}'),)),
    ]


async def test_a_refusal_made_here_resumes_the_turn_the_upstream_knows() -> None:
    memory = TurnMemory(MemoryState())
    before = await _chain(memory, 2)  # resp_0, resp_1: turns the upstream issued
    await memory.remember_refusal("w", "resp_fw_a", resumes="resp_1", after=before, agent="a", ttl=60)
    refused = await memory.recall("w", "resp_fw_a")
    # Its own messages are not kept: the conversation is what came before it.
    assert refused.answered_here and refused.resumes == "resp_1" and refused.turns == ("resp_fw_a", "resp_1", "resp_0")
    assert [m.text for m in refused.messages] == ["question 0", "answer 0", "question 1", "answer 1"]
    assert refused.audit() == {"continues": "resp_fw_a", "seen": True, "earlier_messages": 4, "agent": "a",
                               "answered_by_firewall": True, "sent_on_as": "resp_1"}
    # A second refusal after the first still resumes the upstream's turn, not the first refusal.
    await memory.remember_refusal("w", "resp_fw_b", resumes="resp_fw_a", after=refused, agent="a", ttl=60)
    again = await memory.recall("w", "resp_fw_b")
    assert again.answered_here and again.resumes == "resp_1"
    # A turn the upstream answered after a refusal is an ordinary turn again.
    await memory.remember("w", ("resp_2",), _turn(2), after=again, agent="a", ttl=60)
    after = await memory.recall("w", "resp_2")
    assert not after.answered_here and after.resumes is None
    assert after.turns == ("resp_2", "resp_fw_b", "resp_fw_a", "resp_1", "resp_0")


async def test_a_refused_first_turn_resumes_nothing() -> None:
    memory = TurnMemory(MemoryState())
    await memory.remember_refusal("w", "resp_fw_a", resumes=None, after=None, agent="a", ttl=60)
    refused = await memory.recall("w", "resp_fw_a")
    assert refused.answered_here and refused.resumes is None and refused.messages == ()
    assert refused.audit()["sent_on_as"] is None
