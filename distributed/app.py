"""Composition root: builds the services once, wires them to each other and to ComfyUI's server,
registers the routes, and owns the background tasks.

Imported only by the package's `__init__.py`, inside a running ComfyUI. Environment settings are
read here, once. docs/architecture.md draws what is built here and how a prompt flows through it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .api.access import AccessPolicy
from .api.config import add_config_routes
from .api.host import add_host_side_routes
from .api.hosts import add_host_routes
from .api.identity import add_identity_route
from .api.inventory import add_inventory_routes
from .api.jobs import add_job_routes
from .api.pools import add_pool_routes
from .api.processes import add_process_routes
from .api.queue import add_queue_routes
from .api.views import RegistryViews
from .api.workers import add_worker_routes
from .comfy.bridge import JobBridge
from .comfy.interrupts import interrupt_middleware
from .comfy.process_tweaks import exit_cleanly_on_sigterm
from .comfy.prompt_server import ComfyServer, is_output_node
from .config.models import WorkerConfig
from .config.registry import Registry
from .events import Events
from .jobs.dispatch import Dispatcher
from .jobs.hook import PromptHook
from .jobs.router import PromptRouter
from .transport.provision.inventory import Inventory
from .transport.provision.sender import ModelCopier
from .transport.runner import ShareRunner
from .workers.diagnostics import remote_log_tail, test_connection
from .workers.health import HealthMonitor
from .workers.hosts.inventory import HostInventory
from .workers.hosts.relay import HostRelay
from .workers.hosts.sync import HostSync
from .workers.local.arguments import ArgumentReader
from .workers.local.fleet import LocalFleet
from .workers.orphans import OrphanSweeper, ShareOwner
from .workers.pool import ClientPool
from .workers.pools.manager import PoolManager

if TYPE_CHECKING:
    from .comfy.master_layout import MasterPaths
    from .comfy.model_folders import LocalModels

logger = logging.getLogger(__name__)

WORKERS_FILE_ENV = "DISTRIBUTED_WORKERS_FILE"
"""Where workers.json lives; by default in the extension's own folder."""
STATE_DIR_ENV = "DISTRIBUTED_STATE_DIR"
"""Where the master keeps its id, the workers' lease, process records and logs; by default
<ComfyUI user directory>/distributed-gpu."""


