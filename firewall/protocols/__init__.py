"""The wire formats the firewall understands, and how to find one for a request path."""

from __future__ import annotations

from typing import Final

from firewall.protocols.a2a import A2A
from firewall.protocols.anthropic_messages import AnthropicMessages
from firewall.protocols.base import BodyShapeError, ParsedRequest, WireFormat
from firewall.protocols.gemini import GeminiGenerateContent
from firewall.protocols.mcp import McpStreamableHttp
from firewall.protocols.openai_chat import OpenAIChat
from firewall.protocols.openai_responses import OpenAIResponses

__all__ = [
    "A2A",
    "WIRE_FORMATS",
    "AnthropicMessages",
    "BodyShapeError",
    "GeminiGenerateContent",
    "McpStreamableHttp",
    "OpenAIChat",
    "OpenAIResponses",
    "ParsedRequest",
    "WireFormat",
    "wire_format_for_path",
]

WIRE_FORMATS: Final[tuple[WireFormat, ...]] = (OpenAIChat(), OpenAIResponses(), AnthropicMessages(), GeminiGenerateContent(), McpStreamableHttp(), A2A())


def wire_format_for_path(path: str) -> WireFormat | None:
    """The wire format whose route `path` is, ignoring a query string and a trailing
    slash (each format matches whole routes: see `WireFormat.for_route`). The listener
    strips an agent prefix (`/agents/planner`) first; matching whole routes keeps
    `/anything/v1/messages` from being mistaken for a known one."""
    route = path.split("?", 1)[0].rstrip("/")
    for wire_format in WIRE_FORMATS:
        found = wire_format.for_route(route)
        if found is not None:
            return found
    return None
