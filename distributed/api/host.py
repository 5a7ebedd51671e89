"""Routes a master that manages this ComfyUI as a host calls (docs/hosts.md).

    GET  /distributed/host           this machine's GPUs and local workers, with the tokens of those
                                     that listen on the network; needs the API token from every caller
    POST /distributed/host/workers   one more local worker on a free GPU (201)

Everything else a managing master does goes through the ordinary routes, with the token: launch,
stop, restart and log of a worker, PATCH its `listen`, DELETE it.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..config.models import Listen, WorkerConfig
from ..config.requests import HostWorkerCreate
from .access import AccessPolicy
from .bodies import read_body


class Inventory(Protocol):
    async def report(self) -> dict[str, Any]: ...

    async def add_worker(self, cuda_device: int | None, listen: Listen) -> WorkerConfig: ...


class WorkerView(Protocol):
    def worker_snapshot(self, worker_id: str) -> dict[str, Any]: ...


def add_host_side_routes(routes: web.RouteTableDef, policy: AccessPolicy, inventory: Inventory, views: WorkerView) -> None:
    @routes.get("/distributed/host")
    @policy.privileged
    async def report(request: web.Request) -> web.Response:
        return web.json_response(await inventory.report())

    @routes.post("/distributed/host/workers")
    @policy.guard
    async def add_worker(request: web.Request) -> web.Response:
        body = await read_body(request, HostWorkerCreate)
        worker = await inventory.add_worker(body.cuda_device, body.listen)
        return web.json_response(views.worker_snapshot(worker.id), status=201)
