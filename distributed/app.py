"""Composition root: builds the services once, wires them to ComfyUI's server, owns their tasks.

Imported only by the package's `__init__.py`, with ComfyUI's `PromptServer.instance`. Environment
settings are read here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import routes
from .bridge import run_on_loop
from .client import ClientPool
from .dispatch import Dispatcher, Job
from .errors import DistributedError, WorkerUnavailable
from .events import Events
from .gpus import discover_gpus, first_launch_workers
from .health import HealthMonitor
from .models import RegistryFile, WorkerConfig, WorkerState, WorkerStatus, public_view
from .orphans import OrphanSweeper, ShareOwner
from .planner import JOB_INPUT, has_collector, is_collector, slice_latents
from .processes import LocalWorkerManager, MasterLayout
from .registry import Registry
from .remote_queue import QueuedRun, RemoteQueue, image_outputs
from .routes_processes import add_process_routes
from .runtime import exit_cleanly_on_sigterm
from .share_runner import ShareRunner

logger = logging.getLogger(__name__)

WORKERS_FILE_ENV = "DISTRIBUTED_WORKERS_FILE"
STATE_DIR_ENV = "DISTRIBUTED_STATE_DIR"
REGISTRY_POLL_SECONDS = 1.0
PROCESS_STATES_SHOWN = (WorkerState.LAUNCHING, WorkerState.ERROR)
"""Process states that speak for a local worker; otherwise its health checks do."""


@dataclass(frozen=True)
class MasterPaths:
    """Where this ComfyUI lives, as local workers need to know it."""

    extension_dir: Path
    layout: MasterLayout
    user_dir: Path
    port: int
    input_dir: Path | None = None
    """The master's input folder: files its prompts load are uploaded to remote workers from here."""


