"""Routes for elastic pools (docs/elastic-workers.md): define them, watch them, start or stop a member.

    GET    /distributed/pools                                  every pool: members, hours used, last failure
    POST   /distributed/pools                                  add a pool (201)
    PATCH  /distributed/pools/{name}                           change the fields given (a pool keeps its name)
    DELETE /distributed/pools/{name}                           remove a pool; its members are stopped
    POST   /distributed/pools/{name}/start                     start a member now (202): only max and the budget apply
    POST   /distributed/pools/{name}/members/{member_id}/stop  stop a member now (202), once its share is done

A pool's commands run programs on this machine, so every route that changes something is guarded
by the access policy (foreign-origin check, token). Definitions go through the registry, which
validates the whole file before it writes; members are started and stopped by the pool manager.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from ..config.models import PoolConfig, RegistryFile
from ..config.registry import Registry
from ..config.requests import PoolPatch
from ..config.validation import describe_validation_error
from ..errors import ConfigError, UnknownPool
from .access import AccessPolicy
from .bodies import read_body


class Pools(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    async def start_member_now(self, pool_name: str) -> dict[str, Any]: ...

    async def stop_member_now(self, pool_name: str, member_id: str) -> dict[str, Any]: ...


def add_pool_routes(routes: web.RouteTableDef, policy: AccessPolicy, registry: Registry, pools: Pools) -> None:
    guard, reader = policy.guard, policy.reader

    def pool_view(name: str) -> dict[str, Any]:
        """One pool, with the revision of the snapshot it was read from (the panel keeps the newer)."""
        snapshot = pools.snapshot()
        view = next((pool for pool in snapshot["pools"] if pool["name"] == name), None)
        if view is None:
            raise UnknownPool(name)
        return {**view, "revision": snapshot["revision"]}

    @routes.get("/distributed/pools")
    @reader
    async def list_pools(request: web.Request) -> web.Response:
        return web.json_response(pools.snapshot())

    @routes.post("/distributed/pools")
    @guard
    async def create_pool(request: web.Request) -> web.Response:
        pool = await read_body(request, PoolConfig)

        def add(config: RegistryFile) -> RegistryFile:
            if config.pool(pool.name) is not None:
                raise ConfigError(f"name: a pool named '{pool.name}' exists already", field="name")
            config.pools.append(pool)
            return config

        registry.update(add)
        return web.json_response(pool_view(pool.name), status=201)

    @routes.patch("/distributed/pools/{name}")
    @guard
    async def patch_pool(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if registry.snapshot().pool(name) is None:
            raise UnknownPool(name)
        changes = (await read_body(request, PoolPatch)).model_dump(exclude_unset=True)

        def edit(config: RegistryFile) -> RegistryFile:
            current = config.pool(name)
            if current is None:
                raise UnknownPool(name)
            try:
                changed = PoolConfig.model_validate({**current.model_dump(), **changes})
            except ValidationError as error:
                raise describe_validation_error(error) from None
            config.pools = [changed if pool.name == name else pool for pool in config.pools]
            return config

        registry.update(edit)
        return web.json_response(pool_view(name))

    @routes.delete("/distributed/pools/{name}")
    @guard
    async def delete_pool(request: web.Request) -> web.Response:
        name = request.match_info["name"]

        def remove(config: RegistryFile) -> RegistryFile:
            if config.pool(name) is None:
                raise UnknownPool(name)
            config.pools = [pool for pool in config.pools if pool.name != name]
            return config

        registry.update(remove)
        return web.json_response({"deleted": name})

    @routes.post("/distributed/pools/{name}/start")
    @guard
    async def start_member(request: web.Request) -> web.Response:
        return web.json_response(await pools.start_member_now(request.match_info["name"]), status=202)

    @routes.post("/distributed/pools/{name}/members/{member_id}/stop")
    @guard
    async def stop_member(request: web.Request) -> web.Response:
        member = await pools.stop_member_now(request.match_info["name"], request.match_info["member_id"])
        return web.json_response(member, status=202)
