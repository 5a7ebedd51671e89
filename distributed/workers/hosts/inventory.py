"""This master as a host: what it tells the master that manages it, and one more worker per GPU.

Which GPUs are free is decided as on a first launch (`gpus.master_gpu`): the GPU this ComfyUI
renders on is the master's, a GPU a local worker names is that worker's, the rest are free. GPUs
are discovered once, on the first question, off the loop: they do not change while ComfyUI runs,
and every discovery would log them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ...config.models import Listen, RegistryFile, WorkerConfig
from ...config.registry import Registry
from ...errors import ConfigError
from ..local.command import DEFAULT_LISTEN, NETWORK_LISTEN, with_network_lock
from ..local.gpus import FIRST_WORKER_PORT, GpuInventory, MasterDevice, discover_gpus, master_gpu
from ..local.ports import next_free_port, port_is_free
from .report import MASTER_GPU_USER, MAX_TEXT, HostGpu, HostReport, HostWorker

logger = logging.getLogger(__name__)

CPU_WORKER_ID = "cpu"


class HostInventory:
    """Builds the host's report and adds workers to its registry."""

    def __init__(self, registry: Registry, status_json: Callable[[str], dict[str, Any]], master_device: MasterDevice,
                 master_port: int, discover: Callable[[], GpuInventory] = discover_gpus,
                 is_free: Callable[[int, str], bool] = port_is_free) -> None:
        self._registry = registry
        self._status_json = status_json
        self._master_device = master_device
        self._master_port = master_port
        self._discover = discover
        self._is_free = is_free
        self._inventory: GpuInventory | None = None
        self._discovering = asyncio.Lock()

    async def gpus(self) -> GpuInventory:
        async with self._discovering:
            if self._inventory is None:
                self._inventory = await asyncio.to_thread(self._discover)
            return self._inventory

    async def report(self) -> dict[str, Any]:
        """GET /distributed/host: the GPUs, who uses each, and every local worker with its state."""
        inventory = await self.gpus()
        config = self._registry.snapshot()
        master = self._master_index(inventory, config)
        local = [worker for worker in config.workers if worker.type == "local"]
        users = {worker.cuda_device: worker.id for worker in reversed(local) if worker.cuda_device is not None}
        gpus = [HostGpu(index=gpu.index, name=gpu.name[:200], memory_total=gpu.memory_total,
                        used_by=MASTER_GPU_USER if gpu.index == master else users.get(gpu.index))
                for gpu in inventory.gpus]
        workers = [self._reported(worker) for worker in local]
        report = HostReport(gpus=gpus, gpu_problem=inventory.problem, master_gpu=master, workers=workers)
        return report.model_dump(mode="json")

    async def add_worker(self, cuda_device: int | None, listen: Listen) -> WorkerConfig:
        """One more local worker: on a free GPU (a CPU worker on a host without GPUs), on the first
        free port from 8189, locked when it listens on the network. ConfigError names the field."""
        inventory = await self.gpus()
        config = self._registry.snapshot()
        self._check_free(inventory, config, cuda_device)
        bind = NETWORK_LISTEN if listen == "network" else DEFAULT_LISTEN
        taken = {worker.port for worker in config.workers if worker.type == "local" and worker.port is not None}
        port = await asyncio.to_thread(next_free_port, FIRST_WORKER_PORT, taken | {self._master_port},
                                       lambda candidate: self._is_free(candidate, bind))
        if port is None:
            raise ConfigError("no free port is left on this host for another worker", field="port")
        if cuda_device is None:
            base, name = CPU_WORKER_ID, "CPU worker"
        else:
            gpu_name = next(gpu.name for gpu in inventory.gpus if gpu.index == cuda_device)
            base, name = f"gpu{cuda_device}", f"GPU {cuda_device} ({gpu_name})"[:100]
        worker = with_network_lock(WorkerConfig(id=self._registry.new_worker_id(base), name=name, type="local", port=port,
                                                cuda_device=cuda_device, listen=listen))

        def add(current: RegistryFile) -> RegistryFile:
            self._check_free(inventory, current, cuda_device)
            current.workers.append(worker)
            return current

        self._registry.update(add)
        logger.info("Added local worker '%s' on port %d (listens on %s), asked by the master that manages this host",
                    worker.name, port, listen)
        return worker

    def _check_free(self, inventory: GpuInventory, config: RegistryFile, cuda_device: int | None) -> None:
        """Refuses a GPU this host lacks, the master's own, or one a worker has; and a CPU worker where there are GPUs."""
        indices = [gpu.index for gpu in inventory.gpus]
        if cuda_device is None:
            if indices:
                raise ConfigError(f"cuda_device: this host has GPUs ({', '.join(map(str, indices))}); add a worker on one of them",
                                  field="cuda_device")
            return
        if cuda_device not in indices:
            having = f"its GPUs are {', '.join(map(str, indices))}" if indices else inventory.problem or "it has none"
            raise ConfigError(f"cuda_device: this host has no GPU {cuda_device} ({having})", field="cuda_device")
        if cuda_device == self._master_index(inventory, config):
            raise ConfigError(f"cuda_device: GPU {cuda_device} is the one this host's own ComfyUI renders on", field="cuda_device")
        holder = next((worker for worker in config.workers if worker.type == "local" and worker.cuda_device == cuda_device), None)
        if holder is not None:
            raise ConfigError(f"cuda_device: GPU {cuda_device} has a worker already, '{holder.name}'", field="cuda_device")

    def _master_index(self, inventory: GpuInventory, config: RegistryFile) -> int | None:
        return master_gpu(inventory.gpus, replace(self._master_device, configured=config.master.cuda_device))

    def _reported(self, worker: WorkerConfig) -> HostWorker:
        assert worker.port is not None  # guaranteed for local workers by WorkerConfig
        status = self._status_json(worker.id)
        error = status.get("error")
        return HostWorker(
            id=worker.id, name=worker.name, port=worker.port, cuda_device=worker.cuda_device, listen=worker.listen,
            enabled=worker.enabled, state=status.get("state", "unknown"),
            error=error[-MAX_TEXT:] if isinstance(error, str) else None,
            auth_token=worker.auth_token if worker.listen == "network" else None,
        )
