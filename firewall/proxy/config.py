"""The proxy's settings, validated at the boundary (CLI flags or code)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_UPSTREAMS = {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com",
                     "gemini": "https://generativelanguage.googleapis.com"}


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Upstreams come from configuration only, never from the request (no SSRF).
    upstreams: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    audit_log: Path | None = None
    agent_header: str = "X-Agent-Id"
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Hostile-input limits (firewall/proxy/limits.py; docs/operations.md "Limits on what a request may cost").
    max_decoded_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # a compressed body, once decoded
    max_decompression_ratio: float = Field(default=100.0, ge=1.0)  # decoded / received, past 1 MiB decoded
    max_json_depth: int = Field(default=64, ge=2, le=1000)  # nested arrays and objects in a request body
    max_header_line_bytes: int = Field(default=8190, ge=256)  # the request line (aiohttp's max_line_size)
    max_header_field_bytes: int = Field(default=8190, ge=256)  # one header (aiohttp's max_field_size)
    max_headers: int = Field(default=128, ge=8)
    body_timeout: float = Field(default=30.0, gt=0)  # seconds to receive a whole body once its headers are in
    # Seconds for a request's headers, from the connection's opening or its last answer
    # (slowloris); an idle kept-alive connection is closed at the same deadline.
    header_timeout: float = Field(default=30.0, gt=0)
    max_streams: int = Field(default=512, ge=1)  # streamed answers relayed at once; past it: 429
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    # HTTPS upstreams are verified against these CA certificates (PEM) instead of the
    # system's trust store: a private gateway, a test upstream.
    upstream_ca: Path | None = None
    # The provider keys the firewall sends upstream for agents that authenticate with
    # their own firewall keys (by upstream name: openai, anthropic, gemini).
    provider_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # Where agent state lives: "memory" (this process) or a redis:// URL (shared).
    state: str = "memory"

    @field_validator("upstream_ca")
    @classmethod
    def _ca_file(cls, path: Path | None) -> Path | None:
        if path is not None:
            upstream_ssl_context(path)  # refused now, with the reason, rather than at the first request
        return path

    @field_validator("upstreams")
    @classmethod
    def _urls(cls, upstreams: dict[str, str]) -> dict[str, str]:
        for name, url in upstreams.items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"upstream {name!r}: {url!r} is not an http(s) URL")
            if parts.query or parts.fragment:
                raise ValueError(f"upstream {name!r}: {url!r} must not have a query or fragment")
        return {name: url.rstrip("/") for name, url in upstreams.items()}


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_upstream(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url:
        raise ValueError(f"--upstream {value!r}: expected NAME=URL, e.g. openai=https://api.openai.com")
    return name, url


def parse_provider_key(value: str, environ: Mapping[str, str] | None = None) -> tuple[str, SecretStr]:
    """`NAME=env:VARIABLE` or `NAME=file:PATH`: the key itself never goes on a command
    line, where `ps` and shell history would show it."""
    name, sep, where = value.partition("=")
    kind, _, ref = where.partition(":")
    if not sep or not name or kind not in ("env", "file") or not ref:
        raise ValueError(f"--provider-key {value!r}: expected NAME=env:VARIABLE or NAME=file:PATH, "
                         "e.g. openai=env:OPENAI_API_KEY")
    if kind == "env":
        key = (os.environ if environ is None else environ).get(ref, "")
        if not key:
            raise ValueError(f"--provider-key {name}: the environment variable {ref} is not set or empty")
    else:
        try:
            key = Path(ref).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"--provider-key {name}: cannot read {ref}: {error.strerror or error}") from error
        if not key:
            raise ValueError(f"--provider-key {name}: {ref} is empty")
    return name, SecretStr(key)


def upstream_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts the CA certificates in `ca_file` (PEM), and only them."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError:
        raise ValueError(f"upstream CA {ca_file}: no such file") from None
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"upstream CA {ca_file}: not a file of PEM certificates ({error})") from None
