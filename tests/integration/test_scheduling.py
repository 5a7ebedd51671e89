"""Late binding, stable share order and seeds, split batch, and cancelling from the master."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.conftest import OUTPUT_ROOT, Cluster
from tests.fixtures.tiny_sd import DECODE_NODE, OUTPUT_NODE, tiny_txt2img_prompt, write_tiny_checkpoint
from tests.harness import ComfyInstance, reset_dir, wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt


@pytest.fixture(scope="module")
def slow_worker(cluster: Cluster) -> Iterator[ComfyInstance]:
    """A worker four times slower than the others at the test sleep node."""
    worker = ComfyInstance("worker-slow", reset_dir(OUTPUT_ROOT / "worker-slow"), env={"DIST_TEST_SLOWDOWN": "4"}).start()
    try:
        cluster.workers["slow"] = worker.wait_ready()
        yield worker
    finally:
        cluster.workers.pop("slow", None)
        worker.stop()


def _shares_prompt(seed: int, shares: int, sleep: float) -> dict:
    prompt = seed_stamp_prompt(seed=seed, sleep=sleep)
    prompt["4"]["inputs"]["shares"] = shares
    return prompt


def test_slow_participant_ends_up_with_fewer_shares(cluster: Cluster, slow_worker: ComfyInstance) -> None:
    cluster.use_workers("slow", "a", participate=False)
    entry = cluster.run(_shares_prompt(seed=10, shares=8, sleep=0.4))

    assert [read_stamp(p)[0] for p in saved_images(entry, cluster.master.output_dir)] == list(range(10, 18))
    counts = Counter(share["participant"] for share in cluster.job(entry)["shares"])
    assert counts["a"] > counts["slow"] >= 1


def test_measured_speeds_are_shown_relative_to_the_fastest(cluster: Cluster, slow_worker: ComfyInstance) -> None:
    """A speed is shown once measured: two warm runs that agree (a first run may load models)."""
    cluster.use_workers("slow", "a", participate=False)
    for seed in (30, 40, 50):
        cluster.run(_shares_prompt(seed=seed, shares=6, sleep=0.4))

    workers = {w["id"]: w for w in cluster.master.get("/distributed/workers")[1]["workers"]}
    assert workers["a"]["relative_speed"] == 1.0 and workers["slow"]["relative_speed"] < 0.5
    speeds = cluster.master.get("/distributed/speeds")[1]
    assert any(set(per_workflow) >= {"a", "slow"} for per_workflow in speeds.values())


def test_share_order_and_seeds_do_not_depend_on_who_renders(cluster: Cluster, slow_worker: ComfyInstance) -> None:
    cluster.use_workers("slow", "a")
    first = cluster.run(_shares_prompt(seed=500, shares=5, sleep=0.2))
    cluster.use_workers("b", "a")
    second = cluster.run(_shares_prompt(seed=500, shares=5, sleep=0.2))

    expected = [(500 + k, 0) for k in range(5)]
    assert [read_stamp(p) for p in saved_images(first, cluster.master.output_dir)] == expected
    assert [read_stamp(p) for p in saved_images(second, cluster.master.output_dir)] == expected
    assert {s["participant"] for s in cluster.job(first)["shares"]} != {s["participant"] for s in cluster.job(second)["shares"]}


def _split_beside_single(cluster: Cluster, seed: int, batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """The batch rendered whole by worker `a`, the same batch split by the master, and the split's job."""
    checkpoint = write_tiny_checkpoint(cluster.workers["a"].base_dir / "models")
    single = tiny_txt2img_prompt(checkpoint, seed=seed, batch_size=batch_size, filename_prefix="single")
    alone = cluster.workers["a"].wait_history(cluster.workers["a"].queue_prompt(single), 180)
    split = tiny_txt2img_prompt(checkpoint, seed=seed, batch_size=batch_size, filename_prefix="split")
    split["8"] = {"class_type": "DistributedCollector", "inputs": {"images": [DECODE_NODE, 0], "split_batch": True}}
    split[OUTPUT_NODE]["inputs"]["images"] = ["8", 0]
    together = cluster.run(split, timeout=180)
    reference = [np.asarray(Image.open(p), dtype=np.int16) for p in saved_images(alone, cluster.workers["a"].output_dir)]
    collected = [np.asarray(Image.open(p), dtype=np.int16) for p in saved_images(together, cluster.master.output_dir)]
    return reference, collected, cluster.job(together)


def test_split_batch_gives_the_same_pictures_as_one_instance(cluster: Cluster) -> None:
    for instance in (cluster.master, cluster.workers["b"]):
        write_tiny_checkpoint(instance.base_dir / "models")
    cluster.use_workers("a", "b")
    reference, collected, job = _split_beside_single(cluster, seed=31, batch_size=5)

    assert len(reference) == len(collected) == 5
    assert all(np.abs(r - c).max() <= 8 for r, c in zip(reference, collected, strict=True))
    assert np.abs(reference[0] - reference[1]).max() > 8  # the images do differ from each other
    assert job["mode"] == "split" and len({s["participant"] for s in job["shares"]}) == 3
    assert sum(s["batch"]["length"] for s in job["shares"]) == 5


def test_a_split_slice_no_worker_can_render_is_rendered_by_the_master_with_the_same_pictures(cluster: Cluster) -> None:
    write_tiny_checkpoint(cluster.master.base_dir / "models")  # the stock worker lacks the checkpoint
    cluster.use_workers("stock", assign_timeout=2)
    reference, collected, job = _split_beside_single(cluster, seed=41, batch_size=3)

    assert len(reference) == len(collected) == 3
    assert all(np.abs(r - c).max() <= 8 for r, c in zip(reference, collected, strict=True))
    assert [s["participant"] for s in job["shares"]] == ["master", "master"]
    assert "lacks model file(s)" in job["shares"][1]["attempts"][0]


def test_interrupt_on_the_master_cancels_the_share_on_the_worker(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False)
    worker = cluster.workers["a"]
    interrupted = threading.Event()

    def interrupt_when_running() -> None:
        wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] > 0, 60, interval=0.05)
        cluster.master.post("/interrupt", {})
        interrupted.set()

    thread = threading.Thread(target=interrupt_when_running)
    thread.start()
    entry = cluster.run(seed_stamp_prompt(seed=1, sleep=30), timeout=60)
    thread.join()

    assert interrupted.is_set()
    assert entry["status"]["status_str"] == "error"
    wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] == 0, 10, message="the worker's queue to empty")
