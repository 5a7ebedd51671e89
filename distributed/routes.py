"""The `/distributed/...` HTTP API on the master: parse the body, call a service, map the error.

ComfyUI serves every route registered here under `/api/distributed/...` too. Who may do what is the
`AccessPolicy`'s job (docs/security.md):

- Routes that change state or start processes refuse requests from another web origin (Origin/Host
  check, and the `X-Distributed-Request` header a cross-site form cannot send). The check is ours,
  so it holds also when ComfyUI runs with `--enable-cors-header` and its own origin check is off.
- With a shared API token (env `DISTRIBUTED_API_TOKEN`), those routes also need the token, sent as
  `Authorization: Bearer <token>` or `X-Distributed-Token`; a missing or wrong one gets 401.
- Reading status stays open, unless the token is set and `DISTRIBUTED_API_TOKEN_READS=1` asks for
  the token on reads too.
- `extra_args` given through the API may not add flags that point a worker at other folders or files
  (`--output-directory /etc`); only a hand edit of workers.json can, and the API keeps such flags
  when a change leaves them as they are.
"""

from __future__ import annotations

import hmac
import json
import logging
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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
TOKEN_HEADER = "X-Distributed-Token"
TOKEN_ENV = "DISTRIBUTED_API_TOKEN"
PROTECT_READS_ENV = "DISTRIBUTED_API_TOKEN_READS"
PATH_FLAGS = (
    "--base-directory", "--output-directory", "--input-directory", "--temp-directory", "--user-directory",
    "--extra-model-paths-config", "--database-url", "--front-end-root", "--tls-keyfile", "--tls-certfile",
)
"""ComfyUI flags that name folders or files: through the API, extra_args may keep them, never add them."""

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


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use the API: the origin check always, the shared token when one is configured."""

    token: str | None = None
    protect_reads: bool = False
    """Ask for the token on reads too; only meaningful with a token."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AccessPolicy:
        token = environ.get(TOKEN_ENV, "").strip() or None
        protect_reads = token is not None and environ.get(PROTECT_READS_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(token, protect_reads)

    def token_problem(self, request: web.Request) -> str | None:
        """Why the request's token is not accepted, or None (always None without a configured token)."""
        if self.token is None:
            return None
        authorization = request.headers.get("Authorization", "")
        scheme, _, value = authorization.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else request.headers.get(TOKEN_HEADER)
        if not presented:
            return f"this master's API needs its token: send Authorization: Bearer <token> or {TOKEN_HEADER}"
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            return "wrong API token"
        return None

    def guard(self, handler: Handler) -> Handler:
        """Wraps a state-changing handler: origin check (403), then the token (401), then error mapping."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            problem = foreign_origin(request)
            if problem is not None:
                logger.warning("Refused %s %s: %s", request.method, request.path, problem)
                return error_response(403, problem)
            return await self._with_token(handler, request)

        return guarded

    def reader(self, handler: Handler) -> Handler:
        """Wraps a reading handler: open, unless reads are protected by the token."""

        async def read(request: web.Request) -> web.StreamResponse:
            if not self.protect_reads:
                return await mapped(handler)(request)
            return await self._with_token(handler, request)

        return read

    async def _with_token(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        problem = self.token_problem(request)
        if problem is not None:
            logger.warning("Refused %s %s: %s", request.method, request.path, problem)
            response = error_response(401, problem)
            response.headers["WWW-Authenticate"] = 'Bearer realm="distributed"'
            return response
        return await mapped(handler)(request)


guard = AccessPolicy().guard
"""The origin check alone, for routes outside the master's API (e.g. results served by a worker)."""


def path_arguments(extra_args: str) -> set[tuple[str, str]]:
    """The (flag, value) pairs of `extra_args` that point ComfyUI at folders or files.

    argparse accepts any unambiguous prefix of a flag (`--output-dir`), so a prefix counts too.
    """
    try:
        words = shlex.split(extra_args)
    except ValueError as error:
        raise ConfigError(f"extra_args: cannot be parsed ({error})", field="extra_args") from None
    found = set()
    for position, word in enumerate(words):
        flag, has_value, value = word.partition("=")
        if len(flag) > 3 and flag.startswith("--") and any(path_flag.startswith(flag) for path_flag in PATH_FLAGS):
            following = words[position + 1] if position + 1 < len(words) else ""
            found.add((flag, value if has_value else following))
    return found


def check_extra_args(extra_args: str, stored: str = "") -> None:
    """Refuses path flags that `extra_args` adds to the ones the user wrote in workers.json (`stored`)."""
    added = path_arguments(extra_args) - path_arguments(stored)
    if added:
        flags = ", ".join(sorted(f"{flag} {value}".strip() for flag, value in added))
        raise ConfigError(
            f"extra_args: {flags} points the worker at other folders or files; only a hand edit of workers.json can set that",
            field="extra_args",
        )


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


def register(routes: web.RouteTableDef, app: DistributedApp, policy: AccessPolicy) -> None:
    """Adds the API to ComfyUI's route table (before ComfyUI freezes it)."""
    guard, reader = policy.guard, policy.reader

    @routes.get("/distributed/workers")
    @reader
    async def list_workers(request: web.Request) -> web.Response:
        return web.json_response(app.snapshot())

    @routes.post("/distributed/workers")
    @guard
    async def create_worker(request: web.Request) -> web.Response:
        body = await read_body(request, WorkerCreate)
        check_extra_args(body.extra_args)
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
            if changes.get("extra_args") is not None:
                check_extra_args(changes["extra_args"], current.extra_args)
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
        saved = app.registry.snapshot().worker(fields.pop("id") or "")
        if saved is not None:  # editing a saved worker: its masked secrets stand for the stored ones
            fields = keep_masked_secrets(saved, fields)
        return web.json_response(await app.test_connection(_worker("unsaved", fields)))

    @routes.get("/distributed/speeds")
    @reader
    async def speeds(request: web.Request) -> web.Response:
        return web.json_response(app.dispatcher.speeds.snapshot())

    @routes.get("/distributed/jobs")
    @reader
    async def list_jobs(request: web.Request) -> web.Response:
        return web.json_response({"jobs": [job.snapshot() for job in app.dispatcher.jobs()]})

    @routes.get("/distributed/jobs/{job_id}")
    @reader
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