class DistributedApp:
    """Everything the extension runs on the master, built around one ComfyUI PromptServer."""

    def __init__(self, server: Any, paths: MasterPaths) -> None:
        self._server = server
        self._port = paths.port
        self.registry = Registry(Path(os.environ.get(WORKERS_FILE_ENV) or paths.extension_dir / "workers.json"))
        self.events = Events(server.send_sync)
        self.clients = ClientPool()
        self.health = HealthMonitor(self.registry, self.clients, self.events)
        state_dir = Path(os.environ.get(STATE_DIR_ENV) or paths.user_dir / "distributed-gpu")
        owner = ShareOwner.load(state_dir)
        self._orphans = OrphanSweeper(owner, self.registry, self.health, self.clients)
        self._runner = ShareRunner(self.registry, owner, paths.input_dir)
        self.dispatcher = Dispatcher(
            self.registry, self.health, self.clients, self.events, self._runner, master_prompt_ended=self._master_prompt_ended
        )
        self.remote_queue = RemoteQueue(
            self.registry, self.health, self.clients, self._runner, self._master_queue, self._master_prompt_ended
        )
        self.processes = LocalWorkerManager(
            paths.layout,
            state_dir,
            on_state=self._on_process_state,
            stop_on_exit=lambda: self.registry.snapshot().settings.stop_workers_on_exit,
        )
        self._process_states: dict[str, WorkerStatus] = {}
        self._checks: set[asyncio.Future] = set()
        self.health.set_override(self._process_status)
        self.registry.subscribe(lambda config: self.events.registry_changed(self.snapshot()))

    def install(self) -> None:
        """Registers the on-prompt hook, the routes and the background tasks with ComfyUI."""
        self.processes.hold_lease()  # early: workers of a previous master are waiting for it
        exit_cleanly_on_sigterm()
        self._server.add_on_prompt_handler(self.on_prompt)
        policy = routes.AccessPolicy.from_environ(os.environ)
        routes.register(self._server.routes, self, policy)
        add_process_routes(self._server.routes, self.processes, self.registry.worker, policy.guard, policy.reader,
                           status_json=lambda worker_id: self.health.status(worker_id).as_json(), remote_log=self._remote_log)
        self._server.app.cleanup_ctx.append(self._background_tasks)

    async def _background_tasks(self, app: web.Application) -> AsyncIterator[None]:
        await self._start_local_workers()
        tasks = [asyncio.ensure_future(self.health.run()), asyncio.ensure_future(self._watch_registry()),
                 asyncio.ensure_future(self.remote_queue.serve()), asyncio.ensure_future(self._orphans.run())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.remote_queue.stop()
        await self.health.stop()
        await self.processes.close()
        await self.clients.close()

    async def _start_local_workers(self) -> None:
        """First launch adds a local worker per spare GPU; then adopt running ones and auto-launch."""
        self._seed_local_workers()
        config = self.registry.snapshot()
        local = [worker for worker in config.workers if worker.type == "local"]
        await self.processes.start(local)
        if config.settings.auto_launch:
            for worker in local:
                if worker.enabled:
                    try:
                        await self.processes.launch(worker)
                    except DistributedError as error:
                        logger.error("Could not launch local worker %s: %s", worker.name, error)

    def _seed_local_workers(self) -> None:
        config = self.registry.snapshot()
        if config.local_workers_seeded or config.workers or self.registry.error:
            return
        inventory = discover_gpus()
        if inventory.problem:
            return  # retried at the next start, once a driver is there
        taken = {self._port}
        workers = first_launch_workers(inventory.gpus, config.master.cuda_device, taken)

        def seed(current: RegistryFile) -> RegistryFile:
            current.workers.extend(workers)
            current.local_workers_seeded = True
            return current

        self.registry.update(seed)
        logger.info("First launch: added %d local worker(s), one per spare GPU", len(workers))

    def _process_status(self, worker_id: str) -> WorkerStatus | None:
        """The process manager's word on a worker, while it is a local worker in the registry."""
        worker = self.registry.snapshot().worker(worker_id)
        return self._process_states.get(worker_id) if worker is not None and worker.type == "local" else None

    def _on_process_state(self, worker_id: str, state: WorkerState, error: str | None) -> None:
        """The process manager's view of a local worker; health checks take over once it answers."""
        if state in PROCESS_STATES_SHOWN:
            self._process_states[worker_id] = WorkerStatus(state, error=error)
            self.health.publish(worker_id)
            return
        self._process_states.pop(worker_id, None)
        worker = self.registry.snapshot().worker(worker_id)
        if worker is not None and worker.enabled:
            check = self.health.recheck(worker)  # now, not at the next backed-off poll
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
        self.health.publish(worker_id)  # the override is gone: what shows now is the health monitor's

    async def _watch_registry(self) -> None:
        """Notices hand edits of workers.json within a second, even when nothing reads it."""
        while True:
            self.registry.refresh()
            await asyncio.sleep(REGISTRY_POLL_SECONDS)

    # --- queue ------------------------------------------------------------------------------

    def on_prompt(self, json_data: dict[str, Any]) -> dict[str, Any]:
        """ComfyUI's on-prompt hook: plans prompts holding a collector and tags them with a job.

        Runs for every POST /prompt, whatever the client, so API users are distributed too. It does no
        network work: the job starts when the master begins executing the collector. The prompt id is
        fixed here (ComfyUI keeps one given in the request) so the job can name its prompt.
        """
        prompt = json_data.get("prompt")
        if not isinstance(prompt, dict):
            return json_data
        if not has_collector(prompt):
            return self._queue_whole(json_data, prompt)
        prompt_id = str(json_data.setdefault("prompt_id", str(uuid.uuid4())))
        job = self.dispatcher.register(prompt, prompt_id)
        for node in prompt.values():
            if is_collector(node) and isinstance(node.get("inputs"), dict):
                node["inputs"][JOB_INPUT] = job.job_id
        if job.plan is not None and job.master_batch is not None:
            slice_latents(prompt, job.plan.latent_nodes, job.master_batch)
        return json_data

    def _queue_whole(self, json_data: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
        """Distributed queue: the prompt is held here and a proxy is queued on the master instead."""
        if not self.registry.snapshot().settings.distributed_queue:
            return json_data
        outputs = image_outputs(prompt, _is_output_node)
        if outputs is None:
            logger.info("Distributed queue: a prompt whose outputs are not all images runs on the master")
            return json_data
        prompt_id = str(json_data.setdefault("prompt_id", str(uuid.uuid4())))
        json_data["prompt"] = self.remote_queue.submit(prompt, prompt_id, outputs)
        json_data.pop("partial_execution_targets", None)  # they name nodes of the original graph
        return json_data

    def _master_queue(self) -> tuple[list[str], list[str]]:
        """The master's running and pending prompt ids, pending in execution order."""
        running, pending = self._server.prompt_queue.get_current_queue_volatile()
        return [item[1] for item in running], [item[1] for item in sorted(pending, key=lambda item: item[0])]

    def _master_prompt_ended(self, prompt_id: str) -> bool:
        return bool(self._server.prompt_queue.get_history(prompt_id=prompt_id))

    # --- called by the nodes, from ComfyUI's execution thread ----------------------------------

    def claim_queued_for_master(self, run_id: str, is_interrupted: Callable[[], bool]) -> dict[str, Any] | None:
        async def claim() -> dict[str, Any] | None:
            return self.remote_queue.claim_for_master(run_id)

        return run_on_loop(self._server.loop, claim(), is_interrupted)

    def wait_queued(self, run_id: str, is_interrupted: Callable[[], bool]) -> QueuedRun | None:
        return run_on_loop(self._server.loop, self.remote_queue.result(run_id), is_interrupted)

    def release_queued(self, run_id: str) -> None:
        self._server.loop.call_soon_threadsafe(self.remote_queue.release, run_id)

    def start_job(self, job_id: str, is_interrupted: Callable[[], bool]) -> bool:
        """Starts the job's remote shares; True when the master must render share 0 itself."""
        return run_on_loop(self._server.loop, self.dispatcher.start(job_id), is_interrupted)

    def wait_job(self, job_id: str, is_interrupted: Callable[[], bool], on_tick: Callable[[], None],
                 master_shapes: dict[str, tuple[int, ...]]) -> Job:
        """Waits for the workers' shares; the master's own share (of `master_shapes`) is done now."""
        self._server.loop.call_soon_threadsafe(self.dispatcher.master_done, job_id)
        return run_on_loop(self._server.loop, self.dispatcher.results(job_id, master_shapes), is_interrupted, on_tick)

    def deliver_master_share(self, job_id: str, index: int, collector_id: str, result: Any) -> None:
        """A share the master rendered itself (no worker could) is in, for one collector."""
        run_on_loop(self._server.loop, self.dispatcher.deliver_from_master(job_id, index, collector_id, result))

    def release_job(self, job_id: str, collector_id: str) -> None:
        """The collector has its images: the job may drop them."""
        self._server.loop.call_soon_threadsafe(self.dispatcher.release, job_id, collector_id)

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
        return {**public_view(worker), "base_url": worker.base_url, "status": self.health.status(worker.id).as_json(),
                "relative_speed": self.dispatcher.speeds.latest_relative_speed(worker.id),
                "result_link": self._runner.link_report().get(worker.id)}

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

    async def _remote_log(self, worker: WorkerConfig, lines: int) -> list[str]:
        """The tail of a remote worker's log, from its ComfyUI's own log route."""
        answer = await self.clients.client(worker).get_json("/internal/logs/raw")
        entries = answer.get("entries", []) if isinstance(answer, dict) else []
        text = "".join(str(entry.get("m", "")) for entry in entries if isinstance(entry, dict))
        return text.splitlines()[-lines:]

    async def before_worker_removed(self, worker_id: str) -> None:
        """Stops a local worker's process and drops the connections held for a worker."""
        if self.registry.worker(worker_id).type == "local":
            await self.processes.stop(worker_id)
        self._process_states.pop(worker_id, None)
        await self.clients.forget(worker_id)


def _is_output_node(class_type: str) -> bool:
    """Whether ComfyUI knows the class as an output node (its `nodes` module, loaded before us)."""
    node_class = sys.modules["nodes"].NODE_CLASS_MAPPINGS.get(class_type)
    return getattr(node_class, "OUTPUT_NODE", False) is True
