"""The worker routes on a real aiohttp app over a real registry file: refused requests change nothing."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.api.access import AccessPolicy
from distributed.api.views import RegistryViews
from distributed.api.workers import add_worker_routes
from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.workers.local.arguments import ArgumentReader

LOCAL = {"id": "l1", "name": "Local 1", "type": "local", "host": "127.0.0.1", "port": 8190}


class Routes:
    def __init__(self, client: TestClient, registry: Registry, removed: list[str]) -> None:
        self.client = client
        self.registry = registry
        self.removed = removed


@pytest.fixture
async def routes(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path,
                 comfy_parser: argparse.ArgumentParser) -> Routes:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": [LOCAL]}))
    registry = Registry(path)
    removed: list[str] = []

    async def on_removed(worker: WorkerConfig) -> None:
        removed.append(worker.id)

    async def never_tested(worker: WorkerConfig) -> dict[str, Any]:
        raise AssertionError("no connection test here")

    views = RegistryViews(registry, lambda worker_id: {"state": "unknown"}, lambda worker_id: None, lambda worker_id: None)
    table = web.RouteTableDef()
    add_worker_routes(table, AccessPolicy(), registry, views, ArgumentReader(comfy_parser), on_removed, never_tested)
    app = web.Application()
    app.add_routes(table)
    return Routes(await aiohttp_client(app), registry, removed)


async def test_a_refused_delete_leaves_the_worker_and_its_process_alone(routes: Routes) -> None:
    routes.registry.path.write_text("{ not json")  # a hand edit gone wrong: writes are refused

    response = await routes.client.delete("/distributed/workers/l1")

    assert response.status == 409
    assert routes.removed == []  # its process was not stopped
    assert routes.registry.path.read_text() == "{ not json"


async def test_a_delete_removes_the_worker_then_stops_it(routes: Routes) -> None:
    response = await routes.client.delete("/distributed/workers/l1")

    assert response.status == 200
    assert routes.removed == ["l1"]
    assert routes.registry.snapshot().workers == []


async def test_a_second_local_worker_on_a_taken_port_is_refused_naming_the_field(routes: Routes) -> None:
    response = await routes.client.post("/distributed/workers", json={**LOCAL, "id": "l2", "name": "Local 2"})

    body = await response.json()
    assert response.status == 400
    assert "both use port 8190" in body["error"] and body["field"] == "workers"
    assert [w.id for w in routes.registry.snapshot().workers] == ["l1"]


async def test_bodies_keep_the_saved_limits(routes: Routes) -> None:
    for body, field in (({"name": "x", "port": 0}, "port"), ({"name": ""}, "name"), ({"name": "x", "id": "bad id!"}, "id")):
        response = await routes.client.post("/distributed/workers", json=body)

        assert response.status == 400 and (await response.json())["field"] == field
    response = await routes.client.patch("/distributed/workers/l1", json={"cuda_device": -1})
    assert response.status == 400 and (await response.json())["field"] == "cuda_device"
