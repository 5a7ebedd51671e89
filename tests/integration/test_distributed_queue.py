"""The distributed queue: whole prompts on the first free participant, results in the master's history."""

from __future__ import annotations

import threading

from tests.conftest import Cluster
from tests.harness import wait_until
from tests.integration.workflows import read_stamp, saved_images


def _whole_prompt(seed: int, sleep: float, prefix: str) -> dict:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 16, "height": 8, "batch_size": 1}},
        "2": {"class_type": "DistTestSleep", "inputs": {"images": ["1", 0], "seconds": sleep, "steps": 4}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def _worker_name(entry: dict) -> str | None:
    return next((out["distributed_worker"][0] for out in entry["outputs"].values() if "distributed_worker" in out), None)


def test_two_queued_prompts_run_on_two_workers_at_once_and_land_in_the_masters_history(cluster: Cluster) -> None:
    cluster.use_workers("a", "b", participate=False, distributed_queue=True)
    first = cluster.master.queue_prompt(_whole_prompt(seed=61, sleep=2, prefix="queue-first"))
    second = cluster.master.queue_prompt(_whole_prompt(seed=62, sleep=2, prefix="queue-second"))
    wait_until(lambda: all(cluster.workers[w].get("/prompt")[1]["exec_info"]["queue_remaining"] > 0 for w in ("a", "b")), 30,
               interval=0.05, message="both workers running a prompt at the same time")
    entries = [cluster.master.wait_history(first), cluster.master.wait_history(second)]

    assert [_worker_name(e) for e in entries] == ["Worker a", "Worker b"]
    assert [[read_stamp(p) for p in saved_images(e, cluster.master.output_dir)] for e in entries] == [[(61, 0)], [(62, 0)]]
    assert all(p.name.startswith("queue-") for e in entries for p in saved_images(e, cluster.master.output_dir))


def test_first_queued_prompt_runs_on_the_master_when_it_is_free(cluster: Cluster) -> None:
    cluster.use_workers("a", distributed_queue=True)
    entry = cluster.run(_whole_prompt(seed=70, sleep=0.1, prefix="queue-master"))

    assert entry["status"]["status_str"] == "success"
    assert _worker_name(entry) is None
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(70, 0)]


def test_interrupt_on_the_master_stops_the_queued_prompt_on_its_worker(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False, distributed_queue=True)
    worker = cluster.workers["a"]

    def interrupt_when_running() -> None:
        wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] > 0, 30, interval=0.05)
        cluster.master.post("/interrupt", {})

    thread = threading.Thread(target=interrupt_when_running)
    thread.start()
    entry = cluster.run(_whole_prompt(seed=80, sleep=30, prefix="queue-cancel"), timeout=60)
    thread.join()

    assert entry["status"]["status_str"] == "error"
    wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] == 0, 10, message="the worker's queue to empty")


def test_prompts_are_not_held_when_the_distributed_queue_is_off(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False)
    entry = cluster.run(_whole_prompt(seed=90, sleep=0.1, prefix="queue-off"))

    assert _worker_name(entry) is None and "3" in entry["outputs"]
