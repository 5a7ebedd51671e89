"""PATCH /distributed/config: the master's own settings and the settings shared by every job."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..config.models import RegistryFile
from ..config.registry import Registry
from ..config.requests import ConfigPatch
from .access import AccessPolicy
from .bodies import read_body


def add_config_routes(routes: web.RouteTableDef, policy: AccessPolicy, registry: Registry,
                      snapshot: Callable[[], dict[str, Any]]) -> None:
    """Adds the route; `snapshot` renders the answer as GET /distributed/workers does."""

    @routes.patch("/distributed/config")
    @policy.guard
    async def patch_config(request: web.Request) -> web.Response:
        patch = await read_body(request, ConfigPatch)

        def edit(config: RegistryFile) -> RegistryFile:
            if patch.master is not None:
                config.master = config.master.model_copy(update=patch.master.model_dump(exclude_unset=True))
            if patch.settings is not None:
                config.settings = config.settings.model_copy(update=patch.settings.model_dump(exclude_unset=True))
            return config

        registry.update(edit)
        return web.json_response(snapshot())
