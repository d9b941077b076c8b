"""A fake LLM upstream served over TLS on loopback, for forward-mode tests.

A test CA (made here, with `cryptography`) signs a certificate for 127.0.0.1 and
localhost; the fake upstream (firewall.testing.fake_upstream) answers HTTPS with it from a
thread of its own. The firewall's forward listener is told to trust the test CA
(`--upstream-ca`), as a real one trusts the public roots.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firewall.testing import FakeUpstream

__all__ = ["TestCA", "TLSUpstream", "make_test_ca", "running_tls_upstream"]


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest class

    cert: Path  # the CA certificate (PEM)
    server_cert: Path  # the server's certificate chain (PEM)
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_test_ca(directory: Path) -> TestCA:
    """A CA and a server certificate for 127.0.0.1 and localhost, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-firewall tests: upstream CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    found = TestCA(directory / "upstream-ca.pem", directory / "upstream-server.pem", directory / "upstream-server.key")
    found.cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    found.server_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return found


@dataclass
class TLSUpstream:
    fake: FakeUpstream
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextmanager
def running_tls_upstream(ca: TestCA) -> Iterator[TLSUpstream]:
    """The fake upstream on https://127.0.0.1:PORT, in a thread, until the block ends."""
    fake = FakeUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    found: dict[str, object] = {}

    async def serve() -> web.AppRunner:
        runner = web.AppRunner(fake.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ca.server_context())
        await site.start()
        found["port"] = runner.addresses[0][1]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            found["runner"] = loop.run_until_complete(serve())
        except BaseException as error:  # reported to the caller below
            found["error"] = error
        ready.set()
        if "error" not in found:
            loop.run_forever()

    thread = threading.Thread(target=run, name="tls-upstream", daemon=True)
    thread.start()
    if not ready.wait(10) or "error" in found:
        raise RuntimeError(f"the TLS fake upstream did not start: {found.get('error')}")
    try:
        yield TLSUpstream(fake, int(found["port"]))  # type: ignore[call-overload]
    finally:
        runner = found["runner"]
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
