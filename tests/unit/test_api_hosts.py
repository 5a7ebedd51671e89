"""The worker and host routes where hosts are concerned, on real aiohttp apps over a real registry file.

Managed entries follow their host; a local worker set to listen on the network is locked; the
panel's actions on a host's worker reach the host (here a second app with the host-side routes over
its own registry, as a host's ComfyUI serves them) and its refusals come back naming the field.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from distributed.api.access import AccessPolicy
from distributed.api.host import add_host_side_routes
from distributed.api.hosts import add_host_routes
from distributed.api.views import RegistryViews
from distributed.api.workers import add_worker_routes
from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.events import Events
from distributed.workers.health import HealthMonitor
from distributed.workers.hosts.inventory import HostInventory
from distributed.workers.hosts.relay import HostRelay
from distributed.workers.hosts.sync import HostSync
from distributed.workers.local.arguments import ArgumentReader
from distributed.workers.local.gpus import Gpu, GpuInventory, MasterDevice
from distributed.workers.pool import ClientPool

TOKEN = "host-token-0123456789"
HOST = {"id": "box", "name": "Box", "type": "host", "host": "192.168.1.30", "port": 8188, "auth_token": TOKEN}
MANAGED = {"id": "box.g1", "name": "Box / GPU 1", "type": "remote", "host": "192.168.1.30", "port": 8189,
           "auth_token": "lock-0123456789", "managed_by": "host:box"}
LOCAL = {"id": "l1", "name": "Local 1", "type": "local", "port": 8190}


def _registry(path: Path, *workers: dict[str, Any]) -> Registry:
    path.write_text(json.dumps({"version": 1, "workers": list(workers)}))
    return Registry(path)


def _views(registry: Registry) -> RegistryViews:
    return RegistryViews(registry, lambda worker_id: {"state": "stopped", "error": None}, lambda worker_id: None, lambda worker_id: None)


@pytest.fixture
async def master(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], tmp_path: Path,
                 comfy_parser: argparse.ArgumentParser) -> tuple[TestClient, Registry, list[str]]:
    registry = _registry(tmp_path / "workers.json", HOST, MANAGED, LOCAL)
    removed: list[str] = []

    async def on_removed(worker: WorkerConfig) -> None:
        removed.append(worker.id)

    async def never_tested(worker: WorkerConfig) -> dict[str, Any]:
        raise AssertionError("no connection test here")

    table = web.RouteTableDef()
    add_worker_routes(table, AccessPolicy(), registry, _views(registry), ArgumentReader(comfy_parser), on_removed, never_tested)
    app = web.Application()
    app.add_routes(table)
    return await aiohttp_client(app), registry, removed


async def test_a_managed_entry_may_be_disabled_here_but_not_edited_otherwise(master: tuple[TestClient, Registry, list[str]]) -> None:
    client, registry, _ = master

    disabled = await client.patch("/distributed/workers/box.g1", json={"enabled": False})
    moved = await client.patch("/distributed/workers/box.g1", json={"enabled": True, "host": "10.6.6.6"})

    assert disabled.status == 200 and registry.worker("box.g1").enabled is False
    body = await moved.json()
    assert moved.status == 400 and body["field"] == "host" and "managed by host:box" in body["error"]
    assert registry.worker("box.g1").host == "192.168.1.30"


async def test_a_managed_entry_is_not_deleted_by_hand_but_goes_with_its_host(master: tuple[TestClient, Registry, list[str]]) -> None:
    client, registry, removed = master

    refused = await client.delete("/distributed/workers/box.g1")
    assert refused.status == 400 and registry.snapshot().worker("box.g1") is not None

    deleted = await client.delete("/distributed/workers/box")

    assert deleted.status == 200
    assert [w.id for w in registry.snapshot().workers] == ["l1"] and removed == ["box", "box.g1"]


async def test_no_request_body_may_name_a_manager(master: tuple[TestClient, Registry, list[str]]) -> None:
    client, registry, _ = master

    created = await client.post("/distributed/workers", json={"name": "Fake", "host": "10.0.0.9", "port": 8188, "managed_by": "host:box"})
    patched = await client.patch("/distributed/workers/l1", json={"managed_by": "host:box"})

    assert (created.status, (await created.json())["field"]) == (400, "managed_by")
    assert (patched.status, (await patched.json())["field"]) == (400, "managed_by")
    assert registry.worker("l1").managed_by is None


async def test_a_local_worker_set_to_listen_on_the_network_is_given_a_lock_shown_masked(
        master: tuple[TestClient, Registry, list[str]]) -> None:
    client, registry, _ = master

    patched = await client.patch("/distributed/workers/l1", json={"listen": "network"})
    created = await client.post("/distributed/workers", json={"name": "Net", "type": "local", "port": 8191, "listen": "network"})

    assert patched.status == 200 and created.status == 201
    for worker_id, answer in (("l1", patched), ("net", created)):
        token = registry.worker(worker_id).auth_token
        assert token and (await answer.json())["auth_token"] == "\u2022\u2022\u2022\u2022" + token[-4:]


def test_a_host_needs_its_token() -> None:
    with pytest.raises(ValueError, match="a host needs its API token"):
        WorkerConfig(**{**HOST, "auth_token": None})


# --- the panel's actions, carried to a host ---------------------------------------------------------------------


async def test_an_action_the_host_refuses_comes_back_naming_its_field_and_a_good_one_answers_the_fresh_view(
        aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], aiohttp_server: Callable[..., Awaitable[TestServer]],
        tmp_path: Path) -> None:
    host_registry = _registry(tmp_path / "host.json")
    host_table = web.RouteTableDef()
    inventory = HostInventory(host_registry, lambda worker_id: {"state": "stopped", "error": None}, MasterDevice(), 8188,
                              discover=lambda: GpuInventory((Gpu(0, "RTX A", 1 << 30, "GPU-a"), Gpu(1, "RTX B", 1 << 30, "GPU-b"))),
                              is_free=lambda port, host: True)
    add_host_side_routes(host_table, AccessPolicy(TOKEN), inventory, _views(host_registry))
    host_app = web.Application()
    host_app.add_routes(host_table)
    host = await aiohttp_server(host_app)

    registry = _registry(tmp_path / "workers.json", {**HOST, "host": "127.0.0.1", "port": host.port})
    clients = ClientPool()
    sync = HostSync(registry, clients, HealthMonitor(registry, clients, Events(lambda event, payload: None)), lambda: None)
    table = web.RouteTableDef()
    add_host_routes(table, AccessPolicy(), registry, sync, HostRelay(clients))
    app = web.Application()
    app.add_routes(table)
    client = await aiohttp_client(app)
    try:
        refused = await client.post("/distributed/hosts/box/workers", json={"cuda_device": 0, "listen": "network"})
        added = await client.post("/distributed/hosts/box/workers", json={"cuda_device": 1, "listen": "network"})

        body = await refused.json()
        assert refused.status == 400 and body["field"] == "cuda_device" and body["error"].startswith("host 'Box': ")
        view = (await added.json())["host"]
        assert added.status == 201 and [(w["id"], w["managed_id"]) for w in view["workers"]] == [("gpu1", "box.gpu1")]
        assert [(gpu["index"], gpu["used_by"]) for gpu in view["gpus"]] == [(0, "master"), (1, "gpu1")]
        assert registry.worker("box.gpu1").auth_token == host_registry.worker("gpu1").auth_token
    finally:
        await sync.stop()
        await clients.close()
