"""NVIDIA GPU discovery, and the local workers a first launch adds for them.

Discovery goes through NVML (package nvidia-ml-py) rather than torch, so the master learns what
hardware it has without initialising CUDA in its own process. A machine without the driver is a
normal case (CPU-only machines still run CPU workers): discovery then reports an empty inventory
with a plain reason and never raises.

NVML numbers devices in PCI bus order while CUDA, by default, numbers the fastest first. Workers are
therefore started with CUDA_DEVICE_ORDER=PCI_BUS_ID (see command.py), so that an index found here
is the device a worker's CUDA_VISIBLE_DEVICES selects.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import ModuleType

from ...config.models import WorkerConfig
from .ports import port_is_free

logger = logging.getLogger(__name__)

FIRST_WORKER_PORT = 8189
_LAST_PORT = 65535


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA device as NVML reports it."""

    index: int
    name: str
    memory_total: int
    uuid: str


@dataclass(frozen=True)
class GpuInventory:
    """The result of one discovery: the devices found, or why none could be looked for."""

    gpus: tuple[Gpu, ...]
    problem: str | None = None


def discover_gpus() -> GpuInventory:
    """Lists the NVIDIA GPUs of this machine; without a usable driver, says why instead of raising."""
    try:
        import pynvml
    except ImportError as error:
        return _unavailable(f"no NVIDIA driver found: nvidia-ml-py is not installed ({error})")
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError) as error:
        return _unavailable(f"no NVIDIA driver found: {error}")
    try:
        gpus = tuple(_describe(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount()))
    except pynvml.NVMLError as error:
        return _unavailable(f"NVIDIA driver found but the GPUs could not be listed: {error}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    logger.info("found %d NVIDIA GPU(s): %s", len(gpus), ", ".join(f"{g.index}: {g.name}" for g in gpus) or "none")
    return GpuInventory(gpus)


def _describe(pynvml: ModuleType, index: int) -> Gpu:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return Gpu(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_total=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
    )


def _text(value: str | bytes) -> str:
    """Older nvidia-ml-py releases return bytes where newer ones return str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _unavailable(reason: str) -> GpuInventory:
    _log_once(reason)
    return GpuInventory((), reason)


@functools.cache
def _log_once(reason: str) -> None:
    """Discovery may run on every panel refresh; the same missing driver is worth one line."""
    logger.info("%s; local workers can still run on the CPU", reason)


def first_launch_workers(
    gpus: Collection[Gpu],
    master_cuda_device: int | None,
    taken_ports: Collection[int],
    is_free: Callable[[int], bool] = port_is_free,
) -> list[WorkerConfig]:
    """One local worker per GPU the master does not use, on ports from 8189 up.

    The master is taken to use GPU 0 when its `cuda_device` is unset, as ComfyUI does by default.
    Ports already named in `taken_ports` (the registry's and the master's) or in use on this
    machine are skipped. The caller records `local_workers_seeded` so that deleting these later sticks.
    """
    master_device = 0 if master_cuda_device is None else master_cuda_device
    taken = set(taken_ports)
    workers: list[WorkerConfig] = []
    port = FIRST_WORKER_PORT
    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.index == master_device:
            continue
        while port in taken or not is_free(port):
            port += 1
            if port > _LAST_PORT:
                return workers
        taken.add(port)
        workers.append(
            WorkerConfig(
                id=f"gpu{gpu.index}",
                name=f"GPU {gpu.index} ({gpu.name})"[:100],
                type="local",
                host="127.0.0.1",
                port=port,
                cuda_device=gpu.index,
            )
        )
    return workers
