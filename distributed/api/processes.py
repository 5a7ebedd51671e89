"""Routes for local worker processes: launch, stop, restart, and any worker's log tail.

    POST /distributed/workers/{worker_id}/launch|stop|restart  -> 202 {"worker_id", "status", "pid"}
    GET  /distributed/workers/{worker_id}/log?lines=N          -> 200 {"lines": [...]}

Launching runs programs on this machine, so the POST handlers are guarded by the access policy
(foreign-origin check, token). The log of a local worker is read from its file; that of a remote or
cloud worker from its own ComfyUI (`remote_log`). Errors go through the API's one mapping: 404
unknown worker, 400 not a local worker or a bad `lines`, 409 a ProcessError (port taken, bad
extra_args, cannot start), 502 a remote worker whose log cannot be read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..config.models import WorkerConfig
from ..errors import ConfigError
from ..workers.local.manager import ProcessStatus
from .access import AccessPolicy

DEFAULT_LOG_LINES = 200
MAX_LOG_LINES = 5000


class Processes(Protocol):
    async def launch(self, worker: WorkerConfig) -> ProcessStatus: ...

    async def stop(self, worker_id: str) -> ProcessStatus: ...

    async def restart(self, worker: WorkerConfig) -> ProcessStatus: ...

    async def log_tail(self, worker_id: str, lines: int) -> list[str]: ...


def read_lines(request: web.Request) -> int:
    """The `lines` a log request asks for; ConfigError (field lines) unless a whole number in range."""
    raw = request.query.get("lines", str(DEFAULT_LOG_LINES))
    try:
        lines = int(raw)
    except ValueError:
        lines = 0
    if not 1 <= lines <= MAX_LOG_LINES:
        raise ConfigError(f"lines must be a whole number from 1 to {MAX_LOG_LINES}, got '{raw[:20]}'", field="lines")
    return lines


def not_local(worker: WorkerConfig) -> ConfigError:
    return ConfigError(f"worker '{worker.name}' is a {worker.type} worker; only local workers have a process here", field="type")


def add_process_routes(
    routes: web.RouteTableDef,
    policy: AccessPolicy,
    processes: Processes,
    get_worker: Callable[[str], WorkerConfig],
    status_json: Callable[[str], dict[str, Any]],
    remote_log: Callable[[WorkerConfig, int], Awaitable[list[str]]],
) -> None:
    """Adds the handlers. `get_worker` raises UnknownWorker for an id the registry lacks;
    `status_json` renders a worker's status as GET /distributed/workers does."""

    def local_worker(request: web.Request) -> WorkerConfig:
        worker = get_worker(request.match_info["worker_id"])
        if worker.type != "local":
            raise not_local(worker)
        return worker

    def action(operate: Callable[[WorkerConfig], Awaitable[ProcessStatus]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            status = await operate(local_worker(request))
            body = {"worker_id": status.worker_id, "status": status_json(status.worker_id), "pid": status.pid}
            return web.json_response(body, status=202)

        return policy.guard(handler)

    async def stop(worker: WorkerConfig) -> ProcessStatus:
        return await processes.stop(worker.id)

    routes.post("/distributed/workers/{worker_id}/launch")(action(processes.launch))
    routes.post("/distributed/workers/{worker_id}/stop")(action(stop))
    routes.post("/distributed/workers/{worker_id}/restart")(action(processes.restart))

    @routes.get("/distributed/workers/{worker_id}/log")
    @policy.reader
    async def log(request: web.Request) -> web.StreamResponse:
        lines = read_lines(request)
        worker = get_worker(request.match_info["worker_id"])
        if worker.type == "local":
            return web.json_response({"lines": await processes.log_tail(worker.id, lines)})
        return web.json_response({"lines": await remote_log(worker, lines)})
