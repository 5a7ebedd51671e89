"""The local workers as part of the master: first-launch seeding, start-up, and what the panel shows.

While a local worker's process launches or has failed, its process manager speaks for it (the
health monitor's override); once it answers, health checks take over at once rather than at the
next backed-off poll. On the first launch of a master, one worker per spare GPU is added.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from ...config.models import RegistryFile, WorkerConfig
from ...config.registry import Registry
from ...errors import DistributedError
from ..health import HealthMonitor
from ..status import WorkerState, WorkerStatus
from .arguments import ArgumentReader
from .command import MasterLayout
from .gpus import MasterDevice, discover_gpus, first_launch_workers, master_gpu
from .manager import LocalWorkerManager

logger = logging.getLogger(__name__)

PROCESS_STATES_SHOWN = {WorkerState.LAUNCHING: WorkerState.LAUNCHING, WorkerState.ERROR: WorkerState.ERROR,
                        WorkerState.OFFLINE: WorkerState.STOPPED}
"""Process states that speak for a local worker, and what they are shown as; otherwise its health
checks do. The manager reports a process offline only when it was stopped on purpose."""


class LocalFleet:
    """Owns the local worker processes of one master and ties them to the registry and health checks."""

    def __init__(self, registry: Registry, health: HealthMonitor, layout: MasterLayout, state_dir: Path,
                 arguments: ArgumentReader, master_port: int, master_device: MasterDevice = MasterDevice()) -> None:
        self._registry = registry
        self._health = health
        self._master_port = master_port
        self._master_device = master_device
        self.processes = LocalWorkerManager(
            layout, state_dir, arguments, on_state=self._on_process_state,
            stop_on_exit=lambda: registry.snapshot().settings.stop_workers_on_exit,
        )
        self._process_states: dict[str, WorkerStatus] = {}
        self._checks: set[asyncio.Future] = set()
        health.set_override(self.status_override)

    async def start(self) -> None:
        """First launch adds a local worker per spare GPU; then adopt running ones and auto-launch."""
        self._seed()
        config = self._registry.snapshot()
        local = [worker for worker in config.workers if worker.type == "local"]
        await self.processes.start(local)
        if config.settings.auto_launch:
            for worker in local:
                if worker.enabled:
                    try:
                        await self.processes.launch(worker)
                    except DistributedError as error:
                        logger.error("Could not launch local worker %s: %s", worker.name, error)

    def stopped_by_user(self, worker_id: str) -> bool:
        """Whether a local worker is stopped because someone stopped it (not because it failed)."""
        shown = self._process_states.get(worker_id)
        return shown is not None and shown.state == WorkerState.STOPPED

    async def removed(self, worker: WorkerConfig) -> None:
        """A worker left the registry: its process (if local) is stopped and forgotten."""
        if worker.type == "local":
            await self.processes.stop(worker.id)
        self._process_states.pop(worker.id, None)

    def _seed(self) -> None:
        config = self._registry.snapshot()
        if config.local_workers_seeded or config.workers or self._registry.error:
            return
        inventory = discover_gpus()
        if inventory.problem:
            return  # retried at the next start, once a driver is there
        device = replace(self._master_device, configured=config.master.cuda_device)
        workers = first_launch_workers(inventory.gpus, master_gpu(inventory.gpus, device), {self._master_port})

        def seed(current: RegistryFile) -> RegistryFile:
            current.workers.extend(workers)
            current.local_workers_seeded = True
            return current

        self._registry.update(seed)
        logger.info("First launch: added %d local worker(s), one per spare GPU", len(workers))

    def status_override(self, worker_id: str) -> WorkerStatus | None:
        """The process manager's word on an enabled local worker: launching, failed, or stopped (no
        process: stopped by the user, or never launched). Once its process runs, health checks speak."""
        worker = self._registry.snapshot().worker(worker_id)
        if worker is None or worker.type != "local" or not worker.enabled:
            return None
        shown = self._process_states.get(worker_id)
        if shown is None and not self.processes.is_running(worker_id):
            return WorkerStatus(WorkerState.STOPPED)
        return shown

    def _on_process_state(self, worker_id: str, state: WorkerState, error: str | None) -> None:
        """The process manager's view of a local worker; health checks take over once it answers."""
        if state in PROCESS_STATES_SHOWN:
            self._process_states[worker_id] = WorkerStatus(PROCESS_STATES_SHOWN[state], error=error)
            self._health.publish(worker_id)
            return
        self._process_states.pop(worker_id, None)
        worker = self._registry.snapshot().worker(worker_id)
        if worker is not None and worker.enabled:
            check = self._health.recheck(worker)  # now, not at the next backed-off poll
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
        self._health.publish(worker_id)  # the override is gone: what shows now is the health monitor's
