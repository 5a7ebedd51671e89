"""Read-only routes about the distributed queue: which participant renders or rendered each prompt.

    GET /distributed/queue               the latest routed prompts, newest first
    GET /distributed/queue/{prompt_id}   one: state, participant, failed attempts, error, timing

The prompts themselves, their outputs and status stay in ComfyUI's own `/queue` and `/history`.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from .access import AccessPolicy
from .errors import error_response


class RoutedView(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class RoutedSource(Protocol):
    def runs(self) -> list[Any]: ...

    def run(self, prompt_id: str) -> RoutedView | None: ...


def add_queue_routes(routes: web.RouteTableDef, policy: AccessPolicy, router: RoutedSource) -> None:
    reader = policy.reader

    @routes.get("/distributed/queue")
    @reader
    async def list_routed(request: web.Request) -> web.Response:
        return web.json_response({"prompts": [run.snapshot() for run in router.runs()]})

    @routes.get("/distributed/queue/{prompt_id}")
    @reader
    async def get_routed(request: web.Request) -> web.Response:
        run = router.run(request.match_info["prompt_id"])
        if run is None:
            return error_response(404, f"the distributed queue knows no prompt '{request.match_info['prompt_id']}'")
        return web.json_response(run.snapshot())
