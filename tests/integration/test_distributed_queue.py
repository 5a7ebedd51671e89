"""The distributed queue: whole prompts on the first free participant, and a prompt a worker renders
looks, to the API, the history, the saved files and the client's events, as if the master had
rendered it. A client from PyPI (comfy-api-simplified) drives the master; a worker of the cluster,
queued directly, stands for a plain ComfyUI."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import Cluster
from tests.harness import ComfyInstance, wait_until
from tests.integration.workflows import read_stamp, saved_images

SAVE_TITLE = "Save Image"
WORKFLOW = {"last_node_id": 3, "last_link_id": 2, "version": 0.4, "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
            "nodes": [{"id": 1, "type": "DistTestSeedStamp"}, {"id": 2, "type": "DistTestSleep"}, {"id": 3, "type": "SaveImage"}]}
"""What the frontend sends as extra_pnginfo.workflow (a small one): saved images must carry it."""
EVENTS = ("execution_start", "execution_cached", "executing", "progress", "executed", "execution_success")


def _whole_prompt(seed: int, sleep: float, prefix: str) -> dict:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 16, "height": 8, "batch_size": 1},
              "_meta": {"title": "Stamp"}},
        "2": {"class_type": "DistTestSleep", "inputs": {"images": ["1", 0], "seconds": sleep, "steps": 4}, "_meta": {"title": "Sleep"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}, "_meta": {"title": SAVE_TITLE}},
    }


def _worker_name(entry: dict) -> str | None:
    return next((meta["distributed_worker"] for meta in (entry.get("meta") or {}).values() if "distributed_worker" in meta), None)


def _routed(cluster: Cluster, prompt_id: str) -> dict[str, Any]:
    status, body = cluster.master.get(f"/distributed/queue/{prompt_id}")
    assert status == 200, body
    return body


def _queue_ids(instance: ComfyInstance) -> tuple[list[str], list[str]]:
    body = instance.get("/queue")[1]
    return [item[1] for item in body["queue_running"]], [item[1] for item in body["queue_pending"]]


def _worker_busy(cluster: Cluster, name: str) -> bool:
    return cluster.workers[name].get("/prompt")[1]["exec_info"]["queue_remaining"] > 0


@contextmanager
def _master_busy(cluster: Cluster, seconds: float = 60) -> Iterator[str]:
    """The master renders a long prompt of its own (the first one queued on an idle master is its own);
    interrupted at the end."""
    blocker = cluster.master.queue_prompt(_whole_prompt(seed=uuid.uuid4().int % 10**9, sleep=seconds, prefix="queue-blocker"))
    wait_until(lambda: _routed(cluster, blocker)["participant"] == "master", 30, message="the master to render its own prompt")
    try:
        yield blocker
    finally:
        cluster.master.post("/interrupt", {"prompt_id": blocker})
        cluster.master.wait_history(blocker)


class EventLog:
    """Every event an instance sends to one client id, from before its prompt is queued."""

    def __init__(self, instance: ComfyInstance) -> None:
        self.client_id = str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []
        self._url = f"ws://127.0.0.1:{instance.port}/ws?clientId={self.client_id}"
        self._socket: Any = None
        self._connected = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._connected.wait(30), f"no websocket to {instance.name}"

    def _read(self) -> None:
        with connect(self._url, max_size=None) as socket:
            self._socket = socket
            self._connected.set()
            try:
                for message in socket:
                    if isinstance(message, str):
                        self.messages.append(json.loads(message))
            except ConnectionClosed:  # the test is done with it
                return

    def of(self, prompt_id: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == prompt_id]

    def until_done(self, prompt_id: str, timeout: float = 120) -> list[dict[str, Any]]:
        wait_until(lambda: any(m["type"] == "executing" and m["data"].get("node") is None for m in self.of(prompt_id)), timeout,
                   message=f"the final 'executing' of {prompt_id}")
        self._socket.close()
        return self.of(prompt_id)


def _story(events: list[dict[str, Any]]) -> list[tuple]:
    """What a client learns of a run, without file names and timestamps."""
    story: list[tuple] = []
    for message in events:
        kind, data = message["type"], message["data"]
        if kind not in EVENTS:
            continue
        if kind == "executing":
            story.append((kind, data.get("node"), data.get("display_node")))
        elif kind == "progress":
            story.append((kind, data["node"], data["value"], data["max"]))
        elif kind == "executed":
            story.append((kind, data["node"], data["display_node"], [sorted(i) for i in data["output"]["images"]]))
        elif kind == "execution_cached":
            story.append((kind, data["nodes"]))
        else:
            story.append((kind,))
    return story


def _png_text(path: Path) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in Image.open(path).text.items()}


def _run_with_events(instance: ComfyInstance, prompt: dict) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    log = EventLog(instance)
    prompt_id = instance.queue_prompt(prompt, client_id=log.client_id, extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    events = log.until_done(prompt_id)
    return instance.wait_history(prompt_id), events


# --- who renders what ----------------------------------------------------------------------------


def test_two_queued_prompts_run_on_two_workers_at_once_and_land_in_the_masters_history(cluster: Cluster) -> None:
    cluster.use_workers("a", "b", participate=False, distributed_queue=True)
    first = cluster.master.queue_prompt(_whole_prompt(seed=61, sleep=3, prefix="queue-first"))
    second = cluster.master.queue_prompt(_whole_prompt(seed=62, sleep=3, prefix="queue-second"))
    wait_until(lambda: _worker_busy(cluster, "a") and _worker_busy(cluster, "b"), 30, interval=0.05,
               message="both workers running a prompt at the same time")
    assert sorted(_queue_ids(cluster.master)[0]) == sorted([first, second])  # the master's queue shows both running
    entries = [cluster.master.wait_history(first), cluster.master.wait_history(second)]

    assert [_worker_name(e) for e in entries] == ["Worker a", "Worker b"]
    assert [list(e["outputs"]) for e in entries] == [["3"], ["3"]]
    assert [[read_stamp(p) for p in saved_images(e, cluster.master.output_dir)] for e in entries] == [[(61, 0)], [(62, 0)]]
    assert all(p.name.startswith("queue-") for e in entries for p in saved_images(e, cluster.master.output_dir))


def test_first_queued_prompt_runs_on_the_master_when_it_is_free(cluster: Cluster) -> None:
    cluster.use_workers("a", distributed_queue=True)
    entry = cluster.run(_whole_prompt(seed=70, sleep=0.1, prefix="queue-master"))

    assert entry["status"]["status_str"] == "success"
    assert _worker_name(entry) is None
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(70, 0)]


def test_prompts_are_not_held_when_the_distributed_queue_is_off(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False)
    entry = cluster.run(_whole_prompt(seed=90, sleep=0.1, prefix="queue-off"))

    assert _worker_name(entry) is None and "3" in entry["outputs"]
    assert cluster.master.get(f"/distributed/queue/{entry['prompt'][1]}")[0] == 404


def test_a_prompt_a_worker_cannot_run_goes_back_and_the_next_worker_renders_it(cluster: Cluster) -> None:
    cluster.use_workers("stock", "a", distributed_queue=True)  # the stock worker lacks the test nodes
    with _master_busy(cluster):
        prompt_id = cluster.master.queue_prompt(_whole_prompt(seed=84, sleep=0.1, prefix="queue-retry"))
        entry = cluster.master.wait_history(prompt_id, timeout=60)

    assert entry["status"]["status_str"] == "success" and _worker_name(entry) == "Worker a"
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(84, 0)]
    (attempt,) = _routed(cluster, prompt_id)["attempts"]
    assert attempt.startswith("worker 'Worker stock':") and "DistTestSeedStamp" in attempt


# --- delete and interrupt -----------------------------------------------------------------------


def test_a_global_interrupt_on_an_orchestrating_master_stops_the_prompt_on_its_worker(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False, distributed_queue=True)
    worker = cluster.workers["a"]

    def interrupt_when_running() -> None:
        wait_until(lambda: _worker_busy(cluster, "a"), 30, interval=0.05)
        cluster.master.post("/interrupt", {})

    thread = threading.Thread(target=interrupt_when_running)
    thread.start()
    entry = cluster.run(_whole_prompt(seed=80, sleep=30, prefix="queue-cancel"), timeout=60)
    thread.join()

    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_interrupted"
    wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] == 0, 10, message="the worker's queue to empty")


def test_an_interrupt_naming_a_prompt_on_a_worker_stops_it_there_and_not_the_masters_own(cluster: Cluster) -> None:
    cluster.use_workers("a", distributed_queue=True)
    with _master_busy(cluster, seconds=20) as blocker:
        on_worker = cluster.master.queue_prompt(_whole_prompt(seed=81, sleep=30, prefix="queue-cancel-one"))
        wait_until(lambda: _worker_busy(cluster, "a"), 30, interval=0.05, message="the prompt running on worker a")

        assert cluster.master.post("/interrupt", {"prompt_id": on_worker})[0] == 200
        entry = cluster.master.wait_history(on_worker, timeout=30)

        assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_interrupted"
        assert _queue_ids(cluster.master)[0] == [blocker]  # the master's own prompt runs on
        wait_until(lambda: not _worker_busy(cluster, "a"), 10, message="worker a's queue to empty")


def test_a_prompt_deleted_from_the_masters_queue_never_runs(cluster: Cluster) -> None:
    cluster.use_workers("a", participate=False, distributed_queue=True)
    running = cluster.master.queue_prompt(_whole_prompt(seed=82, sleep=30, prefix="queue-running"))
    deleted = cluster.master.queue_prompt(_whole_prompt(seed=83, sleep=0.1, prefix="queue-deleted"))
    wait_until(lambda: _worker_busy(cluster, "a") and _queue_ids(cluster.master)[1] == [deleted], 30, interval=0.05,
               message="one prompt on worker a, the other waiting")

    cluster.master.post("/queue", {"delete": [deleted]})

    wait_until(lambda: _routed(cluster, deleted)["state"] == "cancelled", 10, message="the deleted prompt dropped")
    cluster.master.post("/interrupt", {})
    cluster.master.wait_history(running, timeout=30)
    assert cluster.master.get(f"/history/{deleted}")[1] == {}


# --- as if the master had rendered it -----------------------------------------------------------


@contextmanager
def _place(cluster: Cluster, where: str) -> Iterator[None]:
    """The next prompt queued on the master renders: on the master, on worker a while the master is
    busy, or on worker a for a master that only orchestrates (its thread waits for the worker)."""
    if where == "master":
        cluster.use_workers("a", distributed_queue=True)
        yield
    elif where == "worker":
        cluster.use_workers("a", distributed_queue=True)
        with _master_busy(cluster):
            yield
    else:
        cluster.use_workers("a", participate=False, distributed_queue=True)
        yield


PLACES = ["master", "worker", "worker-for-an-orchestrating-master"]


@pytest.mark.parametrize("where", PLACES)
def test_a_client_from_pypi_finds_the_images_under_the_users_node_ids(cluster: Cluster, where: str) -> None:
    seed = 200 + PLACES.index(where)
    workflow = ComfyWorkflowWrapper(_whole_prompt(seed=seed, sleep=0.5, prefix=f"pypi-{where}"))

    with _place(cluster, where):
        images = ComfyApiWrapper(cluster.master.url).queue_and_wait_images(workflow, SAVE_TITLE)

    assert [read_stamp(io.BytesIO(data)) for data in images.values()] == [(seed, 0)]  # type: ignore[arg-type]
    assert all(name.startswith(f"pypi-{where}_") for name in images)


@pytest.mark.parametrize("where", PLACES)
def test_a_prompt_has_the_history_events_and_png_text_of_a_plain_comfyui(cluster: Cluster, where: str) -> None:
    seed = 300 + PLACES.index(where)
    plain_entry, plain_events = _run_with_events(cluster.workers["b"], _whole_prompt(seed=seed, sleep=0.4, prefix="plain"))
    with _place(cluster, where):
        entry, events = _run_with_events(cluster.master, _whole_prompt(seed=seed, sleep=0.4, prefix="plain"))

    assert _worker_name(entry) == (None if where == "master" else "Worker a")
    # The history entry: the user's prompt as queued, outputs under its node ids, the same status.
    assert entry["prompt"][2] == plain_entry["prompt"][2] and entry["prompt"][4] == plain_entry["prompt"][4]
    assert sorted(entry["prompt"][3]) == sorted(plain_entry["prompt"][3])
    assert entry["prompt"][3]["extra_pnginfo"] == plain_entry["prompt"][3]["extra_pnginfo"] == {"workflow": WORKFLOW}
    assert list(entry["outputs"]) == list(plain_entry["outputs"]) == ["3"]
    assert [sorted(i) for i in entry["outputs"]["3"]["images"]] == [sorted(i) for i in plain_entry["outputs"]["3"]["images"]]
    assert [(i["type"], i["subfolder"]) for i in entry["outputs"]["3"]["images"]] == [("output", "")]
    assert {node: {k: v for k, v in meta.items() if k != "distributed_worker"} for node, meta in entry["meta"].items()} \
        == plain_entry["meta"]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("success", True)
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in plain_entry["status"]["messages"]]
    stamps = [m[1]["timestamp"] for m in entry["status"]["messages"]]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 400  # it really ran that long
    # What the client heard.
    assert _story(events) == _story(plain_events)
    # The saved file: the same pixels and the same text chunks.
    (saved,) = saved_images(entry, cluster.master.output_dir)
    (plain_saved,) = saved_images(plain_entry, cluster.workers["b"].output_dir)
    assert read_stamp(saved) == read_stamp(plain_saved) == (seed, 0)
    assert _png_text(saved) == _png_text(plain_saved) == {"prompt": entry["prompt"][2], "workflow": WORKFLOW}
