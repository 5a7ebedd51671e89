"""GPU discovery on this GPU-less machine, and the workers a first launch adds."""

from __future__ import annotations

import logging

import pytest

from distributed.workers.local import gpus
from distributed.workers.local.gpus import FIRST_WORKER_PORT, Gpu, GpuInventory, discover_gpus, first_launch_workers


def _gpu(index: int, name: str = "NVIDIA Test") -> Gpu:
    return Gpu(index=index, name=name, memory_total=24 * 2**30, uuid=f"GPU-{index:08d}")


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
    workers = first_launch_workers([_gpu(0), _gpu(1), _gpu(2)], master_cuda_device=1, taken_ports=[], is_free=_all_free)

    assert [(w.id, w.type, w.cuda_device, w.port) for w in workers] == [
        ("gpu0", "local", 0, FIRST_WORKER_PORT),
        ("gpu2", "local", 2, FIRST_WORKER_PORT + 1),
    ]


def test_first_launch_assumes_the_master_uses_gpu_0_when_unset() -> None:
    workers = first_launch_workers([_gpu(0), _gpu(1)], master_cuda_device=None, taken_ports=[], is_free=_all_free)

    assert [w.cuda_device for w in workers] == [1]


def test_first_launch_skips_ports_taken_in_the_registry_or_in_use() -> None:
    in_use = {FIRST_WORKER_PORT + 1}
    workers = first_launch_workers(
        [_gpu(0), _gpu(1), _gpu(2)], master_cuda_device=0, taken_ports=[FIRST_WORKER_PORT],
        is_free=lambda port: port not in in_use,
    )

    assert [w.port for w in workers] == [FIRST_WORKER_PORT + 2, FIRST_WORKER_PORT + 3]


def test_first_launch_names_workers_after_their_gpu() -> None:
    (worker,) = first_launch_workers([_gpu(0), _gpu(1, "NVIDIA GeForce RTX 4090")], 0, [], is_free=_all_free)

    assert worker.name == "GPU 1 (NVIDIA GeForce RTX 4090)"
    assert worker.base_url == f"http://127.0.0.1:{FIRST_WORKER_PORT}"


def test_first_launch_on_a_machine_without_gpus_adds_nothing() -> None:
    assert first_launch_workers([], master_cuda_device=None, taken_ports=[], is_free=_all_free) == []
