"""Local workers driven through the master's API: launch, run, stop, crash, bad input."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.conftest import Cluster
from tests.harness import free_port, http_json, wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt


def _local(worker_id: str, port: int, **fields) -> dict:
    return {"id": worker_id, "name": f"Local {worker_id}", "type": "local", "host": "127.0.0.1", "port": port, **fields}


def _state(cluster: Cluster, worker_id: str) -> dict:
    workers = cluster.master.get("/distributed/workers")[1]["workers"]
    return next(w["status"] for w in workers if w["id"] == worker_id)


def _action(cluster: Cluster, worker_id: str, action: str) -> tuple[int, dict]:
    return http_json("POST", f"{cluster.master.url}/distributed/workers/{worker_id}/{action}")


@pytest.fixture
def local_pair(cluster: Cluster):
    ports = [free_port(), free_port()]
    cluster.registry([_local("l1", ports[0]), _local("l2", ports[1])])
    yield cluster
    for worker_id in ("l1", "l2"):
        _action(cluster, worker_id, "stop")


def test_two_local_workers_launch_come_online_and_run_a_distributed_prompt(local_pair: Cluster) -> None:
    cluster = local_pair
    for worker_id in ("l1", "l2"):
        status, body = _action(cluster, worker_id, "launch")
        assert status == 202, body
    wait_until(lambda: all(_state(cluster, w)["state"] in ("online", "busy") for w in ("l1", "l2")), 120,
               message="both local workers online")

    entry = cluster.run(seed_stamp_prompt(seed=900))
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(900, 0), (901, 0), (902, 0)]

    prompt_id = cluster.master.queue_prompt(seed_stamp_prompt(seed=950, sleep=20))
    wait_until(lambda: _state(cluster, "l2")["queue_remaining"] > 0, 60, interval=0.1, message="l2 running its share")
    status, _ = _action(cluster, "l2", "stop")
    assert status == 202
    wait_until(lambda: _state(cluster, "l2")["state"] == "stopped", 30, message="l2 shown as stopped after stop")
    entry = cluster.master.wait_history(prompt_id, 180)
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(950, 0), (951, 0), (952, 0)]
    attempts = [line for share in cluster.job(entry)["shares"] for line in share["attempts"]]
    assert attempts == ["worker 'Local l2': stopped by the user"]
    log_status, log = cluster.master.get("/distributed/workers/l1/log?lines=50")
    assert log_status == 200 and any("To see the GUI go to" in line for line in log["lines"])


def test_local_worker_killed_is_restarted_by_the_master(local_pair: Cluster) -> None:
    cluster = local_pair
    _action(cluster, "l1", "launch")
    wait_until(lambda: _state(cluster, "l1")["state"] == "online", 120, message="l1 online")
    pid = _action(cluster, "l1", "launch")[1]["pid"]

    os.kill(pid, signal.SIGKILL)

    wait_until(lambda: _state(cluster, "l1")["state"] != "online", 20, message="the master noticing the crash")
    wait_until(lambda: _state(cluster, "l1")["state"] == "online", 120, message="l1 restarted and online")
    assert _action(cluster, "l1", "launch")[1]["pid"] != pid


def test_taken_port_is_reported_before_launch(cluster: Cluster) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        cluster.registry([_local("busy", sock.getsockname()[1])])
        status, body = _action(cluster, "busy", "launch")

    assert status == 409 and "port" in body["error"]


def test_an_unknown_flag_written_by_hand_is_refused_at_launch_naming_it(cluster: Cluster) -> None:
    cluster.registry([_local("typo", free_port(), extra_args="--lowvram --no-such-flag")])
    status, body = _action(cluster, "typo", "launch")

    assert status == 409 and "--no-such-flag is not a ComfyUI flag" in body["error"]
    assert _state(cluster, "typo")["state"] != "launching"


def test_flags_comfyui_refuses_end_in_an_error_state_with_the_log(cluster: Cluster) -> None:
    cluster.registry([_local("bad", free_port(), extra_args="--cpu --cache-classic --cache-none")])
    status, _ = _action(cluster, "bad", "launch")
    assert status == 202

    wait_until(lambda: _state(cluster, "bad")["state"] == "error", 60, message="the error state")
    assert "not allowed with argument --cache-classic" in _state(cluster, "bad")["error"]


def test_launching_a_remote_worker_is_refused(cluster: Cluster) -> None:
    cluster.use_workers("a")
    status, body = _action(cluster, "a", "launch")
    assert status == 400 and body["field"] == "type"


def test_remote_worker_log_comes_from_its_own_comfyui(cluster: Cluster) -> None:
    cluster.use_workers("a")
    worker = cluster.workers["a"]
    worker.wait_history(worker.queue_prompt({"1": {"class_type": "DistTestSeedStamp", "inputs": {
        "seed": 424242, "width": 8, "height": 8, "batch_size": 1}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}))
    status, body = cluster.master.get("/distributed/workers/a/log?lines=20")
    assert status == 200 and any("Prompt executed in" in line for line in body["lines"])
