"""The listeners: the aiohttp reverse proxy (default)."""

from firewall.proxy.config import ProxyConfig
from firewall.proxy.server import EXCHANGE_HEADER, TAGS_HEADER, AuditSink, Firewall

__all__ = ["EXCHANGE_HEADER", "TAGS_HEADER", "AuditSink", "Firewall", "ProxyConfig"]
