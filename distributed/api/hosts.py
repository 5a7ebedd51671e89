"""Routes for the hosts of this master: their workers, acted on through each host's own API.

    POST   /distributed/hosts/{host_id}/workers                          add a worker on a free GPU (201)
    PATCH  /distributed/hosts/{host_id}/workers/{worker_id}              {"listen": "loopback"|"network"}
    DELETE /distributed/hosts/{host_id}/workers/{worker_id}              remove it (the host stops it)
    POST   /distributed/hosts/{host_id}/workers/{worker_id}/launch|stop|restart   (202)
    GET    /distributed/hosts/{host_id}/workers/{worker_id}/log?lines=N  -> {"lines": [...]}

`worker_id` is the worker's id on the host. Each action is forwarded to the host, then the host is
polled again, and the answer carries the host's fresh view (as GET /distributed/workers shows it
under `hosts`). A change of `listen` restarts a worker that runs, so that it takes effect.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aiohttp import web

from ..config.models import WORKER_ID_PATTERN, WorkerConfig
from ..config.registry import Registry
from ..config.requests import HostWorkerCreate, HostWorkerPatch
from ..errors import BadResult, ConfigError, UnknownWorker
from .access import AccessPolicy
from .bodies import read_body
from .processes import read_lines

RUNNING_STATES = ("launching", "online", "busy")
MAX_LINE = 10_000


class Relay(Protocol):
    async def call(self, host: WorkerConfig, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                   worker_id: str | None = None) -> Any: ...


class Hosts(Protocol):
    async def refresh(self, host: WorkerConfig) -> None: ...

    def view(self, host_id: str) -> dict[str, Any]: ...


def add_host_routes(routes: web.RouteTableDef, policy: AccessPolicy, registry: Registry, hosts: Hosts, relay: Relay) -> None:
    def host_of(request: web.Request) -> WorkerConfig:
        host = registry.worker(request.match_info["host_id"])
        if host.type != "host":
            raise ConfigError(f"worker '{host.name}' is a {host.type} worker, not a host", field="type")
        if not host.enabled:
            raise ConfigError(f"host '{host.name}' is disabled; enable it to act on its workers", field="enabled")
        return host

    def worker_path(request: web.Request, suffix: str = "") -> tuple[str, str]:
        worker_id = request.match_info["worker_id"]
        if not re.match(WORKER_ID_PATTERN, worker_id):
            raise UnknownWorker(worker_id)
        return worker_id, f"/distributed/workers/{worker_id}{suffix}"

    async def answered(host: WorkerConfig, status: int = 200, **extra: Any) -> web.Response:
        await hosts.refresh(host)
        return web.json_response({**extra, "host": hosts.view(host.id)}, status=status)

    @routes.post("/distributed/hosts/{host_id}/workers")
    @policy.guard
    async def add_worker(request: web.Request) -> web.Response:
        host = host_of(request)
        body = await read_body(request, HostWorkerCreate)
        added = await relay.call(host, "POST", "/distributed/host/workers", body.model_dump(mode="json"))
        worker_id = added.get("id") if isinstance(added, dict) else None
        return await answered(host, 201, worker_id=worker_id if isinstance(worker_id, str) else None)

    @routes.patch("/distributed/hosts/{host_id}/workers/{worker_id}")
    @policy.guard
    async def set_listen(request: web.Request) -> web.Response:
        host = host_of(request)
        worker_id, path = worker_path(request)
        body = await read_body(request, HostWorkerPatch)
        changed = await relay.call(host, "PATCH", path, body.model_dump(mode="json"), worker_id=worker_id)
        state = (changed.get("status") or {}).get("state") if isinstance(changed, dict) else None
        if state in RUNNING_STATES:
            await relay.call(host, "POST", f"{path}/restart", worker_id=worker_id)
        return await answered(host)

    @routes.delete("/distributed/hosts/{host_id}/workers/{worker_id}")
    @policy.guard
    async def remove_worker(request: web.Request) -> web.Response:
        host = host_of(request)
        worker_id, path = worker_path(request)
        await relay.call(host, "DELETE", path, worker_id=worker_id)
        return await answered(host, deleted=worker_id)

    @routes.post(r"/distributed/hosts/{host_id}/workers/{worker_id}/{action:launch|stop|restart}")
    @policy.guard
    async def control(request: web.Request) -> web.Response:
        host = host_of(request)
        worker_id, path = worker_path(request, f"/{request.match_info['action']}")
        await relay.call(host, "POST", path, worker_id=worker_id)
        return await answered(host, 202, worker_id=worker_id)

    @routes.get("/distributed/hosts/{host_id}/workers/{worker_id}/log")
    @policy.reader
    async def log(request: web.Request) -> web.Response:
        host = host_of(request)
        lines = read_lines(request)
        worker_id, path = worker_path(request, "/log")
        answer = await relay.call(host, "GET", path, params={"lines": str(lines)}, worker_id=worker_id)
        found = answer.get("lines") if isinstance(answer, dict) else None
        if not isinstance(found, list) or not all(isinstance(line, str) for line in found):
            raise BadResult(host.name, f"GET {path} did not answer a list of lines")
        return web.json_response({"lines": [line[:MAX_LINE] for line in found[-lines:]]})
