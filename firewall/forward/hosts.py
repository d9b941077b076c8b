"""Forward mode's host list: whose traffic the firewall inspects, and what becomes of the rest.

In forward mode the agent names the upstream (the host of its CONNECT, the Host of each
request), so the policy must say which hosts the firewall stands in front of. A request
for any other host never reaches an upstream through an inspected path: it is refused, or,
where the policy says `unknown_hosts: tunnel`, its connection is passed through as bytes
the firewall neither decrypts nor reads. The firewall is never an open inspecting proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Annotated, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["DEFAULT_PORTS", "ForwardHosts", "ForwardSpec", "HostPattern", "parse_host_pattern"]

# A host named without a port is that host on the default port of HTTPS or of HTTP.
DEFAULT_PORTS = frozenset({443, 80})
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class HostPattern(NamedTuple):
    """One entry of `forward.hosts`: `api.openai.com`, `*.openai.azure.com`, `10.0.0.5:8443`."""

    host: str  # lower case, no trailing dot, no brackets around an IPv6 address
    port: int | None  # None: the default ports (443, 80)
    subdomains: bool  # `*.example.com`: any name under example.com, not example.com itself

    def matches(self, host: str, port: int) -> bool:
        if self.port is None and port not in DEFAULT_PORTS:
            return False
        if self.port is not None and port != self.port:
            return False
        name = normalise_host(host)
        return name.endswith("." + self.host) if self.subdomains else name == self.host


def normalise_host(host: str) -> str:
    """A host as it is compared: lower case, without a trailing dot or IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_host_pattern(text: str) -> HostPattern:
    """`host`, `host:port`, `*.domain` or `[v6]:port`; a ValueError says what is wrong."""
    value = text.strip()
    if not value:
        raise ValueError("an empty host")
    if "://" in value or "/" in value:
        raise ValueError(f"{text!r}: name a host (api.openai.com, or host:port), not a URL")
    port: int | None = None
    if value.startswith("["):
        address, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:port")
        value, port_text = address, rest[1:]
        if rest:
            port = _port(text, port_text)
    elif value.count(":") == 1:
        value, port_text = value.split(":")
        port = _port(text, port_text)
    host = value.rstrip(".").lower()
    subdomains = host.startswith("*.")
    if subdomains:
        host = host[2:]
    if "*" in host:
        raise ValueError(f"{text!r}: a wildcard is allowed only as the first label (*.example.com); "
                         "to pass every other host through, set unknown_hosts: tunnel")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if subdomains:
            raise ValueError(f"{text!r}: a wildcard cannot stand before an IP address")
        host = address.compressed
    else:
        labels = host.split(".")
        if not host.isascii() or not all(_LABEL.match(label) for label in labels):
            raise ValueError(f"{text!r} is not a host name or an IP address "
                             "(write an internationalised name in its xn-- form)")
        if subdomains and len(labels) < 2:
            raise ValueError(f"{text!r}: a wildcard needs a domain of two labels or more (*.example.com)")
    return HostPattern(host, port, subdomains)


def _port(text: str, port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(port)


def _valid_host(text: str) -> str:
    parse_host_pattern(text)
    return text


# Each entry validated on its own, so that a mistake is reported at its own line.
HostText = Annotated[str, AfterValidator(_valid_host)]


class ForwardSpec(BaseModel):
    """The policy's `forward:` section (forward mode, agents behind HTTPS_PROXY)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The hosts whose traffic is decrypted and inspected, routed by path as in the reverse
    # proxy (wire formats, defaults.unknown_routes).
    hosts: list[HostText] = []
    # Any other host: refuse (the CONNECT or request is answered 403), or tunnel (passed
    # through uninspected, and recorded).
    unknown_hosts: Literal["refuse", "tunnel"] = "refuse"


class ForwardHosts:
    """`forward.hosts` compiled: which (host, port) the firewall inspects."""

    def __init__(self, patterns: Iterable[HostPattern], unknown_hosts: Literal["refuse", "tunnel"] = "refuse") -> None:
        self.patterns = tuple(patterns)
        self.unknown_hosts = unknown_hosts

    @classmethod
    def from_spec(cls, spec: ForwardSpec) -> ForwardHosts:
        return cls((parse_host_pattern(text) for text in spec.hosts), spec.unknown_hosts)

    def inspects(self, host: str, port: int) -> bool:
        return any(pattern.matches(host, port) for pattern in self.patterns)

    def describe(self) -> str:
        """The hosts, as the policy names them, for a log line or an error message."""
        named = [("*." if p.subdomains else "") + (f"[{p.host}]" if ":" in p.host else p.host)
                 + (f":{p.port}" if p.port is not None else "") for p in self.patterns]
        return ", ".join(named) or "none"
