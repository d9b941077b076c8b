"""Run an aiohttp application in a background thread, for tests and the demo.

Tests drive the firewall with the official *sync* SDK clients, which block the calling
thread; the servers they talk to (the fake upstream, the proxy) therefore need an event
loop of their own. `ServerThread` gives each application one thread and one loop, bound
to 127.0.0.1, and tears both down completely on `stop()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from firewall.proxy.connection import runner_for

T = TypeVar("T")

AppSource = web.Application | Callable[[], web.Application | Awaitable[web.Application]]

_START_TIMEOUT = 10.0


class ServerThread:
    """An aiohttp application served from its own thread and event loop.

    `app` is an Application, or a zero-argument (async) factory called inside the
    server's loop, for applications whose construction needs a running loop.

        with ServerThread(app) as srv:
            requests.get(srv.url + "/health")
    """

    def __init__(
        self,
        app: AppSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 2.0,
        name: str = "server",
    ) -> None:
        self._source = app
        self.host = host
        self._requested_port = port
        # aiohttp waits this long for in-flight handlers (an open stream) on shutdown;
        # its 60 s default would make a test that abandons a stream hang for a minute.
        self._shutdown_timeout = shutdown_timeout
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._port: int | None = None
        self._app: web.Application | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-thread", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"{self._name} did not start within {_START_TIMEOUT:.0f} s")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"{self._name} failed to start: {self._startup_error}") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving, run the application's cleanup, close the loop, join the thread.
        Safe to call twice."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stopping = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers use ----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:41234."""
        return f"http://{self.host}:{self.port}"

    @property
    def app(self) -> web.Application:
        if self._app is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._app

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run `coro` on the server's loop and return its result (re-raising its error)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()  # never awaited otherwise: avoid the "was never awaited" warning
            raise RuntimeError(f"{self._name} is not running")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            try:
                loop.run_until_complete(_cancel_leftover_tasks())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._ready.set()  # never leave start() waiting if we died early

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        runner: web.AppRunner | None = None
        try:
            app = await _build_app(self._source)
            runner = runner_for(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            self._app = app
        except BaseException as exc:  # reported to start(), which re-raises it
            self._startup_error = exc
            if runner is not None:
                await runner.cleanup()
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            self._port = None
            self._app = None


async def _build_app(source: AppSource) -> web.Application:
    if isinstance(source, web.Application):
        return source
    built = source()
    if asyncio.iscoroutine(built) or isinstance(built, Awaitable):
        built = await built
    if not isinstance(built, web.Application):
        raise TypeError(f"app factory returned {type(built).__name__}, expected aiohttp.web.Application")
    return built


async def _cancel_leftover_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment of asking, for a server started in
    another process (which must bind it itself: another test could take it first, rarely)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