class DistributedApp:
    """Everything the extension runs on the master, built around one ComfyUI PromptServer."""

    def __init__(self, server: ComfyServer, paths: MasterPaths, comfy_parser: argparse.ArgumentParser,
                 extension_dir: Path, environ: Mapping[str, str] = os.environ, *, local_models: LocalModels,
                 cors_enabled: bool = False) -> None:
        """`cors_enabled`: ComfyUI runs with `--enable-cors-header`, so every web page can read its answers.
        `local_models`: this instance's model folders, which the inventory reads and copies come from."""
        self._server = server
        self.registry = Registry(Path(environ.get(WORKERS_FILE_ENV) or extension_dir / "workers.json"))
        self._policy = AccessPolicy.from_environ(environ, cors_enabled, lambda: self.registry.snapshot().master.allowed_hosts)
        self.events = Events(server.send)
        self.clients = ClientPool(lambda: self.registry.snapshot().settings.max_answer_mib << 20)
        state_dir = Path(environ.get(STATE_DIR_ENV) or paths.user_dir / "distributed-gpu")
        owner = self.owner = ShareOwner.load(state_dir)
        self.health = HealthMonitor(self.registry, self.clients, self.events, master_id=owner.master_id)
        self._orphans = OrphanSweeper(owner, self.registry, self.health, self.clients)
        self._runner = ShareRunner(self.registry, self.clients, owner, paths.input_dir)
        self.dispatcher = Dispatcher(self.registry, self.health, self.events, self._runner, master_prompt_ended=server.prompt_ended,
                                     master_queue=server.master_queue)
        self.router = PromptRouter(self.registry, self.health, self._runner, server.prompt_queue,
                                   pools_can_grow=lambda: self.pools.can_grow())
        self.pools = PoolManager(self.registry, self.health, self.clients, self.events, state_dir,
                                 waiting_since=self._work_waiting_since, holds_share=self._holds_share)
        self.arguments = ArgumentReader(comfy_parser)
        self.fleet = LocalFleet(self.registry, self.health, paths.layout, state_dir, self.arguments, paths.port, paths.device)
        self._master_port = paths.port
        self.hosts = HostSync(self.registry, self.clients, self.health,
                              on_change=lambda: self.events.registry_changed(self.views.snapshot()))
        self.health.set_override(lambda worker_id: self.fleet.status_override(worker_id) or self.hosts.status_override(worker_id))
        self._relay = HostRelay(self.clients)
        self._host_inventory = HostInventory(self.registry, self._status_json, paths.device, paths.port)
        self.views = RegistryViews(
            self.registry, status_json=self._status_json,
            relative_speed=self.dispatcher.speeds.latest_relative_speed,
            result_link=lambda worker_id: self._runner.link_report().get(worker_id), master_device=server.device,
            hosts=self.hosts.snapshot,
        )
        self.bridge = JobBridge(server.loop, self.dispatcher, self.router)
        self.local_models = local_models
        self.inventory = Inventory(self.clients, local_models.library)
        self.copier = ModelCopier(self.clients, local_models.library.hashes, self.events.model_copy)
        self.registry.subscribe(lambda config: self.events.registry_changed(self.views.snapshot()))

    def install(self) -> None:
        """Registers the on-prompt hook, the routes and the background tasks with ComfyUI."""
        self.fleet.processes.hold_lease()  # early: workers of a previous master are waiting for it
        exit_cleanly_on_sigterm()
        self._server.add_on_prompt_handler(PromptHook(self.registry, self.dispatcher, self.router, is_output_node))
        self._server.add_middleware(interrupt_middleware(self.router.interrupt, self.router.interrupt_all))
        routes, policy = self._server.routes, self._policy
        add_worker_routes(routes, policy, self.registry, self.views, self.arguments, self._removed, test_connection,
                          master_port=self._master_port)
        add_identity_route(routes, self.owner.master_id)
        add_config_routes(routes, policy, self.registry, self.views.snapshot)
        add_job_routes(routes, policy, self.dispatcher, self.dispatcher.speeds)
        add_queue_routes(routes, policy, self.router)
        add_pool_routes(routes, policy, self.registry, self.pools)
        add_process_routes(routes, policy, self.fleet.processes, self.registry.worker,
                           status_json=self._status_json, remote_log=self._remote_log)
        add_inventory_routes(routes, policy, self.registry, self.inventory, self.local_models.library, self.local_models.packs,
                             self.copier)
        add_host_routes(routes, policy, self.registry, self.hosts, self._relay)
        add_host_side_routes(routes, policy, self._host_inventory, self.views)
        self._server.app.cleanup_ctx.append(self._background_tasks)

    async def _background_tasks(self, app: web.Application) -> AsyncIterator[None]:
        await self.fleet.start()
        await self.pools.start()
        tasks = [asyncio.ensure_future(self.health.run()), asyncio.ensure_future(self.registry.watch()),
                 asyncio.ensure_future(self.router.serve()), asyncio.ensure_future(self._orphans.run()),
                 asyncio.ensure_future(self.dispatcher.sweep_forever()), asyncio.ensure_future(self.hosts.run()),
                 asyncio.ensure_future(self.pools.run())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.router.stop()
        await self.copier.close()
        await self.hosts.stop()
        await self.pools.close()
        await self.health.stop()
        await self.fleet.processes.close()
        await self.clients.close()

    def _status_json(self, worker_id: str) -> dict[str, Any]:
        return self.health.status(worker_id).as_json()

    def _work_waiting_since(self) -> float | None:
        """Since when shares or whole prompts have waited with every participant busy (time.monotonic)."""
        return min((since for since in (self.dispatcher.waiting_since(), self.router.waiting_since()) if since is not None), default=None)

    def _holds_share(self, worker_id: str) -> bool:
        return self.dispatcher.holds_share(worker_id) or self.router.holds_share(worker_id)

    async def _removed(self, worker: WorkerConfig) -> None:
        await self.fleet.removed(worker)
        await self.clients.forget(worker.id)

    async def _remote_log(self, worker: WorkerConfig, lines: int) -> list[str]:
        return await remote_log_tail(self.clients.client(worker), lines)
