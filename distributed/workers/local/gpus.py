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
from .ports import next_free_port, port_is_free

logger = logging.getLogger(__name__)

FIRST_WORKER_PORT = 8189


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA device as NVML reports it."""

    index: int
    name: str
    memory_total: int
    uuid: str
    pci_bus_id: str = ""


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
        pci_bus_id=_text(pynvml.nvmlDeviceGetPciInfo(handle).busId),
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


@dataclass(frozen=True)
class MasterDevice:
    """How this ComfyUI was started, as far as its GPU goes; read once at start."""

    configured: int | None = None
    """`master.cuda_device` in workers.json: the user's word wins."""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as the master sees it (ComfyUI sets it from its own --cuda-device)."""
    device_order: str | None = None
    """CUDA_DEVICE_ORDER: PCI_BUS_ID numbers devices as NVML does; CUDA's default puts the fastest first."""
    cpu: bool = False
    """Started with --cpu: the master renders on no GPU."""
    bus_id: str | None = None
    """The PCI bus id of the GPU torch runs on in the master, when CUDA is up: the surest answer."""


def normalise_bus_id(bus_id: str) -> str:
    """NVML says "00000000:3B:00.0", torch "0000:3b:00.0": both become "0:3b:00.0"."""
    text = bus_id.strip().lower()
    domain, _, rest = text.partition(":")
    try:
        return f"{int(domain, 16):x}:{rest}" if text.count(":") >= 2 else text
    except ValueError:
        return text


def master_gpu(gpus: Collection[Gpu], device: MasterDevice) -> int | None:
    """The NVML index of the GPU the master itself renders on, or None (it uses none, or it is unknown).

    In order: `--cpu`; the configured index; the bus id torch reports; then CUDA_VISIBLE_DEVICES, whose
    first entry is the master's device: a UUID (or its prefix, as CUDA accepts), or an index. An index
    counts in NVML's PCI order when CUDA_DEVICE_ORDER=PCI_BUS_ID, or when every GPU is the same model
    (CUDA's fastest-first order then follows the bus too). Without any of these, ComfyUI's default:
    device 0.
    """
    by_index = {gpu.index: gpu for gpu in gpus}
    if device.cpu:
        return None
    if device.configured is not None:
        return device.configured
    if device.bus_id:
        wanted = normalise_bus_id(device.bus_id)
        found = [gpu.index for gpu in gpus if gpu.pci_bus_id and normalise_bus_id(gpu.pci_bus_id) == wanted]
        if found:
            return found[0]
    first = (device.visible_devices or "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        found = [gpu.index for gpu in gpus if gpu.uuid.startswith(first)]
        if not found:
            logger.info("CUDA_VISIBLE_DEVICES names %s, which NVML does not list; assuming the master uses no listed GPU", first)
        return found[0] if found else None
    position = int(first) if first.isdigit() else 0
    same_model = len({gpu.name for gpu in gpus}) <= 1
    if device.device_order != "PCI_BUS_ID" and not same_model:
        logger.info("CUDA numbers mixed GPUs fastest first, NVML by bus: assuming the master's device %d is NVML's %d "
                    "(set CUDA_DEVICE_ORDER=PCI_BUS_ID or master.cuda_device to be sure)", position, position)
    return position if position in by_index else None


def first_launch_workers(
    gpus: Collection[Gpu],
    master_index: int | None,
    taken_ports: Collection[int],
    is_free: Callable[[int], bool] = port_is_free,
) -> list[WorkerConfig]:
    """One local worker per GPU the master does not use (`master_index`, see `master_gpu`), on ports
    from 8189 up.

    Ports already named in `taken_ports` (the registry's and the master's) or in use on this
    machine are skipped. The caller records `local_workers_seeded` so that deleting these later sticks.
    """
    taken = set(taken_ports)
    workers: list[WorkerConfig] = []
    port: int | None = FIRST_WORKER_PORT
    for gpu in sorted(gpus, key=lambda g: g.index):
        if gpu.index == master_index:
            continue
        port = next_free_port(port, taken, is_free)
        if port is None:
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
