"""Hosts: the managed entries a host's report becomes, what a host tells, and what a host may refuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from distributed.config.models import RegistryFile, WorkerConfig
from distributed.config.registry import Registry
from distributed.errors import ConfigError
from distributed.events import Events
from distributed.workers.health import HealthMonitor
from distributed.workers.hosts.inventory import HostInventory
from distributed.workers.hosts.report import HostReport
from distributed.workers.hosts.sync import HostSync, managed_id, reconcile, without_orphans
from distributed.workers.local.gpus import Gpu, GpuInventory, MasterDevice
from distributed.workers.pool import ClientPool
from distributed.workers.status import WorkerState
from tests.harness import wait_until_async

TOKEN = "host-token-0123456789"
LOCK = "worker-lock-0123456789"
HOST = WorkerConfig(id="box", name="Box", type="host", host="192.168.1.30", port=8188, auth_token=TOKEN)


def _reported(worker_id: str, port: int, listen: str = "network", state: str = "online", **fields: Any) -> dict[str, Any]:
    return {"id": worker_id, "name": f"GPU {worker_id}", "port": port, "cuda_device": None, "listen": listen, "enabled": True,
            "state": state, "error": None, "auth_token": LOCK if listen == "network" else None, **fields}


def _report(*workers: dict[str, Any]) -> HostReport:
    return HostReport.model_validate({"version": 1, "gpus": [], "workers": list(workers)})


def _config(*workers: WorkerConfig) -> RegistryFile:
    return RegistryFile(workers=[HOST, *workers])


# --- the registry entries a report becomes --------------------------------------------------------------------


def test_each_network_worker_of_the_host_becomes_a_remote_entry_at_the_hosts_address() -> None:
    config, problems = reconcile(_config(), HOST, _report(_reported("g0", 8189), _reported("g1", 8190, listen="loopback")))

    entry = config.worker("box.g0")
    assert problems == [] and [w.id for w in config.workers] == ["box", "box.g0"]
    assert (entry.type, entry.host, entry.port, entry.auth_token, entry.managed_by) == ("remote", "192.168.1.30", 8189, LOCK, "host:box")
    assert entry.base_url == "http://192.168.1.30:8189"


def test_an_entry_keeps_its_place_and_the_users_enabled_and_follows_the_hosts_port() -> None:
    first, _ = reconcile(_config(WorkerConfig(id="lan", name="LAN", port=8188)), HOST, _report(_reported("g0", 8189)))
    first.workers[2] = first.workers[2].model_copy(update={"enabled": False})
    first.workers.append(WorkerConfig(id="later", name="Later", port=8200))

    second, _ = reconcile(first, HOST, _report(_reported("g0", 8191)))

    assert [w.id for w in second.workers] == ["box", "lan", "box.g0", "later"]
    assert (second.worker("box.g0").enabled, second.worker("box.g0").port) == (False, 8191)


def test_a_worker_gone_from_the_host_or_back_on_loopback_loses_its_entry() -> None:
    config, _ = reconcile(_config(), HOST, _report(_reported("g0", 8189), _reported("g1", 8190)))

    config, _ = reconcile(config, HOST, _report(_reported("g1", 8190, listen="loopback")))

    assert [w.id for w in config.workers] == ["box"]


def test_a_host_worker_whose_id_here_is_taken_is_left_out_and_named() -> None:
    taken = WorkerConfig(id="box.g0", name="Mine", port=9000)

    config, problems = reconcile(_config(taken), HOST, _report(_reported("g0", 8189)))

    assert config.worker("box.g0") == taken
    assert len(problems) == 1 and "'box.g0' belongs to another worker" in problems[0]


def test_entries_of_a_host_deleted_or_disabled_go_but_others_managed_entries_stay() -> None:
    config, _ = reconcile(_config(), HOST, _report(_reported("g0", 8189)))
    pooled = WorkerConfig(id="p1", name="Pool member", port=8300, managed_by="pool:farm")
    config.workers.append(pooled)
    assert without_orphans(config) is config

    config.workers[0] = HOST.model_copy(update={"enabled": False})

    assert [w.id for w in without_orphans(config).workers] == ["box", "p1"]


def test_a_long_managed_id_is_shortened_to_a_valid_distinct_id() -> None:
    long_host, worker = "h" * 60, "w" * 60
    shortened = managed_id(long_host, worker)

    assert len(shortened) == 64 and shortened != managed_id(long_host, worker + "x")
    WorkerConfig(id=shortened, name="x", port=1)


# --- what a host tells, read as untrusted ---------------------------------------------------------------------


@pytest.mark.parametrize("spoiled", [
    {"auth_token": "abc\r\nX-Injected: 1"},
    {"state": "haunted"},
    {"id": "../etc"},
    {"name": ""},
    {"error": "x" * 5000},
])
def test_a_report_with_a_bad_worker_is_refused(spoiled: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _report(_reported("g0", 8189, **spoiled))


def test_a_report_with_too_many_workers_is_refused_and_unknown_keys_are_ignored() -> None:
    with pytest.raises(ValidationError):
        _report(*(_reported(f"g{i}", 9000 + i) for i in range(65)))
    assert _report({**_reported("g0", 8189), "future_field": 1}).workers[0].id == "g0"


# --- the host's side: its report and one more worker per GPU --------------------------------------------------

GPUS = GpuInventory((Gpu(0, "RTX A", 24 << 30, "GPU-a"), Gpu(1, "RTX B", 24 << 30, "GPU-b"), Gpu(2, "RTX C", 24 << 30, "GPU-c")))


def _registry(tmp_path: Path, *workers: dict[str, Any]) -> Registry:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": list(workers)}))
    return Registry(path)


def _inventory(registry: Registry, gpus: GpuInventory = GPUS) -> HostInventory:
    """A host whose own ComfyUI renders on GPU 0 (CUDA's default), on port 8188, where every port is free."""
    return HostInventory(registry, lambda worker_id: {"state": "stopped", "error": None}, MasterDevice(), 8188,
                         discover=lambda: gpus, is_free=lambda port, host: True)


async def test_a_worker_added_on_a_free_gpu_takes_a_free_port_and_is_locked_when_it_listens_on_the_network(tmp_path: Path) -> None:
    registry = _registry(tmp_path, {"id": "gpu1", "name": "GPU 1", "type": "local", "port": 8189, "cuda_device": 1})

    added = await _inventory(registry).add_worker(2, "network")

    assert (added.id, added.cuda_device, added.port, added.listen) == ("gpu2", 2, 8190, "network")
    assert added.auth_token and registry.snapshot().worker("gpu2") == added


@pytest.mark.parametrize(("cuda_device", "refusal"), [
    (0, "the one this host's own ComfyUI renders on"),
    (1, "has a worker already, 'GPU 1'"),
    (7, r"this host has no GPU 7 \(its GPUs are 0, 1, 2\)"),
    (None, "this host has GPUs"),
])
async def test_a_gpu_that_is_not_free_is_refused_and_nothing_is_written(tmp_path: Path, cuda_device: int | None, refusal: str) -> None:
    registry = _registry(tmp_path, {"id": "gpu1", "name": "GPU 1", "type": "local", "port": 8189, "cuda_device": 1})
    before = registry.path.read_text()

    with pytest.raises(ConfigError, match=refusal) as refused:
        await _inventory(registry).add_worker(cuda_device, "loopback")

    assert refused.value.field == "cuda_device" and registry.path.read_text() == before


async def test_a_host_without_gpus_gets_a_cpu_worker(tmp_path: Path) -> None:
    registry = _registry(tmp_path)

    added = await _inventory(registry, GpuInventory((), "no NVIDIA driver found")).add_worker(None, "loopback")

    assert (added.id, added.cuda_device, added.auth_token) == ("cpu", None, None)


async def test_the_report_says_who_uses_each_gpu_and_carries_only_network_workers_tokens(tmp_path: Path) -> None:
    registry = _registry(tmp_path, {"id": "gpu1", "name": "GPU 1", "type": "local", "port": 8189, "cuda_device": 1},
                         {"id": "gpu2", "name": "GPU 2", "type": "local", "port": 8190, "cuda_device": 2, "listen": "network",
                          "auth_token": LOCK},
                         {"id": "lan", "name": "LAN", "type": "remote", "host": "10.0.0.2", "port": 8188, "auth_token": TOKEN})

    report = HostReport.model_validate(await _inventory(registry).report())

    assert [(gpu.index, gpu.used_by) for gpu in report.gpus] == [(0, "master"), (1, "gpu1"), (2, "gpu2")]
    assert report.master_gpu == 0
    assert [(w.id, w.auth_token) for w in report.workers] == [("gpu1", None), ("gpu2", LOCK)]


# --- the managing master's side, against a host answering over HTTP --------------------------------------------

Serve = Callable[[web.Application], Awaitable[TestServer]]


class Host:
    """The one route a managing master polls; `answer` is what it says next."""

    def __init__(self) -> None:
        self.answer: tuple[int, Any] = (200, {"version": 1, "workers": []})
        self.authorizations: list[str | None] = []

    def app(self) -> web.Application:
        async def report(request: web.Request) -> web.Response:
            self.authorizations.append(request.headers.get("Authorization"))
            status, body = self.answer
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/distributed/host", report)
        return app


async def _sync(tmp_path: Path, aiohttp_server: Serve, host: Host) -> tuple[HostSync, Registry, ClientPool]:
    server = await aiohttp_server(host.app())
    registry = _registry(tmp_path, HOST.model_copy(update={"host": "127.0.0.1", "port": server.port}).model_dump())
    clients = ClientPool()
    health = HealthMonitor(registry, clients, Events(lambda event, payload: None))
    sync = HostSync(registry, clients, health, on_change=lambda: None)
    health.set_override(sync.status_override)
    return sync, registry, clients


async def test_a_host_is_asked_with_its_token_and_its_stopped_worker_shows_stopped_here(tmp_path: Path, aiohttp_server: Serve) -> None:
    host = Host()
    host.answer = (200, {"version": 1, "workers": [_reported("g0", 8189, state="stopped")]})
    sync, registry, clients = await _sync(tmp_path, aiohttp_server, host)
    try:
        await sync.refresh(registry.worker("box"))

        assert host.authorizations == [f"Bearer {TOKEN}"]
        assert sync.status_override("box").state == WorkerState.CONNECTED
        assert sync.status_override("box.g0").state == WorkerState.STOPPED
        assert registry.worker("box.g0").host == "127.0.0.1"
    finally:
        await sync.stop()
        await clients.close()


@pytest.mark.parametrize(("answer", "reason"), [
    ((200, {"version": 1, "workers": [_reported("g0", 8189, auth_token="a\nb")]}), "not understood: workers.0.auth_token"),
    ((404, {"error": "Not Found"}), "does not run this extension"),
    ((401, {"error": "wrong API token"}), "refused this entry's token"),
    ((403, {"error": "requests for host 'studio.lan' are refused"}), "the host refused /distributed/host (403: requests for host"),
    ((200, [[[]]]), "not understood"),
])
async def test_a_host_that_answers_badly_is_shown_in_error_and_changes_nothing_here(
        tmp_path: Path, aiohttp_server: Serve, answer: tuple[int, Any], reason: str) -> None:
    host = Host()
    host.answer = answer
    sync, registry, clients = await _sync(tmp_path, aiohttp_server, host)
    before = registry.path.read_text()
    try:
        await sync.refresh(registry.worker("box"))

        status = sync.status_override("box")
        assert status.state == WorkerState.ERROR and reason in status.error
        assert registry.path.read_text() == before
    finally:
        await sync.stop()
        await clients.close()


async def test_the_entries_of_a_host_deleted_by_hand_go_with_it(tmp_path: Path, aiohttp_server: Serve) -> None:
    host = Host()
    host.answer = (200, {"version": 1, "workers": [_reported("g0", 8189)]})
    sync, registry, clients = await _sync(tmp_path, aiohttp_server, host)
    running = asyncio.ensure_future(sync.run())
    try:
        await wait_until_async(lambda: registry.snapshot().worker("box.g0"), 10, message="the managed entry")
        data = json.loads(registry.path.read_text())
        data["workers"] = [w for w in data["workers"] if w["id"] != "box"]
        registry.path.write_text(json.dumps(data))

        await wait_until_async(lambda: not registry.snapshot().workers, 10, message="the host's entries to go")
        assert sync.snapshot() == {}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await sync.stop()
        await clients.close()
