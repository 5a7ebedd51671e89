"""The pool routes on a real aiohttp app over a real registry file: definitions are validated whole,
refused requests change nothing, and a pool's member is not deleted by hand."""

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
from distributed.api.pools import add_pool_routes
from distributed.api.views import RegistryViews
from distributed.api.workers import add_worker_routes
from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.errors import ProcessError
from distributed.workers.local.arguments import ArgumentReader

POOL = {"name": "cloud", "min": 0, "max": 2, "start_command": ["/opt/pods/start", "{member_id}"],
        "stop_command": ["/opt/pods/stop", "{member_id}"], "budget_hours_per_day": 4}
MEMBER = {"id": "cloud-a1b2c3", "name": "cloud-a1b2c3", "type": "cloud", "url": "https://pod.example", "managed_by": "pool:cloud"}


class FakePools:
    """The pool manager's API face, over the registry: pure bookkeeping, no process is started."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.started: list[str] = []

    def snapshot(self) -> dict[str, Any]:
        pools = [{"name": p.name, "config": p.model_dump(mode="json"), "members": []} for p in self.registry.snapshot().pools]
        return {"revision": 1, "pools": pools}

    async def start_member_now(self, pool_name: str) -> dict[str, Any]:
        if pool_name == "full":
            raise ProcessError("pool 'full' cannot start a member now: at its max of 1 member")
        self.started.append(pool_name)
        return {"id": f"{pool_name}-000001", "state": "starting"}

    async def stop_member_now(self, pool_name: str, member_id: str) -> dict[str, Any]:
        return {"id": member_id, "state": "stopping"}


class Routes:
    def __init__(self, client: TestClient, registry: Registry, pools: FakePools) -> None:
        self.client, self.registry, self.pools = client, registry, pools

    def file(self) -> dict[str, Any]:
        return json.loads(self.registry.path.read_text())


@pytest.fixture
async def routes(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path,
                 comfy_parser: argparse.ArgumentParser) -> Routes:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": [MEMBER], "pools": [POOL]}))
    registry = Registry(path)
    pools = FakePools(registry)

    async def on_removed(worker: WorkerConfig) -> None:
        raise AssertionError("nothing is removed here")

    async def never_tested(worker: WorkerConfig) -> dict[str, Any]:
        raise AssertionError("no connection test here")

    views = RegistryViews(registry, lambda worker_id: {"state": "unknown"}, lambda worker_id: None, lambda worker_id: None)
    table = web.RouteTableDef()
    add_worker_routes(table, AccessPolicy(), registry, views, ArgumentReader(comfy_parser), on_removed, never_tested)
    add_pool_routes(table, AccessPolicy(), registry, pools)
    app = web.Application()
    app.add_routes(table)
    return Routes(await aiohttp_client(app), registry, pools)


async def test_a_pool_is_added_to_workers_json_with_its_defaults(routes: Routes) -> None:
    response = await routes.client.post("/distributed/pools", json={**POOL, "name": "lan", "max": 1})

    assert response.status == 201
    assert (await response.json())["config"]["idle_seconds"] == 600
    assert [pool["name"] for pool in routes.file()["pools"]] == ["cloud", "lan"]


async def test_a_pool_without_a_budget_is_refused_naming_the_field(routes: Routes) -> None:
    body = {key: value for key, value in POOL.items() if key != "budget_hours_per_day"} | {"name": "free"}
    response = await routes.client.post("/distributed/pools", json=body)

    answer = await response.json()
    assert response.status == 400 and answer["field"] == "budget_hours_per_day"
    assert len(routes.file()["pools"]) == 1


async def test_a_shell_line_is_not_a_command(routes: Routes) -> None:
    response = await routes.client.post("/distributed/pools", json={**POOL, "name": "shell", "start_command": "start.sh && echo"})

    assert response.status == 400 and (await response.json())["field"] == "start_command"


async def test_min_above_max_and_a_taken_name_are_refused(routes: Routes) -> None:
    too_many = await routes.client.patch("/distributed/pools/cloud", json={"min": 3})
    taken = await routes.client.post("/distributed/pools", json=POOL)

    assert too_many.status == 400 and (await too_many.json())["field"] == "min"
    assert taken.status == 400 and (await taken.json())["field"] == "name"
    assert routes.file()["pools"] == [POOL]


async def test_a_patch_changes_only_the_fields_given_and_never_the_name(routes: Routes) -> None:
    changed = await routes.client.patch("/distributed/pools/cloud", json={"idle_seconds": 120})
    renamed = await routes.client.patch("/distributed/pools/cloud", json={"name": "other"})

    assert changed.status == 200 and (await changed.json())["config"]["idle_seconds"] == 120
    assert routes.file()["pools"][0]["max"] == 2
    assert renamed.status == 400 and (await renamed.json())["field"] == "name"


async def test_a_pool_cannot_be_changed_while_workers_json_is_invalid(routes: Routes) -> None:
    routes.registry.path.write_text("{ not json")

    response = await routes.client.delete("/distributed/pools/cloud")

    assert response.status == 409
    assert routes.registry.path.read_text() == "{ not json"


async def test_unknown_pools_answer_404(routes: Routes) -> None:
    assert (await routes.client.patch("/distributed/pools/nope", json={"max": 1})).status == 404
    assert (await routes.client.delete("/distributed/pools/nope")).status == 404


async def test_a_start_the_pool_refuses_answers_409_with_its_reason(routes: Routes) -> None:
    started = await routes.client.post("/distributed/pools/cloud/start")
    refused = await routes.client.post("/distributed/pools/full/start")

    assert started.status == 202 and routes.pools.started == ["cloud"]
    assert refused.status == 409 and "at its max" in (await refused.json())["error"]


async def test_another_web_origin_cannot_start_or_stop_members(routes: Routes) -> None:
    foreign = {"Origin": "http://evil.example", "X-Distributed-Request": "1"}

    start = await routes.client.post("/distributed/pools/cloud/start", headers=foreign)
    stop = await routes.client.post("/distributed/pools/cloud/members/cloud-a1b2c3/stop", headers=foreign)
    create = await routes.client.post("/distributed/pools", json={**POOL, "name": "evil"}, headers=foreign)

    assert (start.status, stop.status, create.status) == (403, 403, 403)
    assert routes.pools.started == [] and len(routes.file()["pools"]) == 1


async def test_a_pools_member_is_not_deleted_by_hand(routes: Routes) -> None:
    response = await routes.client.delete("/distributed/workers/cloud-a1b2c3")

    answer = await response.json()
    assert response.status == 400 and answer["field"] == "managed_by"
    assert "/distributed/pools/cloud/members/cloud-a1b2c3/stop" in answer["error"]
    assert [w["id"] for w in routes.file()["workers"]] == ["cloud-a1b2c3"]


async def test_a_worker_cannot_be_made_a_pools_member_through_the_api(routes: Routes) -> None:
    response = await routes.client.post("/distributed/workers", json={"name": "sneaky", "type": "cloud", "url": "https://x.example",
                                                                      "managed_by": "pool:cloud"})

    assert response.status == 400 and (await response.json())["field"] == "managed_by"
