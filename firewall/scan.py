"""Deciding samples offline: how a security team tries a policy, and what the detection
benchmarks drive. One JSONL line in, one JSONL line out.

An input line is `{"id", "text"}`, `{"id", "messages": [...]}` or a raw API body
(OpenAI or Anthropic, request or response).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from firewall.engine import Engine
from firewall.model import Direction, Exchange, Message, Part
from firewall.protocols import BodyShapeError, WireFormat
from firewall.protocols.anthropic_messages import AnthropicMessages
from firewall.protocols.openai_chat import OpenAIChat

_OPENAI = OpenAIChat()
_ANTHROPIC = AnthropicMessages()
_ANTHROPIC_ONLY_BLOCKS = frozenset({"tool_use", "tool_result", "thinking", "image", "document"})


class ScanInputError(ValueError):
    pass


def scan_lines(engine: Engine, lines: Iterable[bytes | str], direction: Direction) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            if not isinstance(item, dict):
                raise ScanInputError("expected a JSON object")
            yield scan_one(engine, item, direction, default_id=str(number))
        except (orjson.JSONDecodeError, ScanInputError, BodyShapeError) as error:
            yield {"id": str(number), "line": number, "error": str(error)}


def scan_one(engine: Engine, item: dict[str, Any], direction: Direction, *, default_id: str) -> dict[str, Any]:
    item_id = item.get("id", default_id)
    wire, messages, direction = _messages(item, direction)
    exchange = Exchange(
        id=str(item_id), direction=direction, provider=wire.provider if wire else "scan", route="scan",
        messages=messages, agent=item.get("agent"), source_agent=item.get("source"), target_agent=item.get("target"),
    )
    decision = engine.inspect(exchange)
    return {
        "id": item_id,
        "action": str(decision.action),
        "rules": list(decision.rules),
        "scores": _scores(engine, messages),
    }


def _messages(item: dict[str, Any], direction: Direction) -> tuple[WireFormat | None, tuple[Message, ...], Direction]:
    if isinstance(item.get("text"), str):
        role, path = ("user", ("messages", 0, "content")) if direction is Direction.REQUEST else (
            "assistant", ("choices", 0, "message", "content"))
        return None, (Message(role=role, parts=(Part(item["text"], path),)),), direction
    if "choices" in item:
        return _OPENAI, _OPENAI.parse_response(item), Direction.RESPONSE
    if item.get("type") == "message" and "content" in item:
        return _ANTHROPIC, _ANTHROPIC.parse_response(item), Direction.RESPONSE
    if isinstance(item.get("messages"), list):
        wire = _ANTHROPIC if _looks_anthropic(item) else _OPENAI
        body = {key: value for key, value in item.items() if key not in ("id", "agent", "source", "target")}
        return wire, wire.parse_request(body).messages, direction
    raise ScanInputError("expected 'text', 'messages', or an OpenAI / Anthropic body")


def _looks_anthropic(item: dict[str, Any]) -> bool:
    if item.get("provider") == "anthropic" or "system" in item:
        return True
    for message in item["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(block, dict) and block.get("type") in _ANTHROPIC_ONLY_BLOCKS for block in content
        ):
            return True
    return False


def _scores(engine: Engine, messages: tuple[Message, ...]) -> dict[str, float]:
    texts = [part.text for message in messages for part in message.parts]
    scores: dict[str, float] = {}
    for name, detector in engine.policy.detectors.items():
        results = detector.score(texts) if texts else []
        scores[name] = 0.0
        for result in results:  # the detector's own score and each of its labels ("semantic:jailbreak")
            for label, value in result.scores.items():
                scores[label] = max(round(value, 6), scores.get(label, 0.0))
    return scores
