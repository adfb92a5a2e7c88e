"""HTTP served from its own thread and event loop (the server thread).

Collections run on the main event loop, and every ready collection callback
(XML parsing, client work, state serialization) holds it for a while: a scrape
served on that loop waits behind all of them, so its p99 grows with collection
work. Here the listening socket, TLS, the web-config middleware and the
handlers marked `thread_safe` (/metrics, /-/healthy: they only read data that
is safe to read from any thread) run on the server thread's loop instead.

Every other handler reads or changes the service, poller and collectors, which
belong to the main loop: `on_main_loop` (a middleware, so it applies to every
route, present and future, unless the route is explicitly marked) runs those
handlers on the main loop and hands their response back. Such a handler must
build its whole response and not stream it; the request body is read on the
server thread first, so `await request.read()/text()/json()` works in it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

MAIN_LOOP = web.AppKey("main_loop", asyncio.AbstractEventLoop)

_THREAD_SAFE = "__exporter_thread_safe__"

# How long the server thread may wait for the GIL while a collection runs
# Python code on the main thread (Python's default: 5 ms). Sending a large body
# takes many send() calls, each releasing and retaking the GIL, so a scrape can
# pay that wait many times. Measured (`python -m benchmarks --only
# scrape-under-collection`, 500 targets on slow simulators, shared 2-core
# machine, 3 runs each) loaded p99 at max_concurrency 8 / 32: 5 ms: plain
# 345-457 / 341-673 ms, gzip 41-98 / 52-192 ms; 1 ms: plain 258-282 / 327-409
# ms, gzip 43-64 / 46-110 ms. Process-wide, set when the server thread starts.
SWITCH_INTERVAL = 0.001

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F", bound=Callable[..., Any])


def thread_safe(handler: F) -> F:
    """Marks a handler that may run on the server thread: it reads only data
    that is safe to read from another thread while the main loop changes it."""
    setattr(handler, _THREAD_SAFE, True)
    return handler


def is_thread_safe(handler: object) -> bool:
    return bool(getattr(handler, _THREAD_SAFE, False))


def on_main_loop() -> Middleware:
    """Runs each request's handler on `app[MAIN_LOOP]` unless it is `thread_safe`.

    Must be the innermost middleware: the ones before it (auth, headers) then
    still run for every request, on the server thread."""

    @web.middleware
    async def marshal(request: web.Request, handler: Handler) -> web.StreamResponse:
        main = request.app.get(MAIN_LOOP)
        route_handler = request.match_info.handler
        if (
            main is None
            or main is asyncio.get_running_loop()
            or request.match_info.http_exception is not None  # 404/405: nothing of the service is read
            or is_thread_safe(route_handler)
        ):
            return await handler(request)
        if request.can_read_body:
            # The body stream belongs to this loop; read it here, so the handler
            # on the main loop gets it from the request's cache.
            await request.read()
        future = asyncio.run_coroutine_threadsafe(_call(handler, request), main)
        # Cancelling this (client gone, shutdown) cancels the handler on the main loop too.
        return await asyncio.wrap_future(future)

    return marshal


async def _call(handler: Handler, request: web.Request) -> web.StreamResponse:
    # run_coroutine_threadsafe takes a coroutine; a handler may return any awaitable.
    return await handler(request)


class ServerThread:
    """An aiohttp app served from a dedicated thread with its own event loop.

    `await start()` returns once the socket listens, or raises the bind error
    (OSError); `await stop()` stops accepting, lets requests in flight finish
    (up to `shutdown_timeout`) and joins the thread. Both are called from the
    main loop, which keeps running meanwhile: handlers marshalled to it can
    finish, so in-flight requests complete during shutdown.
    """

    def __init__(
        self,
        app: web.Application,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        self._shutdown_timeout = shutdown_timeout
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)

    async def start(self) -> None:
        self._app[MAIN_LOOP] = asyncio.get_running_loop()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()
        try:
            await asyncio.wrap_future(self._ready)
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            raise

    async def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(), never lost
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                raise

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True, ssl_context=self._ssl_context)
            await site.start()
            self._ready.set_result(None)
            await self._stopping.wait()
        finally:
            # Stops accepting, then waits for the requests in flight.
            await runner.cleanup()
