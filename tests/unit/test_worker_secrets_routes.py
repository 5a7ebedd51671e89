"""A saved worker's secrets go only to the address they were saved for, through the routes a panel uses.

The masked view (GET /distributed/workers) is all a reader of the API sees; sending it back with a new
address must not make the master send the real token or header values there. A small fake server
stands at the new address and records what reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from distributed.api.access import AccessPolicy
from distributed.api.views import RegistryViews
from distributed.api.workers import add_worker_routes
from distributed.config.models import RegistryFile, WorkerConfig
from distributed.config.registry import Registry
from distributed.workers.diagnostics import test_connection as check_connection
from distributed.workers.local.arguments import ArgumentReader

TOKEN = "saved-token-0123456789"
HEADER_SECRET = "cf-secret-0123456789"


def _recording_server(seen: list[dict[str, str]]) -> web.Application:
    async def stats(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"system": {"comfyui_version": "0.3.75"}, "devices": []})

    app = web.Application()
    app.router.add_get("/system_stats", stats)
    return app


@pytest.fixture
async def api(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path,
              comfy_parser: object) -> tuple[TestClient, Registry]:
    registry = Registry(tmp_path / "workers.json")

    def add(config: RegistryFile) -> RegistryFile:
        config.workers.append(WorkerConfig(id="w", name="Saved", host="127.0.0.1", port=1, auth_token=TOKEN,
                                           headers={"CF-Access-Client-Secret": HEADER_SECRET}))
        return config

    registry.update(add)
    views = RegistryViews(registry, status_json=lambda worker_id: {}, relative_speed=lambda worker_id: None,
                          result_link=lambda worker_id: None)

    async def removed(worker: WorkerConfig) -> None:
        return None

    routes = web.RouteTableDef()
    add_worker_routes(routes, AccessPolicy(), registry, views, ArgumentReader(comfy_parser), removed, check_connection)
    app = web.Application()
    app.add_routes(routes)
    return await aiohttp_client(app), registry


async def _masked(client: TestClient) -> dict:
    return next(worker for worker in (await (await client.get("/distributed/workers")).json())["workers"] if worker["id"] == "w")


async def test_test_connection_to_a_new_address_with_the_masked_secrets_sends_them_nowhere(
    api: tuple[TestClient, Registry], aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> None:
    client, _ = api
    seen: list[dict[str, str]] = []
    elsewhere = await aiohttp_server(_recording_server(seen))
    masked = await _masked(client)

    response = await client.post("/distributed/test-connection", json={
        "id": "w", "name": "Saved", "type": "remote", "host": "127.0.0.1", "port": elsewhere.port,
        "auth_token": masked["auth_token"], "headers": masked["headers"],
    })

    assert response.status == 400 and (await response.json())["field"] == "auth_token"
    assert all(TOKEN not in json.dumps(headers) and HEADER_SECRET not in json.dumps(headers) for headers in seen)


async def test_patch_moving_a_worker_with_its_masked_token_is_refused_and_changes_nothing(api: tuple[TestClient, Registry]) -> None:
    client, registry = api
    before = registry.path.read_bytes()
    masked = await _masked(client)

    response = await client.patch("/distributed/workers/w", json={"port": 2, "auth_token": masked["auth_token"]})

    assert response.status == 400 and (await response.json())["field"] == "auth_token"
    assert registry.path.read_bytes() == before


async def test_patch_keeping_the_address_keeps_the_masked_secrets(api: tuple[TestClient, Registry]) -> None:
    client, registry = api
    masked = await _masked(client)

    response = await client.patch("/distributed/workers/w", json={"name": "Renamed", "auth_token": masked["auth_token"],
                                                                   "headers": masked["headers"]})

    assert response.status == 200
    saved = registry.snapshot().worker("w")
    assert saved is not None and saved.auth_token == TOKEN and saved.headers == {"CF-Access-Client-Secret": HEADER_SECRET}
