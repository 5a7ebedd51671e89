"""Issue 13.1: a participant whose first run loaded its model is not starved of work afterwards.

Three equal participants (the master and workers `a`, `b`, all on this CPU); one of them starts warm,
the others load their model in the first run. Every later run must still give each a share: a cold
run only bounds a participant's estimate, and an uncertain estimate is optimistic. Backup copies are
off here: on a shared CPU a copy may win a share from its participant, which is not what is tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import OUTPUT_ROOT, Cluster
from tests.fixtures.tiny_sd import DECODE_NODE, OUTPUT_NODE, SAMPLER_NODE, tiny_txt2img_prompt, write_tiny_checkpoint
from tests.harness import ComfyInstance, reset_dir
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt

COLLECTOR_NODE = "8"
SEED_NODE = "9"


def tiny_collector_prompt(ckpt_name: str, seed: int, shares: int = 0) -> dict[str, Any]:
    """The tiny txt2img prompt with each share's seed from a Distributed Seed, through a collector."""
    prompt = tiny_txt2img_prompt(ckpt_name, seed=seed, filename_prefix="cold")
    prompt[SEED_NODE] = {"class_type": "DistributedSeed", "inputs": {"seed": seed}}
    prompt[SAMPLER_NODE]["inputs"]["seed"] = [SEED_NODE, 0]
    prompt[COLLECTOR_NODE] = {"class_type": "DistributedCollector", "inputs": {"images": [DECODE_NODE, 0], "shares": shares}}
    prompt[OUTPUT_NODE]["inputs"]["images"] = [COLLECTOR_NODE, 0]
    return prompt


def participants(cluster: Cluster, entry: dict[str, Any]) -> list[str]:
    assert entry["status"]["status_str"] == "success", entry["status"]
    return [share["participant"] for share in sorted(cluster.job(entry)["shares"], key=lambda s: s["index"])]


def test_a_worker_warm_from_before_does_not_take_every_share_from_participants_that_loaded_their_model(cluster: Cluster) -> None:
    ckpt_name = ""
    for instance in (cluster.master, cluster.workers["a"], cluster.workers["b"]):
        ckpt_name = write_tiny_checkpoint(instance.base_dir / "models")
    cluster.use_workers("a", "b", backup_tasks=False)
    cluster.wait_online("a", "b")
    worker_a = cluster.workers["a"]
    warm_up = tiny_txt2img_prompt(ckpt_name, seed=1, filename_prefix="warm")
    assert worker_a.wait_history(worker_a.queue_prompt(warm_up), 240)["status"]["status_str"] == "success"

    first = cluster.run(tiny_collector_prompt(ckpt_name, seed=100), timeout=240)
    assert participants(cluster, first) == ["master", "a", "b"]  # a ran warm; the master and b loaded the model
    mixed = cluster.run(tiny_collector_prompt(ckpt_name, seed=200, shares=3), timeout=240)
    later = [cluster.run(tiny_collector_prompt(ckpt_name, seed=seed), timeout=240) for seed in (300, 400, 500)]

    assert sorted(participants(cluster, mixed)) == ["a", "b", "master"]
    assert [participants(cluster, entry) for entry in later] == [["master", "a", "b"]] * 3


@pytest.fixture
def cold_worker(cluster: Cluster) -> Iterator[ComfyInstance]:
    """A worker whose first DistTestSleep takes 10 s longer: a model load on its first run only."""
    worker = ComfyInstance("worker-cold", reset_dir(OUTPUT_ROOT / "worker-cold"), env={"DIST_TEST_COLD_START_SECONDS": "10"})
    worker.start()
    try:
        cluster.workers["cold"] = worker.wait_ready()
        yield worker
    finally:
        cluster.workers.pop("cold", None)
        worker.stop()


def test_a_worker_with_a_slow_first_run_gets_one_share_of_every_later_fan_out_run(cluster: Cluster, cold_worker: ComfyInstance) -> None:
    cluster.use_workers("a", "cold", backup_tasks=False)
    cluster.wait_online("a", "cold")
    seeds = (1000, 1100, 1200, 1300)
    runs = [cluster.run(seed_stamp_prompt(seed=seed, sleep=0.5), timeout=120) for seed in seeds]
    shares = seed_stamp_prompt(seed=1400, sleep=0.5)
    shares["4"]["inputs"]["shares"] = 3
    shares_run = cluster.run(shares, timeout=120)

    for seed, entry in zip(seeds, runs, strict=True):
        assert [read_stamp(path)[0] for path in saved_images(entry, cluster.master.output_dir)] == [seed, seed + 1, seed + 2]
    assert [participants(cluster, entry) for entry in runs] == [["master", "a", "cold"]] * 4
    assert sorted(participants(cluster, shares_run)) == ["a", "cold", "master"]
