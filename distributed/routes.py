"""The `/distributed/...` HTTP API on the master: parse the body, call a service, map the error.

ComfyUI serves every route registered here under `/api/distributed/...` too. Routes that change
state refuse browser requests from another web origin (see `guard`); reading stays simple.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, DistributedError, ProcessError, RegistryConflict, UnknownWorker, WorkerUnavailable
from .models import ConfigPatch, RegistryFile, WorkerConfig, WorkerCreate, WorkerPatch, keep_masked_secrets
from .registry import describe_validation_error

if TYPE_CHECKING:
    from .app import DistributedApp

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = TypeVar("Body", bound=BaseModel)

REQUEST_HEADER = "X-Distributed-Request"
"""Sent by the panel on every change: a cross-site form cannot send it, and a cross-site script
cannot either without a CORS preflight that ComfyUI does not allow for this header."""

STATUS_BY_ERROR: list[tuple[type[DistributedError], int]] = [
    (RegistryConflict, 409),
    (ConfigError, 400),
    (UnknownWorker, 404),
    (ProcessError, 409),
    (WorkerUnavailable, 502),
    (DistributedError, 500),
]


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


def foreign_origin(request: web.Request) -> str | None:
    """Why a state-changing request must be refused as coming from another web origin, or None.

    Requests without an Origin header come from programs, not web pages (browsers always send one
    with POST, PATCH and DELETE), and are allowed.
    """
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        return "request from another web site refused"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origin_host = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if not origin_host or origin_host != request.headers.get("Host", "").lower():
        return f"request from origin {origin!r} refused: it does not match this server"
    if request.headers.get(REQUEST_HEADER) != "1":
        return f"browser requests that change state must carry the {REQUEST_HEADER} header"
    return None


def guard(handler: Handler) -> Handler:
    """Wraps a state-changing handler with the origin check and the error mapping."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        problem = foreign_origin(request)
        if problem is not None:
            logger.warning("Refused %s %s: %s", request.method, request.path, problem)
            return error_response(403, problem)
        return await mapped(handler)(request)

    return guarded


def mapped(handler: Handler) -> Handler:
    """Turns our errors into JSON answers with the status from STATUS_BY_ERROR."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DistributedError as error:
            status = next(code for kind, code in STATUS_BY_ERROR if isinstance(error, kind))
            return error_response(status, str(error), getattr(error, "field", None))

    return run


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """The request's JSON as `model`; ConfigError names the bad field."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(error) from None


def register(routes: web.RouteTableDef, app: DistributedApp) -> None:
    """Adds the API to ComfyUI's route table (before ComfyUI freezes it)."""

    @routes.get("/distributed/workers")
    @mapped
    async def list_workers(request: web.Request) -> web.Response:
        return web.json_response(app.snapshot())

    @routes.post("/distributed/workers")
    @guard
    async def create_worker(request: web.Request) -> web.Response:
        body = await read_body(request, WorkerCreate)
        fields = body.model_dump()
        worker_id = fields.pop("id") or app.registry.new_worker_id(body.name)

        def add(config: RegistryFile) -> RegistryFile:
            if config.worker(worker_id) is not None:
                raise ConfigError(f"id: a worker with id '{worker_id}' exists already", field="id")
            config.workers.append(_worker(worker_id, fields))
            return config

        app.registry.update(add)
        return web.json_response(app.worker_snapshot(worker_id), status=201)

    @routes.patch("/distributed/workers/{worker_id}")
    @guard
    async def patch_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["worker_id"]
        app.registry.worker(worker_id)
        changes = (await read_body(request, WorkerPatch)).model_dump(exclude_unset=True)

        def edit(config: RegistryFile) -> RegistryFile:
            index = next((i for i, w in enumerate(config.workers) if w.id == worker_id), None)
            if index is None:
                raise UnknownWorker(worker_id)
            current = config.workers[index]
            config.workers[index] = _worker(worker_id, {**current.model_dump(), **keep_masked_secrets(current, changes)})
            return config

        app.registry.update(edit)
        return web.json_response(app.worker_snapshot(worker_id))

    @routes.delete("/distributed/workers/{worker_id}")
    @guard
    async def delete_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["worker_id"]
        app.registry.worker(worker_id)
        await app.before_worker_removed(worker_id)

        def remove(config: RegistryFile) -> RegistryFile:
            if config.worker(worker_id) is None:
                raise UnknownWorker(worker_id)
            config.workers = [w for w in config.workers if w.id != worker_id]
            return config

        app.registry.update(remove)
        return web.json_response({"deleted": worker_id})

    @routes.patch("/distributed/config")
    @guard
    async def patch_config(request: web.Request) -> web.Response:
        patch = await read_body(request, ConfigPatch)

        def edit(config: RegistryFile) -> RegistryFile:
            if patch.master is not None:
                config.master = config.master.model_copy(update=patch.master.model_dump(exclude_unset=True))
            if patch.settings is not None:
                config.settings = config.settings.model_copy(update=patch.settings.model_dump(exclude_unset=True))
            return config

        app.registry.update(edit)
        return web.json_response(app.snapshot())

    @routes.post("/distributed/workers/{worker_id}/test")
    @guard
    async def test_worker(request: web.Request) -> web.Response:
        return web.json_response(await app.test_connection(app.registry.worker(request.match_info["worker_id"])))

    @routes.post("/distributed/test-connection")
    @guard
    async def test_unsaved_worker(request: web.Request) -> web.Response:
        fields = (await read_body(request, WorkerCreate)).model_dump()
        fields.pop("id")
        return web.json_response(await app.test_connection(_worker("unsaved", fields)))

    @routes.get("/distributed/jobs")
    @mapped
    async def list_jobs(request: web.Request) -> web.Response:
        return web.json_response({"jobs": [job.snapshot() for job in app.dispatcher.jobs()]})

    @routes.get("/distributed/jobs/{job_id}")
    @mapped
    async def get_job(request: web.Request) -> web.Response:
        job = app.dispatcher.job(request.match_info["job_id"])
        if job is None:
            return error_response(404, f"no job with id '{request.match_info['job_id']}'")
        return web.json_response(job.snapshot())


def _worker(worker_id: str, fields: dict[str, Any]) -> WorkerConfig:
    try:
        return WorkerConfig.model_validate({**fields, "id": worker_id})
    except ValidationError as error:
        raise describe_validation_error(error) from None
