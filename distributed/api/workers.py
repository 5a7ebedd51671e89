"""Routes that list, add, change and remove workers, and test a worker's connection.

    GET    /distributed/workers                  the registry plus each worker's live status
    POST   /distributed/workers                  add a worker (201)
    PATCH  /distributed/workers/{worker_id}      change the fields given
    DELETE /distributed/workers/{worker_id}      remove a worker (a local one is stopped once removed; the
                                                 entries it manages, a host's workers, go with it; a managed
                                                 entry itself is refused: its host or pool acts on it)
    POST   /distributed/workers/{worker_id}/test check a saved worker through the master
    POST   /distributed/test-connection          the same for unsaved fields

Nothing is changed by a refused request: every write goes through the registry, which validates
the whole file before it writes, and side effects (stopping a removed worker) come after the write.
An entry the master manages (`managed_by`, a host's worker) follows its manager: the API changes only
its `enabled` and never deletes it by hand. A local worker set to listen on the network without a
token gets one here, so it is launched locked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from ..config.models import RegistryFile, WorkerConfig
from ..config.registry import Registry
from ..config.requests import WorkerCreate, WorkerPatch
from ..config.secrets import keep_masked_secrets
from ..config.validation import describe_validation_error
from ..errors import ConfigError, UnknownWorker
from ..workers.local.arguments import ArgumentReader
from ..workers.local.command import with_network_lock
from .access import AccessPolicy
from .bodies import read_body


class RegistryView(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def worker_snapshot(self, worker_id: str) -> dict[str, Any]: ...


def add_worker_routes(
    routes: web.RouteTableDef,
    policy: AccessPolicy,
    registry: Registry,
    views: RegistryView,
    arguments: ArgumentReader,
    removed: Callable[[WorkerConfig], Awaitable[None]],
    test_connection: Callable[[WorkerConfig], Awaitable[dict[str, Any]]],
    master_port: int | None = None,
) -> None:
    """Adds the routes. `removed` runs after a worker was removed from the registry (stops its
    process, drops its connections); `test_connection` checks a worker through the master.
    `master_port` is the master's own port, which no local worker may take."""
    guard, reader = policy.guard, policy.reader

    @routes.get("/distributed/workers")
    @reader
    async def list_workers(request: web.Request) -> web.Response:
        return web.json_response(views.snapshot())

    @routes.post("/distributed/workers")
    @guard
    async def create_worker(request: web.Request) -> web.Response:
        body = await read_body(request, WorkerCreate)
        arguments.check_added(body.extra_args)
        fields = body.model_dump()
        worker_id = fields.pop("id") or registry.new_worker_id(body.name)

        def add(config: RegistryFile) -> RegistryFile:
            if config.worker(worker_id) is not None:
                raise ConfigError(f"id: a worker with id '{worker_id}' exists already", field="id")
            config.workers.append(with_network_lock(not_the_master(validated_worker(worker_id, fields), master_port)))
            return config

        registry.update(add)
        return web.json_response(views.worker_snapshot(worker_id), status=201)

    @routes.patch("/distributed/workers/{worker_id}")
    @guard
    async def patch_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["worker_id"]
        registry.worker(worker_id)
        changes = (await read_body(request, WorkerPatch)).model_dump(exclude_unset=True)

        def edit(config: RegistryFile) -> RegistryFile:
            index = next((i for i, w in enumerate(config.workers) if w.id == worker_id), None)
            if index is None:
                raise UnknownWorker(worker_id)
            current = config.workers[index]
            refuse_managed(current, changes)
            if changes.get("extra_args") is not None:
                arguments.check_added(changes["extra_args"], current.extra_args)
            changed = validated_worker(worker_id, {**current.model_dump(), **keep_masked_secrets(current, changes)})
            config.workers[index] = with_network_lock(not_the_master(changed, master_port))
            return config

        registry.update(edit)
        return web.json_response(views.worker_snapshot(worker_id))

    @routes.delete("/distributed/workers/{worker_id}")
    @guard
    async def delete_worker(request: web.Request) -> web.Response:
        worker_id = request.match_info["worker_id"]
        worker = registry.worker(worker_id)
        refuse_managed(worker, None)
        managed = f"{worker.type}:{worker.id}"
        gone = [worker, *(w for w in registry.snapshot().workers if w.managed_by == managed)]

        def remove(config: RegistryFile) -> RegistryFile:
            if config.worker(worker_id) is None:
                raise UnknownWorker(worker_id)
            config.workers = [w for w in config.workers if w.id != worker_id and w.managed_by != managed]
            return config

        registry.update(remove)
        for entry in gone:
            await removed(entry)
        return web.json_response({"deleted": worker_id})

    @routes.post("/distributed/workers/{worker_id}/test")
    @guard
    async def test_worker(request: web.Request) -> web.Response:
        return web.json_response(await test_connection(registry.worker(request.match_info["worker_id"])))

    @routes.post("/distributed/test-connection")
    @guard
    async def test_unsaved_worker(request: web.Request) -> web.Response:
        fields = (await read_body(request, WorkerCreate)).model_dump()
        saved = registry.snapshot().worker(fields.pop("id") or "")
        if saved is not None:  # editing a saved worker: its masked secrets stand for the stored ones
            fields = keep_masked_secrets(saved, fields)
        return web.json_response(await test_connection(validated_worker("unsaved", fields)))


def not_the_master(worker: WorkerConfig, master_port: int | None) -> WorkerConfig:
    """Refuses a local worker on the master's own port: it would be the master itself."""
    if worker.type == "local" and master_port is not None and worker.port == master_port:
        raise ConfigError(f"port: {master_port} is the master's own port; a local worker needs a port of its own", field="port")
    return worker


MANAGED_EDITABLE = frozenset({"enabled"})
"""What the API may change of a managed entry: whether this master uses it."""


def refuse_managed(worker: WorkerConfig, changes: dict[str, Any] | None) -> None:
    """ConfigError when a request would delete (`changes` None) or edit a managed entry beyond `enabled`."""
    if worker.managed_by is None:
        return
    fixed = None if changes is None else sorted(set(changes) - MANAGED_EDITABLE)
    if fixed == []:
        return
    what = "deleted" if fixed is None else f"edited ({', '.join(fixed)})"
    pool = worker.manager_id("pool")
    how = (f"stop it through its pool (POST /distributed/pools/{pool}/members/{worker.id}/stop, docs/elastic-workers.md)"
           if pool is not None else "act on it through its host (the host's group in the panel, docs/hosts.md)")
    raise ConfigError(f"worker '{worker.name}' is managed by {worker.managed_by} and cannot be {what} by hand; {how}",
                      field=fixed[0] if fixed else "managed_by")


def validated_worker(worker_id: str, fields: dict[str, Any]) -> WorkerConfig:
    """A worker from request fields, checked as workers.json would check it (ConfigError names the field)."""
    try:
        return WorkerConfig.model_validate({**fields, "id": worker_id})
    except ValidationError as error:
        raise describe_validation_error(error) from None
