"""The wire formats the firewall understands, and how to find one for a request path."""

from __future__ import annotations

from typing import Final

from firewall.protocols.anthropic_messages import AnthropicMessages
from firewall.protocols.base import BodyShapeError, ParsedRequest, WireFormat
from firewall.protocols.openai_chat import OpenAIChat

__all__ = [
    "WIRE_FORMATS",
    "AnthropicMessages",
    "BodyShapeError",
    "OpenAIChat",
    "ParsedRequest",
    "WireFormat",
    "wire_format_for_path",
]

WIRE_FORMATS: Final[tuple[WireFormat, ...]] = (OpenAIChat(), AnthropicMessages())


def wire_format_for_path(path: str) -> WireFormat | None:
    """The wire format whose route is exactly `path`, ignoring a query string and a
    trailing slash. The listener strips an agent prefix (`/agents/planner`) first; an
    exact match keeps `/anything/v1/messages` from being mistaken for a known route."""
    route = path.split("?", 1)[0].rstrip("/")
    for wire_format in WIRE_FORMATS:
        if route == wire_format.path:
            return wire_format
    return None
