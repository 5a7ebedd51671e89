"""A worker's own lock: with `DISTRIBUTED_WORKER_TOKEN` set, this ComfyUI answers nobody without it.

A rented pod reached by its public proxy URL is an open ComfyUI: anyone who finds the address can
queue work on the GPU, read its images through /view and upload files. A worker that runs this
extension with the variable set refuses every request (every API route, the websocket, the
frontend) that lacks `Authorization: Bearer <token>`, with 401. The one exception is
`GET /distributed/alive`, which says only that something answers. The master sends the token as the
worker's `auth_token`, on every request and on the websocket.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from ..errors import error_body

logger = logging.getLogger(__name__)

WORKER_TOKEN_ENV = "DISTRIBUTED_WORKER_TOKEN"
ALIVE_PATH = "/distributed/alive"
"""Answers 200 "ok" to anyone: a load balancer's or pod manager's health check, revealing nothing."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def worker_token(environ: Mapping[str, str]) -> str | None:
    return environ.get(WORKER_TOKEN_ENV, "").strip() or None


def presented_token(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def worker_guard(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The aiohttp middleware that refuses requests without the worker's token (compared in constant time)."""
    expected = token.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and request.path == ALIVE_PATH:
            return web.Response(text="ok")
        if not hmac.compare_digest(presented_token(request).encode(), expected):
            logger.info("Refused %s %s from %s: no or wrong worker token", request.method, request.path, request.remote)
            return web.json_response(error_body("this ComfyUI is a locked worker: send its token as Authorization: Bearer <token>"),
                                     status=401, headers={"WWW-Authenticate": 'Bearer realm="distributed-worker"'})
        return await handler(request)

    return guard
