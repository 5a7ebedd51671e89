"""One mapping from our errors to HTTP answers, shared by every route of the API.

Every error answer is `{"error": message, "field": dotted.path | null}`; a 400 names the bad field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import (
    ConfigError,
    DistributedError,
    ModelFileError,
    ModelHashMismatch,
    ModelPathRefused,
    NoSpaceForModel,
    ProcessError,
    RegistryConflict,
    UnknownPool,
    UnknownWorker,
    WorkerUnavailable,
    error_body,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_BY_ERROR: list[tuple[type[DistributedError], int]] = [
    (RegistryConflict, 409),
    (ConfigError, 400),
    (UnknownWorker, 404),
    (UnknownPool, 404),
    (ProcessError, 409),
    (WorkerUnavailable, 502),
    (ModelPathRefused, 400),
    (ModelHashMismatch, 422),
    (NoSpaceForModel, 507),
    (ModelFileError, 409),  # a different file of that name, a copy running already, a worker that cannot receive
    (DistributedError, 500),
]
"""First match wins: a RegistryConflict is a ConfigError too, but answers 409."""


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response(error_body(message, field), status=status)


def status_of(error: DistributedError) -> int:
    return next(code for kind, code in STATUS_BY_ERROR if isinstance(error, kind))


def mapped(handler: Handler) -> Handler:
    """Turns our errors into JSON answers with the status from STATUS_BY_ERROR."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DistributedError as error:
            return error_response(status_of(error), str(error), getattr(error, "field", None))

    return run
