"""Servers that stand between the master and a real worker in tests, each on its own thread and loop.

The tests drive the master with blocking calls, so these run their own event loop in a thread:
`WorkerProxy` forwards HTTP and the websocket (and lets a test refuse, spoil or cut them), and
`BackgroundServer` is the lifecycle both it and byte-level relays share.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade", "host",
              "proxy-authorization", "te", "trailer"}


class BackgroundServer:
    """Runs `serving()` on its own thread and loop; `start()`/`stop()` or `with`."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name=type(self).__name__, daemon=True)

    def start(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.serving() as port:
            self.port = port
            self._ready.set()
            await self._stop.wait()

    def serving(self) -> Any:
        """An async context manager that listens on a free loopback port and yields it."""
        raise NotImplementedError


class WorkerProxy(BackgroundServer):
    """Forwards HTTP and the websocket to one worker; optionally TLS, a token check, or a cut websocket.

    Subclasses change answers in `spoil`. Counts requests per "METHOD /path".
    """

    def __init__(self, upstream: str, token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 cut_websocket_on: str | None = None) -> None:
        super().__init__()
        self.upstream = upstream
        self.token = token
        self.ssl_context = ssl_context
        self.cut_websocket_on = cut_websocket_on
        """Message type after which the first websocket is closed on both sides (once)."""
        self.requests: collections.Counter[str] = collections.Counter()
        self.websockets_opened = 0
        self.cut = threading.Event()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context).start()
        async with aiohttp.ClientSession() as self._session:
            try:
                yield runner.addresses[0][1]
            finally:
                await runner.cleanup()

    def spoil(self, request: web.Request, status: int, body: bytes) -> web.Response | None:
        """A replacement for the worker's answer, or None to pass it on."""
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[f"{request.method} {request.path}"] += 1
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "missing or wrong token"}, status=401)
        if request.path == "/ws":
            return await self._websocket(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                         headers=headers, allow_redirects=False) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            status = answer.status
        return self.spoil(request, status, body) or web.Response(status=status, body=body, headers=kept)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.websockets_opened += 1
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)
        async with self._session.ws_connect(self.upstream.replace("http", "ws", 1) + request.path_qs) as upstream:

            async def to_master() -> None:
                async for message in upstream:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await downstream.send_str(message.data)
                        if self.cut_websocket_on and not self.cut.is_set() and f'"type": "{self.cut_websocket_on}"' in message.data:
                            self.cut.set()
                            return
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await downstream.send_bytes(message.data)

            async def to_worker() -> None:
                async for message in downstream:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(message.data)

            tasks = [asyncio.ensure_future(to_master()), asyncio.ensure_future(to_worker())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await downstream.close()
        return downstream
