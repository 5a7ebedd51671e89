"""HTTP handlers for local worker processes: launch, stop, restart and the log tail.

    POST /distributed/workers/{worker_id}/launch|stop|restart  -> 202 {"worker_id", "status", "pid"}
    GET  /distributed/workers/{worker_id}/log?lines=N          -> 200 {"lines": [...]}

Launching runs programs on this machine, so the POST handlers are wrapped in the `guard` app.py
supplies (the foreign-origin check). Errors use the API's shape {"error": message, "field": path|null}:
404 unknown worker, 400 not a local worker or a bad `lines`, 409 a ProcessError (port taken, bad
extra_args, cannot start).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ProcessError, UnknownWorker, WorkerUnavailable
from .models import WorkerConfig, WorkerStatus
from .processes import LocalWorkerManager, ProcessStatus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_LOG_LINES = 200
MAX_LOG_LINES = 5000


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def add_process_routes(
    routes: web.RouteTableDef,
    manager: LocalWorkerManager,
    get_worker: Callable[[str], WorkerConfig],
    guard: Callable[[Handler], Handler],
    reader: Callable[[Handler], Handler] = lambda handler: handler,
    status_json: Callable[[str], dict] | None = None,
    remote_log: Callable[[WorkerConfig, int], Awaitable[list[str]]] | None = None,
) -> None:
    """Adds the handlers to `routes`.

    `get_worker` raises UnknownWorker for an id the registry lacks. `status_json`, when given,
    renders a worker's status as GET /distributed/workers does (the health monitor's view);
    otherwise the manager's process state is rendered in the same shape. `reader` wraps the log route
    (the token, where reads are protected). `remote_log`, when given,
    reads the log of a remote or cloud worker from its own ComfyUI.
    """

    def render(status: ProcessStatus) -> web.Response:
        if status_json is not None:
            shown = status_json(status.worker_id)
        else:
            shown = WorkerStatus(state=status.state, error=status.error).as_json()
        return web.json_response({"worker_id": status.worker_id, "status": shown, "pid": status.pid}, status=202)

    def local_worker(request: web.Request) -> WorkerConfig:
        worker = get_worker(request.match_info["worker_id"])
        if worker.type != "local":
            raise _NotLocal(worker)
        return worker

    def action(operate: Callable[[WorkerConfig], Awaitable[ProcessStatus]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return render(await operate(local_worker(request)))
            except UnknownWorker as error:
                return _error(404, str(error))
            except _NotLocal as error:
                return _error(400, str(error), "type")
            except ProcessError as error:
                return _error(409, str(error))

        return guard(handler)

    async def stop(worker: WorkerConfig) -> ProcessStatus:
        return await manager.stop(worker.id)

    routes.post("/distributed/workers/{worker_id}/launch")(action(manager.launch))
    routes.post("/distributed/workers/{worker_id}/stop")(action(stop))
    routes.post("/distributed/workers/{worker_id}/restart")(action(manager.restart))

    @routes.get("/distributed/workers/{worker_id}/log")
    @reader
    async def log(request: web.Request) -> web.StreamResponse:
        raw = request.query.get("lines", str(DEFAULT_LOG_LINES))
        try:
            lines = int(raw)
        except ValueError:
            lines = 0
        if not 1 <= lines <= MAX_LOG_LINES:
            return _error(400, f"lines must be a whole number from 1 to {MAX_LOG_LINES}, got '{raw[:20]}'", "lines")
        try:
            worker = local_worker(request)
        except UnknownWorker as error:
            return _error(404, str(error))
        except _NotLocal as error:
            if remote_log is None:
                return _error(400, str(error), "type")
            try:
                return web.json_response({"lines": await remote_log(error.worker, lines)})
            except WorkerUnavailable as unavailable:
                return _error(502, f"could not read the log of worker '{error.worker.name}': {unavailable.cause}")
        return web.json_response({"lines": await manager.log_tail(worker.id, lines)})


class _NotLocal(Exception):
    """A request for a process operation on a remote or cloud worker (answered with 400)."""

    def __init__(self, worker: WorkerConfig) -> None:
        super().__init__(f"worker '{worker.name}' is a {worker.type} worker; only local workers have a process here")
        self.worker = worker
