"""The collector end to end: a real master with the extension, real stock workers without it."""

from __future__ import annotations

import signal
import threading

import numpy as np
from PIL import Image

from tests.conftest import Cluster
from tests.harness import ComfyInstance, free_port, wait_until
from tests.integration.workflows import error_message, noise_prompt, read_stamp, saved_images, seed_stamp_prompt


def test_collector_returns_every_share_in_order_each_with_its_own_seed(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    entry = cluster.run(seed_stamp_prompt(seed=1000, batch_size=2))

    assert entry["status"]["status_str"] == "success"
    stamps = [read_stamp(path) for path in saved_images(entry, cluster.master.output_dir)]
    assert stamps == [(1000, 0), (1000, 1), (1001, 0), (1001, 1), (1002, 0), (1002, 1)]


def test_share_seeds_repeat_on_rerun_whichever_worker_renders(cluster: Cluster) -> None:
    cluster.use_workers("b", "a")
    first = [read_stamp(p) for p in saved_images(cluster.run(seed_stamp_prompt(seed=77)), cluster.master.output_dir)]
    cluster.use_workers("a", "b")
    second = [read_stamp(p) for p in saved_images(cluster.run(seed_stamp_prompt(seed=77)), cluster.master.output_dir)]

    assert first == second == [(77, 0), (78, 0), (79, 0)]


def test_distributed_seed_into_empty_image_colour_gives_each_share_its_colour(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    prompt = {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 0x102030}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": ["1", 0]}},
        "3": {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "colour"}},
    }
    paths = saved_images(cluster.run(prompt), cluster.master.output_dir)

    colours = [tuple(int(v) for v in np.asarray(Image.open(p).convert("RGB"))[0, 0]) for p in paths]
    assert colours == [(0x10, 0x20, 0x30), (0x10, 0x20, 0x31), (0x10, 0x20, 0x32)]


def test_prompt_without_collector_runs_as_stock_comfyui(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    prompt = {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": 5, "width": 16, "height": 8, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}},
    }
    entry = cluster.run(prompt)

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(5, 0)]
    assert "distributed_job_id" not in str(entry["prompt"][2])


def test_orchestrator_master_collects_only_worker_images(cluster: Cluster) -> None:
    cluster.use_workers("a", "b", participate=False)
    entry = cluster.run(seed_stamp_prompt(seed=10))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(10, 0), (11, 0)]


def test_no_worker_enabled_runs_on_the_master_alone(cluster: Cluster) -> None:
    cluster.registry([cluster.entry("a", enabled=False)], participate=False)
    entry = cluster.run(seed_stamp_prompt(seed=3))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(3, 0)]


def test_offline_worker_is_skipped_and_named(cluster: Cluster) -> None:
    dead = {"id": "dead", "name": "Dead Box", "type": "remote", "host": "127.0.0.1", "port": free_port()}
    cluster.registry([cluster.entry("a"), dead])
    entry = cluster.run(seed_stamp_prompt(seed=50))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(50, 0), (51, 0)]
    assert "skipping worker Dead Box (connection refused" in cluster.master.log_tail(200)


def test_worker_lacking_a_node_has_its_share_rerun_on_another(cluster: Cluster) -> None:
    cluster.use_workers("stock", "a")
    entry = cluster.run(seed_stamp_prompt(seed=200, sleep=0.5))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(200, 0), (201, 0), (202, 0)]
    shares = {s["index"]: s for s in cluster.job(entry)["shares"]}
    assert shares[1]["participant"] == "a" and shares[2]["participant"] == "a"
    rejected = [line for s in shares.values() for line in s["attempts"]]
    assert len(rejected) == 1 and "Worker stock" in rejected[0] and "DistTestSeedStamp" in rejected[0]


def test_the_master_renders_a_share_no_worker_can_run_when_it_takes_part(cluster: Cluster) -> None:
    cluster.use_workers("stock", assign_timeout=2)
    entry = cluster.run(seed_stamp_prompt(seed=1, batch_size=2))

    assert entry["status"]["status_str"] == "success"
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    share = {s["index"]: s for s in cluster.job(entry)["shares"]}[1]
    assert share["participant"] == "master" and share["state"] == "done"
    assert len(share["attempts"]) == 1 and "Worker stock" in share["attempts"][0] and "DistTestSeedStamp" in share["attempts"][0]


def test_prompt_fails_naming_the_worker_when_no_participant_can_run_a_share(cluster: Cluster) -> None:
    cluster.use_workers("stock", participate=False, assign_timeout=2)
    entry = cluster.run(seed_stamp_prompt(seed=1))

    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert "Worker stock" in message and "DistTestSeedStamp" in message
    assert not saved_images(entry, cluster.master.output_dir)


def test_worker_killed_mid_run_has_its_share_rerun_and_every_image_arrives_once(cluster: Cluster, spare_worker: ComfyInstance) -> None:
    cluster.workers["spare"] = spare_worker
    cluster.use_workers("spare", "a")
    running = threading.Event()

    def kill_when_running() -> None:
        wait_until(lambda: spare_worker.get("/prompt")[1]["exec_info"]["queue_remaining"] > 0, 60, interval=0.05)
        running.set()
        spare_worker.kill()

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    entry = cluster.run(seed_stamp_prompt(seed=300, sleep=3))
    killer.join()

    assert running.is_set()
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(300, 0), (301, 0), (302, 0)]
    shares = {s["index"]: s for s in cluster.job(entry)["shares"]}
    assert any("Worker spare" in line for line in shares[1]["attempts"])
    assert shares[1]["participant"] == "a"


def test_frozen_worker_is_detected_by_heartbeat_and_its_share_rerun(cluster: Cluster, spare_worker: ComfyInstance) -> None:
    cluster.workers["spare"] = spare_worker
    cluster.use_workers("spare", "a", worker_timeout=4)

    def freeze_when_running() -> None:
        wait_until(lambda: spare_worker.get("/prompt")[1]["exec_info"]["queue_remaining"] > 0, 60, interval=0.05)
        spare_worker.signal(signal.SIGSTOP)

    freezer = threading.Thread(target=freeze_when_running)
    freezer.start()
    try:
        entry = cluster.run(seed_stamp_prompt(seed=400, sleep=3))
    finally:
        freezer.join()
        spare_worker.signal(signal.SIGCONT)

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(400, 0), (401, 0), (402, 0)]
    attempts = [line for s in cluster.job(entry)["shares"] for line in s["attempts"]]
    assert len(attempts) == 1 and "heartbeat" in attempts[0]


def test_large_images_and_batches_of_sixteen_arrive_intact(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    big = cluster.run(noise_prompt(seed=9, size=2048), timeout=240)
    batch = cluster.run(noise_prompt(seed=9, size=64, batch_size=16, prefix="batch"))

    assert big["status"]["status_str"] == "success"
    assert [Image.open(p).size for p in saved_images(big, cluster.master.output_dir)] == [(2048, 2048)] * 3
    assert len(saved_images(batch, cluster.master.output_dir)) == 48
