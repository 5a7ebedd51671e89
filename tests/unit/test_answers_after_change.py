"""Answers and events describe the state after the change they report (issue 13.5), and a master
cannot be made its own worker (issue 13.2): the real routes, registry and health monitor."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from distributed.api.access import AccessPolicy
from distributed.api.config import add_config_routes
from distributed.api.identity import add_identity_route
from distributed.api.views import RegistryViews
from distributed.api.workers import add_worker_routes
from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.workers.health import SELF_ERROR, HealthMonitor
from distributed.workers.local.arguments import ArgumentReader
from distributed.workers.pool import ClientPool
from distributed.workers.status import WorkerState, WorkerStatus
from tests.harness import free_port, wait_until_async
from tests.unit.dispatch_fakes import Pushes

MASTER_PORT = 8188


@dataclass
class Api:
    client: TestClient
    registry: Registry
    health: HealthMonitor
    pushes: Pushes


@pytest.fixture
async def api(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path,
              comfy_parser: argparse.ArgumentParser) -> AsyncIterator[Api]:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": [
        {"id": "w1", "name": "Worker 1", "type": "remote", "host": "127.0.0.1", "port": free_port()},
        {"id": "w2", "name": "Worker 2", "type": "remote", "host": "127.0.0.1", "port": free_port()},
        {"id": "l1", "name": "Local 1", "type": "local", "host": "127.0.0.1", "port": 8190},
    ]}))
    registry, pushes = Registry(path), Pushes()
    health = HealthMonitor(registry, ClientPool(), pushes.events())
    views = RegistryViews(registry, lambda worker_id: health.status(worker_id).as_json(), lambda worker_id: None, lambda worker_id: None)
    registry.subscribe(lambda config: pushes.events().registry_changed(views.snapshot()))  # as the app does

    async def never(worker: WorkerConfig) -> Any:
        raise AssertionError("not called here")

    table = web.RouteTableDef()
    add_worker_routes(table, AccessPolicy(), registry, views, ArgumentReader(comfy_parser), never, never, master_port=MASTER_PORT)
    add_config_routes(table, AccessPolicy(), registry, views.snapshot)
    app = web.Application()
    app.add_routes(table)
    for worker_id in ("w1", "w2"):
        health.set_status(worker_id, WorkerStatus(WorkerState.BUSY, queue_remaining=1))
    polling = asyncio.ensure_future(health.run())
    try:
        yield Api(await aiohttp_client(app), registry, health, pushes)
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        await health.stop()


def _states(body: dict[str, Any]) -> dict[str, str]:
    return {worker["id"]: worker["status"]["state"] for worker in body["workers"]}


async def test_disabling_a_busy_worker_answers_disabled_and_pushes_disabled(api: Api) -> None:
    response = await api.client.patch("/distributed/workers/w1", json={"enabled": False})

    assert response.status == 200
    assert (await response.json())["status"]["state"] == "disabled"
    assert _states(api.pushes.of("distributed.registry_changed")[-1])["w1"] == "disabled"


async def test_a_config_change_right_after_re_enabling_lists_no_worker_as_disabled(api: Api) -> None:
    for worker_id in ("w1", "w2"):
        await api.client.patch(f"/distributed/workers/{worker_id}", json={"enabled": False})
    await wait_until_async(lambda: {api.health.status(w).state for w in ("w1", "w2")} == {WorkerState.DISABLED}, 5)
    for worker_id in ("w1", "w2"):
        answer = await (await api.client.patch(f"/distributed/workers/{worker_id}", json={"enabled": True})).json()
        assert answer["status"]["state"] != "disabled"

    body = await (await api.client.patch("/distributed/config", json={"settings": {"health_interval": 1.0}})).json()

    assert _states(body)["w1"] != "disabled" and _states(body)["w2"] != "disabled"


async def test_a_local_worker_on_the_masters_port_is_refused_naming_the_port(api: Api) -> None:
    before = api.registry.path.read_bytes()

    created = await api.client.post("/distributed/workers", json={"name": "Me", "type": "local", "port": MASTER_PORT})
    moved = await api.client.patch("/distributed/workers/l1", json={"port": MASTER_PORT})

    assert created.status == 400 and (await created.json())["field"] == "port"
    assert moved.status == 400 and (await moved.json())["field"] == "port"
    assert api.registry.path.read_bytes() == before


async def _identity_server(master_id: str | None) -> TestServer:
    """A ComfyUI running this extension, as far as a health probe looks."""
    table = web.RouteTableDef()
    add_identity_route(table, master_id)

    @table.get("/system_stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"system": {"os": "posix"}, "devices": []})

    @table.get("/prompt")
    async def queue(request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": 0}})

    app = web.Application()
    app.add_routes(table)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.mark.parametrize(("answers", "state"), [("m1", WorkerState.ERROR), ("another-master", WorkerState.ONLINE),
                                                (None, WorkerState.ONLINE)])
async def test_an_address_answering_with_the_masters_own_id_is_the_master_and_never_online(
    tmp_path: Path, answers: str | None, state: WorkerState,
) -> None:
    server = await _identity_server(answers)
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": [
        {"id": "me", "name": "Me", "type": "remote", "host": "127.0.0.1", "port": server.port}]}))
    registry, clients = Registry(path), ClientPool()
    health = HealthMonitor(registry, clients, Pushes().events(), master_id="m1")
    try:
        status = await health.check(registry.worker("me"))
    finally:
        await clients.close()
        await server.close()

    assert status.state == state and health.status("me").state == state
    assert (status.error == SELF_ERROR) == (state == WorkerState.ERROR)
