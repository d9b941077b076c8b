"""The listeners: the aiohttp reverse proxy (default) and its admin API."""

from firewall.proxy.config import ProxyConfig
from firewall.proxy.server import AI_TO_AI_TAG, EXCHANGE_HEADER, SOURCE_HEADER, TAGS_HEADER, AuditSink, Firewall

__all__ = ["AI_TO_AI_TAG", "EXCHANGE_HEADER", "SOURCE_HEADER", "TAGS_HEADER", "AuditSink", "Firewall", "ProxyConfig"]
