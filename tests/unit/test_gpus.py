"""GPU discovery on this GPU-less machine, and the workers a first launch adds."""

from __future__ import annotations

import logging

import pytest

from distributed.workers.local import gpus
from distributed.workers.local.gpus import (
    FIRST_WORKER_PORT,
    Gpu,
    GpuInventory,
    MasterDevice,
    discover_gpus,
    first_launch_workers,
    master_gpu,
)


def _gpu(index: int, name: str = "NVIDIA Test") -> Gpu:
    bus_id = f"00000000:{0x3B + index:02X}:00.0"
    return Gpu(index=index, name=name, memory_total=24 * 2**30, uuid=f"GPU-{index:08d}-aaaa", pci_bus_id=bus_id)


def _all_free(port: int) -> bool:
    return True


def test_discovery_without_a_driver_reports_no_driver_instead_of_raising() -> None:
    inventory = discover_gpus()

    assert inventory == GpuInventory((), inventory.problem)
    assert inventory.problem is not None and inventory.problem.startswith("no NVIDIA driver found")


def test_a_missing_driver_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    gpus._log_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="distributed.workers.local.gpus"):
        discover_gpus()
        discover_gpus()

    assert len([r for r in caplog.records if "no NVIDIA driver found" in r.getMessage()]) == 1


def test_first_launch_adds_one_local_worker_per_gpu_other_than_the_masters() -> None:
    workers = first_launch_workers([_gpu(0), _gpu(1), _gpu(2)], master_index=1, taken_ports=[], is_free=_all_free)

    assert [(w.id, w.type, w.cuda_device, w.port) for w in workers] == [
        ("gpu0", "local", 0, FIRST_WORKER_PORT),
        ("gpu2", "local", 2, FIRST_WORKER_PORT + 1),
    ]


def test_a_master_on_no_gpu_leaves_every_gpu_to_workers() -> None:
    workers = first_launch_workers([_gpu(0), _gpu(1)], master_index=None, taken_ports=[], is_free=_all_free)

    assert [w.cuda_device for w in workers] == [0, 1]


GPUS = [_gpu(0), _gpu(1), _gpu(2)]
MIXED = [_gpu(0, "NVIDIA RTX 3060"), _gpu(1, "NVIDIA RTX 4090")]


@pytest.mark.parametrize(("device", "gpus", "expected"), [
    (MasterDevice(), GPUS, 0),                                                      # ComfyUI's default: device 0
    (MasterDevice(configured=2, visible_devices="1"), GPUS, 2),                     # the user's word wins
    (MasterDevice(visible_devices="1"), GPUS, 1),                                   # --cuda-device 1 (ComfyUI sets this)
    (MasterDevice(visible_devices="2,0"), GPUS, 2),                                 # the first visible device is the master's
    (MasterDevice(visible_devices="GPU-00000001"), GPUS, 1),                        # a UUID prefix, as CUDA takes it
    (MasterDevice(visible_devices="GPU-deadbeef"), GPUS, None),                     # a GPU NVML does not list
    (MasterDevice(visible_devices="MIG-00000000-aaaa"), GPUS, None),
    (MasterDevice(visible_devices="1", device_order="PCI_BUS_ID"), MIXED, 1),
    (MasterDevice(visible_devices="1", bus_id="0000:3b:00.0"), MIXED, 0),           # torch's bus id beats the guess
    (MasterDevice(cpu=True, visible_devices="1"), GPUS, None),                      # --cpu: no GPU at all
])
def test_the_masters_own_gpu_is_worked_out_from_how_comfyui_started(device: MasterDevice, gpus: list[Gpu], expected: int | None) -> None:
    assert master_gpu(gpus, device) == expected


def test_a_master_started_on_gpu_1_seeds_a_worker_on_gpu_0_and_not_on_its_own() -> None:
    index = master_gpu(GPUS, MasterDevice(visible_devices="1"))
    workers = first_launch_workers(GPUS, index, taken_ports=[], is_free=_all_free)

    assert [w.cuda_device for w in workers] == [0, 2]


def test_first_launch_skips_ports_taken_in_the_registry_or_in_use() -> None:
    in_use = {FIRST_WORKER_PORT + 1}
    workers = first_launch_workers(
        [_gpu(0), _gpu(1), _gpu(2)], master_index=0, taken_ports=[FIRST_WORKER_PORT],
        is_free=lambda port: port not in in_use,
    )

    assert [w.port for w in workers] == [FIRST_WORKER_PORT + 2, FIRST_WORKER_PORT + 3]


def test_first_launch_names_workers_after_their_gpu() -> None:
    (worker,) = first_launch_workers([_gpu(0), _gpu(1, "NVIDIA GeForce RTX 4090")], 0, [], is_free=_all_free)

    assert worker.name == "GPU 1 (NVIDIA GeForce RTX 4090)"
    assert worker.base_url == f"http://127.0.0.1:{FIRST_WORKER_PORT}"


def test_first_launch_on_a_machine_without_gpus_adds_nothing() -> None:
    assert first_launch_workers([], master_index=None, taken_ports=[], is_free=_all_free) == []
