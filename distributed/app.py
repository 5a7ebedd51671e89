"""Composition root: builds the services once, wires them to ComfyUI's server, owns their tasks.

Imported only by the package's `__init__.py`, with ComfyUI's `PromptServer.instance`. Environment
settings are read here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from . import routes
from .bridge import run_on_loop
from .client import ClientPool
from .dispatch import Dispatcher, Job
from .errors import WorkerUnavailable
from .events import Events
from .health import HealthMonitor
from .models import RegistryFile, WorkerConfig
from .planner import COLLECTOR_CLASS, JOB_INPUT, has_collector
from .registry import Registry

logger = logging.getLogger(__name__)

WORKERS_FILE_ENV = "DISTRIBUTED_WORKERS_FILE"
REGISTRY_POLL_SECONDS = 1.0


class DistributedApp:
    """Everything the extension runs on the master, built around one ComfyUI PromptServer."""

    def __init__(self, server: Any, extension_dir: Path) -> None:
        self._server = server
        self.registry = Registry(Path(os.environ.get(WORKERS_FILE_ENV) or extension_dir / "workers.json"))
        self.events = Events(server.send_sync)
        self.clients = ClientPool()
        self.health = HealthMonitor(self.registry, self.clients, self.events)
        self.dispatcher = Dispatcher(self.registry, self.health, self.clients, self.events)
        self.registry.subscribe(lambda config: self.events.registry_changed(self.snapshot()))

    def install(self) -> None:
        """Registers the on-prompt hook, the routes and the background tasks with ComfyUI."""
        self._server.add_on_prompt_handler(self.on_prompt)
        routes.register(self._server.routes, self)
        self._server.app.cleanup_ctx.append(self._background_tasks)

    async def _background_tasks(self, app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(self.health.run()), asyncio.ensure_future(self._watch_registry())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.health.stop()
        await self.clients.close()

    async def _watch_registry(self) -> None:
        """Notices hand edits of workers.json within a second, even when nothing reads it."""
        while True:
            self.registry.refresh()
            await asyncio.sleep(REGISTRY_POLL_SECONDS)

    # --- queue ------------------------------------------------------------------------------

    def on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        """ComfyUI's on-prompt hook: plans prompts holding a collector and tags them with a job.

        Runs for every POST /prompt, whatever the client, so API users are distributed too. It does no
        network work: the job starts when the master begins executing the collector.
        """
        prompt = json_data.get("prompt")
        if not isinstance(prompt, dict) or not has_collector(prompt):
            return json_data
        job_id = self.dispatcher.register(prompt)
        for node in prompt.values():
            if isinstance(node, dict) and node.get("class_type") == COLLECTOR_CLASS and isinstance(node.get("inputs"), dict):
                node["inputs"][JOB_INPUT] = job_id
        return json_data

    # --- called by the nodes, from ComfyUI's execution thread ----------------------------------

    def start_job(self, job_id: str, is_interrupted: Callable[[], bool]) -> bool:
        """Starts the job's remote shares; True when the master must render share 0 itself."""
        return run_on_loop(self._server.loop, self.dispatcher.start(job_id), is_interrupted)

    def wait_job(self, job_id: str, is_interrupted: Callable[[], bool], on_tick: Callable[[], None]) -> Job:
        return run_on_loop(self._server.loop, self.dispatcher.results(job_id), is_interrupted, on_tick)

    def cancel_job(self, job_id: str, reason: str) -> None:
        asyncio.run_coroutine_threadsafe(self.dispatcher.cancel(job_id, reason), self._server.loop)

    # --- views for routes and events ------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """GET /distributed/workers: the configuration plus each worker's live status."""
        config: RegistryFile = self.registry.snapshot()
        body = config.model_dump(mode="json", exclude={"workers"})
        body["registry_error"] = self.registry.error
        body["registry_path"] = str(self.registry.path)
        body["workers"] = [self._worker_view(worker) for worker in config.workers]
        return body

    def worker_snapshot(self, worker_id: str) -> dict[str, Any]:
        return self._worker_view(self.registry.worker(worker_id))

    def _worker_view(self, worker: WorkerConfig) -> dict[str, Any]:
        return {**worker.model_dump(mode="json"), "base_url": worker.base_url, "status": self.health.status(worker.id).as_json()}

    async def test_connection(self, worker: WorkerConfig) -> dict[str, Any]:
        """Checks a worker through the master and says exactly which step failed."""
        pool = ClientPool()
        try:
            stats = await pool.client(worker).system_stats()
            version = (stats.get("system") or {}).get("comfyui_version", "unknown")
            return {"ok": True, "stage": "ok", "message": f"ComfyUI {version} answers at {worker.base_url}"}
        except WorkerUnavailable as error:
            return {"ok": False, "stage": error.stage, "message": error.cause}
        finally:
            await pool.close()

    async def before_worker_removed(self, worker_id: str) -> None:
        """Hook for services that hold per-worker resources."""
        await self.clients.forget(worker_id)
