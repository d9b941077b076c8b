"""Resent history is parsed once; what is remembered is exactly what parsing gives."""

from __future__ import annotations

import pytest

from firewall.protocols import AnthropicMessages, BodyShapeError, OpenAIChat
from firewall.protocols._memo import MessageMemo


def test_the_same_message_at_the_same_position_is_parsed_once():
    memo, calls = MessageMemo(), []

    def parse():
        calls.append(1)
        return object()

    first = memo.parse(0, {"role": "user", "content": "hi"}, parse)
    assert memo.parse(0, {"role": "user", "content": "hi"}, parse) is first
    assert memo.parse(1, {"role": "user", "content": "hi"}, parse) is not first  # another position, other paths
    assert memo.parse(0, {"role": "user", "content": "hi!"}, parse) is not first
    assert len(calls) == 3


def test_a_message_with_more_than_role_and_text_is_not_taken_for_one_without():
    memo = MessageMemo()
    plain = memo.parse(0, {"role": "user", "content": "hi"}, lambda: "plain")
    named = memo.parse(0, {"role": "user", "content": "hi", "name": "planner"}, lambda: "named")
    parts = memo.parse(0, {"role": "user", "content": [{"type": "text", "text": "hi"}]}, lambda: "parts")
    assert (plain, named, parts) == ("plain", "named", "parts")
    wire = OpenAIChat()
    messages = wire.parse_request({"messages": [{"role": "user", "content": "hi"},
                                                {"role": "user", "content": "hi", "name": "planner"}]}).messages
    again = wire.parse_request({"messages": [{"role": "user", "content": "hi", "name": "planner"}]}).messages
    assert messages[1].name == "planner" and messages[0].name is None and again[0].name == "planner"


def test_the_memo_is_bounded():
    memo = MessageMemo(limit=16)
    for index in range(100):
        memo.parse(index, {"content": str(index)}, object)
    assert len(memo._memo) <= 16


@pytest.mark.parametrize("wire", [OpenAIChat(), AnthropicMessages()])
def test_a_history_parses_to_the_same_messages_every_turn(wire):
    history = [{"role": "user", "content": "plan the rollout"}, {"role": "assistant", "content": "done"}]
    turn1 = wire.parse_request({"model": "m", "max_tokens": 5, "messages": history}).messages
    turn2 = wire.parse_request({"model": "m", "max_tokens": 5,
                                "messages": [*history, {"role": "user", "content": "next"}]}).messages
    assert turn2[:2] == turn1 and turn2[2].parts[0].path == ("messages", 2, "content")


def test_a_bad_message_is_still_refused_every_time():
    for _ in range(2):
        with pytest.raises(BodyShapeError):
            OpenAIChat().parse_request({"messages": [{"role": 3}]})
