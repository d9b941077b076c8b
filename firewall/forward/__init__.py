"""Forward mode: agents send their traffic through the firewall with HTTPS_PROXY.

What is importable here needs no mitmproxy: the policy's host list and the CA helpers.
The listener itself needs the `mitm` extra (`pip install 'agent-firewall[mitm]'`):
`firewall.forward.runner.ForwardProxy` (mitmproxy in this process's event loop) and
`firewall.forward.addon.FirewallAddon` (its hooks); `firewall.forward.steps` is the glue
between them and the reverse proxy's own steps, and imports no mitmproxy either.
"""

from firewall.forward.ca import CA_DIR_ENV, CAFiles, MitmproxyMissing, default_ca_dir, ensure_ca, trust_instructions
from firewall.forward.hosts import ForwardHosts, ForwardSpec, HostPattern, parse_host_pattern

__all__ = [
    "CA_DIR_ENV",
    "CAFiles",
    "ForwardHosts",
    "ForwardSpec",
    "HostPattern",
    "MitmproxyMissing",
    "default_ca_dir",
    "ensure_ca",
    "parse_host_pattern",
    "trust_instructions",
]
