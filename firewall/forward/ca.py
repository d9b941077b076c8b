"""The forward proxy's certificate authority, and how agents come to trust it.

In forward mode the firewall answers each inspected TLS connection with a certificate it
signs on the spot; agents accept it because they trust this CA. The CA lives in a
directory of its own (mitmproxy's file names, so its TLS layer reads them as they are):
the key never leaves it, and it is created once, on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CA_DIR_ENV", "CAFiles", "MitmproxyMissing", "default_ca_dir", "ensure_ca", "trust_instructions"]

CA_DIR_ENV = "AGENT_FIREWALL_CA_DIR"
# mitmproxy's TLS layer looks for `<basename>-ca.pem` (key and certificate) in its confdir.
_BASENAME = "mitmproxy"
_KEY_SIZE = 2048
INSTALL_HINT = ("forward mode needs mitmproxy: pip install 'agent-firewall[mitm]' (mitmproxy 11.0.x on Python 3.11; "
                "in an environment of its own, as its pins clash with the openai SDK's httpx2)")


class MitmproxyMissing(RuntimeError):
    """The `mitm` extra is not installed in this environment."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


@dataclass(frozen=True, slots=True)
class CAFiles:
    directory: Path
    cert: Path  # the CA certificate alone (PEM): what NODE_EXTRA_CA_CERTS adds to Node's roots
    bundle: Path  # the CA and the usual public roots, for variables that replace a trust store
    created: bool  # made by this call


def default_ca_dir() -> Path:
    configured = os.environ.get(CA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".agent-firewall" / "ca"


def ensure_ca(directory: Path) -> CAFiles:
    """The CA in `directory`, created if absent (the key readable by its owner only), and
    its trust bundle brought up to date."""
    try:
        import certifi
        from mitmproxy.certs import CertStore
    except ImportError as error:
        raise MitmproxyMissing() from error
    key_file = directory / f"{_BASENAME}-ca.pem"
    created = not key_file.exists()
    if created:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        CertStore.create_store(directory, _BASENAME, _KEY_SIZE, organization="agent-firewall",
                               cn="agent-firewall forward proxy CA")
    cert = directory / f"{_BASENAME}-ca-cert.pem"
    bundle = directory / "ca-bundle.pem"
    # Variables such as SSL_CERT_FILE replace the trust store: with the CA alone, an agent
    # could reach no host the firewall tunnels. The bundle keeps the public roots beside it.
    wanted = cert.read_bytes().rstrip(b"\n") + b"\n" + Path(certifi.where()).read_bytes()
    if not bundle.exists() or bundle.read_bytes() != wanted:
        bundle.write_bytes(wanted)
    return CAFiles(directory=directory, cert=cert, bundle=bundle, created=created)


def trust_instructions(files: CAFiles, proxy: str) -> str:
    """Shell lines (comments and exports) that send an agent's traffic through the forward
    proxy at `proxy` (HOST:PORT) and make its HTTP clients trust the CA. `eval` runs them."""
    bundle, cert = _quoted(files.bundle), _quoted(files.cert)
    made = "created now" if files.created else "already there"
    return "\n".join([
        f"# agent-firewall forward proxy CA ({made}): {files.cert}",
        "# The private key stays in that directory; only the firewall reads it.",
        "# Set these in each agent's environment:",
        f"export HTTPS_PROXY=http://{proxy}",
        f"export HTTP_PROXY=http://{proxy}",
        "# Python: ssl, urllib, aiohttp, httpx and the SDKs built on it (openai, anthropic, google-genai)",
        f"export SSL_CERT_FILE={bundle}",
        "# Python: requests",
        f"export REQUESTS_CA_BUNDLE={bundle}",
        "# Node.js (adds the CA to its own roots)",
        f"export NODE_EXTRA_CA_CERTS={cert}",
        f"# curl (or: curl --cacert {cert} ...)",
        f"export CURL_CA_BUNDLE={bundle}",
        "# Hosts the agent must reach without the firewall (its own services): NO_PROXY=host,host",
        "",
    ])


def _quoted(path: Path) -> str:
    text = str(path)
    return text if all(c.isalnum() or c in "/._-+~:@" for c in text) else "'" + text.replace("'", "'\"'\"'") + "'"
