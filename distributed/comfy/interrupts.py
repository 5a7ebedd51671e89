"""`POST /interrupt` for a prompt of the distributed queue that a worker renders.

ComfyUI's own handler, given a `prompt_id` it finds among the running prompts, interrupts whatever
the master's execution thread runs: for a prompt a worker renders (also listed as running), that
would stop the master's own prompt and leave the worker's running. This middleware answers that one
case itself: the router stops the prompt on its worker, and the master's prompt runs on. A global
interrupt (no `prompt_id`) goes to ComfyUI as well, after the router stopped what workers render for
a master that only orchestrates (`PromptRouter.interrupt_all`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger(__name__)

INTERRUPT_PATH = "/interrupt"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def interrupt_middleware(interrupt_routed: Callable[[str], bool], interrupt_all_routed: Callable[[], None]) -> Callable:
    """`interrupt_routed(prompt_id)` stops a prompt the router gave a worker; False when it gave none.
    `interrupt_all_routed()` answers a global interrupt on the router's side."""

    @web.middleware
    async def interrupt_on_worker(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path in (INTERRUPT_PATH, "/api" + INTERRUPT_PATH):
            try:
                body = await request.json()  # aiohttp keeps the body: the handler can read it again
            except ValueError:
                body = None
            prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
            if isinstance(prompt_id, str) and prompt_id:
                if interrupt_routed(prompt_id):
                    return web.Response(status=200)
            else:
                interrupt_all_routed()
        return await handler(request)

    return interrupt_on_worker
