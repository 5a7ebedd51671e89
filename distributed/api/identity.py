"""GET /distributed/identity: which master this ComfyUI is, on every instance running this extension.

    GET /distributed/identity   {"master_id": "<id>"} on a master, {"master_id": null} on a worker

A master probing a worker's address reads it to recognise itself: a worker entry that points at the
master's own port or address would otherwise send shares to the master's own queue, behind the
prompt waiting for them. The route is open to every client, like ComfyUI's own /system_stats: the
id names this master in the client ids of its shares on workers and is no secret, and the master
must be able to read it from itself even when reads need a token.
"""

from __future__ import annotations

from aiohttp import web

from ..workers.client import IDENTITY_PATH


def add_identity_route(routes: web.RouteTableDef, master_id: str | None) -> None:
    @routes.get(IDENTITY_PATH)
    async def identity(request: web.Request) -> web.Response:
        return web.json_response({"master_id": master_id})
