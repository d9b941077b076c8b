"""The forward listener: mitmproxy's proxy core in this process's event loop, with the
firewall's addon, beside (or instead of) the aiohttp reverse proxy.

Only the mitmproxy addons a forward proxy needs are loaded (no onboarding site, no
replay, no scripts): the proxy server, protocol detection, TLS with the firewall's CA,
refusal of clients from public addresses, and the firewall itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from firewall.forward.ca import CAFiles, MitmproxyMissing
from firewall.proxy.server import Firewall

__all__ = ["ForwardListenerError", "ForwardProxy"]

log = logging.getLogger("firewall.forward")


class ForwardListenerError(RuntimeError):
    """The forward listener could not start (the address is taken, the CA unreadable...)."""


class ForwardProxy:
    """`start()` listens on host:port and returns the address bound (port 0 picks one);
    `stop()` closes the listener. With `owns_firewall`, it also runs the Firewall's own
    start-up and clean-up (agent state, upstream sessions), as when no reverse listener
    does."""

    def __init__(self, firewall: Firewall, *, host: str, port: int, ca: CAFiles, upstream_ca: Path | None = None,
                 owns_firewall: bool = False) -> None:
        self.firewall = firewall
        self.host, self.port = host, port
        self.ca = ca
        self.upstream_ca = upstream_ca
        self._owns_firewall = owns_firewall
        self._master = None  # a mitmproxy Master, once started
        self._addon: Any = None  # its FirewallAddon
        self._runner: web.AppRunner | None = None
        self._log_handler: logging.Handler | None = None

    async def start(self) -> tuple[str, int]:
        try:
            from mitmproxy import exceptions, options
            from mitmproxy.addons import block, disable_h2c, next_layer, proxyserver, tlsconfig
            from mitmproxy.master import Master

            from firewall.forward.addon import FirewallAddon
        except ImportError as error:
            raise MitmproxyMissing() from error
        if self.upstream_ca is not None and not self.upstream_ca.is_file():
            raise ForwardListenerError(f"--upstream-ca {self.upstream_ca}: no such file")
        if self._owns_firewall:
            self._runner = web.AppRunner(self.firewall.app)
            await self._runner.setup()
        master = Master(options.Options(), with_termlog=False)
        # mitmproxy puts a handler of its own on the root logger, so Python's last-resort
        # handler no longer prints warnings and errors: this one does, the firewall's too.
        self._log_handler = logging.StreamHandler()
        self._log_handler.setLevel(logging.WARNING)
        self._log_handler.setFormatter(logging.Formatter("agent-firewall: %(name)s: %(levelname)s: %(message)s"))
        logging.getLogger().addHandler(self._log_handler)
        server = proxyserver.Proxyserver()
        self._addon = FirewallAddon(self.firewall)
        master.addons.add(block.Block(), disable_h2c.DisableH2C(), server, next_layer.NextLayer(),
                          tlsconfig.TlsConfig(), self._addon)
        try:
            master.options.update(
                mode=["regular"], listen_host=self.host, listen_port=self.port, confdir=str(self.ca.directory),
                # No upstream connection before the firewall has decided the request.
                connection_strategy="lazy",
                # HTTP/1.1 on both sides: every body the firewall rewrites or streams is framed one way.
                http2=False,
                ssl_verify_upstream_trusted_ca=str(self.upstream_ca) if self.upstream_ca else None,
                # mitmproxy reads a body whole before the firewall sees it: the same cap as the
                # reverse proxy's, before it is read (a buffered answer is held to it too).
                body_size_limit=str(self.firewall.config.max_body_bytes),
            )
        except exceptions.OptionsError as error:
            await self._close_firewall()
            raise ForwardListenerError(f"forward listener: {error}") from error
        self._master = master
        if not await server.setup_servers() or not server.listen_addrs():
            await self.stop()
            raise ForwardListenerError(f"the forward listener cannot listen on {self.host}:{self.port} "
                                       "(is the address taken?)")
        await master.running()
        host, port = server.listen_addrs()[0][:2]
        return host, port

    async def drain(self, seconds: float) -> int:
        """Stop listening; let the flows in flight (streams included) end for up to
        `seconds`. Returns how many were still running then (`stop` ends them)."""
        master = self._master
        if master is None or self._addon is None:
            return 0
        await master.addons.get("proxyserver").servers.update([])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._addon.idle()
        return len(self._addon.in_flight)

    async def stop(self) -> None:
        master, self._master = self._master, None
        if master is not None:
            server = master.addons.get("proxyserver")
            await server.servers.update([])
            await _close_connections(server)
            await master.done()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        await self._close_firewall()

    async def _close_firewall(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def _close_connections(server: Any, within: float = 2.0) -> None:
    """End the connections still open (an agent keeping its connection alive), as
    mitmproxy's own idle timeout does, rather than leave their tasks to be cancelled
    with the event loop."""
    for handler in list(server.connections.values()):
        transport = handler.transports.get(handler.client)
        if transport is not None and transport.handler is not None:
            transport.handler.cancel("the forward proxy is shutting down")
    deadline = asyncio.get_running_loop().time() + within
    while server.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
