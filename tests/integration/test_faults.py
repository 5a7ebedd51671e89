"""The fault matrix: real workers killed, frozen, unreachable, lying, and a master killed mid-run.

Each test also records what it measured (images delivered / expected, seconds, what the user sees) in
`fault-matrix.json` under the run's output folder; docs/reliability.md is filled from that file.
Timings are recorded, never asserted.
"""

from __future__ import annotations

import collections
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from tests.conftest import OUTPUT_ROOT, Cluster
from tests.harness import ComfyInstance, http_json, reset_dir, wait_until
from tests.integration.workflows import error_message, read_stamp, saved_images, seed_stamp_prompt
from tests.proxy import WorkerProxy

MATRIX_FILE = OUTPUT_ROOT / "fault-matrix.json"
def record(fault: str, **figures: Any) -> None:
    """Adds one row to the run's fault matrix (read by docs/reliability.md's author, printed with -s)."""
    rows = json.loads(MATRIX_FILE.read_text()) if MATRIX_FILE.exists() else {}
    rows[fault] = figures
    MATRIX_FILE.write_text(json.dumps(rows, indent=2))
    print(f"\nFAULT {fault}: {figures}")


def stamps(cluster: Cluster, entry: dict[str, Any]) -> list[tuple[int, int]]:
    return [read_stamp(path) for path in saved_images(entry, cluster.master.output_dir)]


def job_of(master: ComfyInstance, prompt_id: str) -> dict[str, Any] | None:
    status, body = master.get("/distributed/jobs")
    return next((job for job in body["jobs"] if job["prompt_id"] == prompt_id), None) if status == 200 else None


def queue_remaining(instance: ComfyInstance) -> int:
    return instance.get("/prompt", timeout=5)[1]["exec_info"]["queue_remaining"]


def timed_queue(master: ComfyInstance, prompt: dict[str, Any]) -> tuple[str, float]:
    started = time.perf_counter()
    prompt_id = master.queue_prompt(prompt)
    return prompt_id, (time.perf_counter() - started) * 1000


# --- a worker that accepts connections and never answers -----------------------------------------


class SilentServer:
    """Accepts TCP connections and never reads or answers: a worker frozen below the HTTP layer."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(connection)


# --- a proxy that corrupts chosen answers of a real worker ---------------------------------------


class GarbageProxy(WorkerProxy):
    """Forwards everything to one worker, except that it spoils the answers `mode` names.

    Modes: `history_not_json` (/history/{id} is HTML), `view_truncated` (half a PNG), `view_wrong_size`
    (a valid PNG of another size), `view_500` (/view answers HTTP 500).
    """

    def __init__(self, upstream: str, mode: str) -> None:
        super().__init__(upstream)
        self.mode = mode
        self.spoiled: collections.Counter[str] = collections.Counter()

    def spoil(self, request: web.Request, status: int, body: bytes) -> web.Response | None:
        if request.path.startswith("/history/") and self.mode == "history_not_json" and b"outputs" in body:
            self.spoiled[request.path] += 1
            return web.Response(status=200, text="<html>Bad gateway, but 200</html>", content_type="text/html")
        if request.path == "/view" and self.mode.startswith("view_"):
            self.spoiled[request.path] += 1
            if self.mode == "view_truncated":
                return web.Response(status=200, body=body[: len(body) // 2], content_type="image/png")
            if self.mode == "view_wrong_size":
                spoiled = io.BytesIO()
                Image.new("RGB", (8, 8), (1, 2, 3)).save(spoiled, "PNG")
                return web.Response(status=200, body=spoiled.getvalue(), content_type="image/png")
            return web.Response(status=500, text="500 Internal Server Error")
        return None


def proxied(worker_id: str, port: int) -> dict[str, Any]:
    return {"id": worker_id, "name": f"Worker {worker_id}", "type": "remote", "host": "127.0.0.1", "port": port}


# --- killed, frozen, unreachable ------------------------------------------------------------------


def test_worker_killed_after_delivering_part_of_its_shares_loses_no_image_and_repeats_none(
    cluster: Cluster, spare_worker: ComfyInstance
) -> None:
    cluster.workers["spare"] = spare_worker
    cluster.use_workers("spare", "a", participate=False)
    cluster.wait_online("spare", "a")
    prompt = seed_stamp_prompt(seed=7000, sleep=1.0)
    prompt["4"]["inputs"]["shares"] = 6
    started = time.monotonic()
    prompt_id = cluster.master.queue_prompt(prompt)

    def spare_delivered() -> bool:
        job = job_of(cluster.master, prompt_id)
        return bool(job) and any(s["participant"] == "spare" and s["state"] == "done" for s in job["shares"])

    wait_until(spare_delivered, 60, interval=0.05, message="the spare worker to deliver one share")
    spare_worker.kill()
    killed_at = time.monotonic()
    entry = cluster.master.wait_history(prompt_id, 120)
    finished = time.monotonic()

    got = stamps(cluster, entry)
    assert sorted(got) == [(7000 + k, 0) for k in range(6)]
    job = cluster.job(entry)
    assert any("Worker spare" in line for s in job["shares"] for line in s["attempts"])
    record("worker SIGKILL after delivering part of its shares (6 shares, 2 workers)",
           user_sees="success; every image once", delivered=len(got), expected=6,
           seconds_total=round(finished - started, 1), seconds_after_kill=round(finished - killed_at, 1),
           share_seconds=1.0, reassigned=[s["index"] for s in job["shares"] if s["attempts"]])


def test_unreachable_worker_at_queue_time_answers_prompt_at_once_and_the_run_goes_on(cluster: Cluster) -> None:
    with SilentServer() as silent:
        cluster.registry([proxied("silent", silent.port), cluster.entry("a")], participate=False)
        started = time.monotonic()
        prompt_id, queue_ms = timed_queue(cluster.master, seed_stamp_prompt(seed=7100))
        entry = cluster.master.wait_history(prompt_id, 90)
        finished = time.monotonic()

    assert entry["status"]["status_str"] == "success"
    got = stamps(cluster, entry)
    assert sorted(got) == [(7100, 0)]
    record("worker unreachable at queue time (accepts TCP, never answers)",
           user_sees="POST /prompt answers at once; the worker is skipped and named in the log", delivered=len(got), expected=1,
           prompt_post_ms=round(queue_ms, 1), seconds_total=round(finished - started, 1))


def test_worker_frozen_at_queue_time_answers_prompt_at_once_and_its_share_runs_elsewhere(
    cluster: Cluster, spare_worker: ComfyInstance
) -> None:
    cluster.workers["spare"] = spare_worker
    cluster.use_workers("spare", "a", participate=False, worker_timeout=4)
    cluster.wait_online("spare", "a")
    spare_worker.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        prompt_id, queue_ms = timed_queue(cluster.master, seed_stamp_prompt(seed=7200))
        entry = cluster.master.wait_history(prompt_id, 120)
        finished = time.monotonic()
    finally:
        spare_worker.signal(signal.SIGCONT)

    got = stamps(cluster, entry)
    assert sorted(got) == [(7200, 0), (7201, 0)]
    record("worker frozen (SIGSTOP) at queue time", user_sees="POST /prompt answers at once; the frozen worker's share runs elsewhere",
           delivered=len(got), expected=2, prompt_post_ms=round(queue_ms, 1), seconds_total=round(finished - started, 1),
           worker_timeout=4)


def test_interrupt_on_the_master_cancels_the_shares_on_every_worker(cluster: Cluster) -> None:
    cluster.use_workers("a", "b", participate=False)
    cluster.wait_online("a", "b")
    prompt_id = cluster.master.queue_prompt(seed_stamp_prompt(seed=7300, sleep=30))
    workers = [cluster.workers["a"], cluster.workers["b"]]
    wait_until(lambda: all(queue_remaining(w) > 0 for w in workers), 60, interval=0.05, message="both workers running a share")
    interrupted_at = time.monotonic()
    status, _ = http_json("POST", f"{cluster.master.url}/interrupt", {})
    assert status == 200

    wait_until(lambda: all(queue_remaining(w) == 0 for w in workers), 20, interval=0.05, message="both workers' queues empty")
    emptied = time.monotonic() - interrupted_at
    entry = cluster.master.wait_history(prompt_id, 30)

    assert entry["status"]["status_str"] == "error"
    assert not saved_images(entry, cluster.master.output_dir)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    record("interrupt from the master's /interrupt", user_sees=f"prompt ends with {kinds[-1]}; both workers stop",
           delivered=0, expected=0, seconds_until_workers_idle=round(emptied, 2), share_seconds=30)


# --- garbage from a worker ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["history_not_json", "view_truncated", "view_500"])
def test_garbage_from_a_worker_fails_that_share_over_and_the_master_stays_up(cluster: Cluster, mode: str) -> None:
    with GarbageProxy(cluster.workers["a"].url, mode) as proxy:
        cluster.registry([proxied("bad", proxy.port), cluster.entry("b")], participate=False)
        cluster.wait_online("bad", "b")
        started = time.monotonic()
        entry = cluster.run(seed_stamp_prompt(seed=7400))
        finished = time.monotonic()

    assert proxy.spoiled, "the share never reached the spoiling worker"
    got = stamps(cluster, entry)
    assert sorted(got) == [(7400, 0), (7401, 0)]
    attempts = [line for s in cluster.job(entry)["shares"] for line in s["attempts"]]
    assert any("Worker bad" in line for line in attempts)
    assert cluster.master.get("/system_stats")[0] == 200
    record(f"garbage from a worker: {mode}", user_sees="success; the share re-ran on the other worker",
           delivered=len(got), expected=2, seconds_total=round(finished - started, 1), cause=attempts[0])


def test_images_of_the_wrong_size_fail_that_share_over_to_another_participant(cluster: Cluster) -> None:
    """The master's own share says what size every share must be."""
    with GarbageProxy(cluster.workers["a"].url, "view_wrong_size") as proxy:
        cluster.registry([proxied("bad", proxy.port), cluster.entry("b")])
        cluster.wait_online("bad", "b")
        started = time.monotonic()
        entry = cluster.run(seed_stamp_prompt(seed=7450))
        finished = time.monotonic()

    assert proxy.spoiled, "the share never reached the spoiling worker"
    got = stamps(cluster, entry)
    assert got == [(7450, 0), (7451, 0), (7452, 0)]
    attempts = [line for s in cluster.job(entry)["shares"] for line in s["attempts"]]
    assert len(attempts) == 1 and "Worker bad" in attempts[0] and "8x8" in attempts[0]
    record("garbage from a worker: view_wrong_size", user_sees="success; the share re-ran on the other worker",
           delivered=len(got), expected=3, seconds_total=round(finished - started, 1), cause=attempts[0])


def test_when_no_participant_delivers_the_prompt_errors_naming_the_worker_and_cause(cluster: Cluster) -> None:
    with GarbageProxy(cluster.workers["a"].url, "view_truncated") as proxy:
        cluster.registry([proxied("bad", proxy.port)], participate=False, assign_timeout=3)
        cluster.wait_online("bad")
        started = time.monotonic()
        entry = cluster.run(seed_stamp_prompt(seed=7500))
        finished = time.monotonic()

    message = error_message(entry)
    assert entry["status"]["status_str"] == "error"
    assert "Worker bad" in message and "could not be decoded" in message
    assert not saved_images(entry, cluster.master.output_dir)
    record("no participant can deliver (only worker sends truncated images)", user_sees=f"execution_error: {message[:160]}",
           delivered=0, expected=1, seconds_total=round(finished - started, 1), assign_timeout=3)


# --- the master killed mid-run -------------------------------------------------------------------


@pytest.fixture
def own_master(cluster: Cluster) -> Iterator[ComfyInstance]:
    """A master of its own (it gets killed), driving the session cluster's worker `b`."""
    base = reset_dir(OUTPUT_ROOT / f"restart-{time.monotonic_ns()}")
    workers_file = base / "workers.json"
    workers_file.write_text(json.dumps({
        "version": 1, "master": {"participate": False},
        "settings": {"health_interval": 0.5, "worker_timeout": 6, "assign_timeout": 20},
        "workers": [{"id": "b", "name": "Worker b", "type": "remote", "host": "127.0.0.1", "port": cluster.workers["b"].port}],
    }, indent=2))
    master = ComfyInstance("master-restart", base / "master", with_extension=True,
                           env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    try:
        yield master.start().wait_ready()
    finally:
        master.stop()


ORPHAN_SHARE_SECONDS = 240
"""Far longer than a master restart takes on a loaded machine: the share must still be running when the
restarted master looks for what its previous run left behind."""


def test_master_killed_mid_run_restarts_with_workers_json_intact_and_nothing_left_hanging(
    cluster: Cluster, own_master: ComfyInstance
) -> None:
    worker = cluster.workers["b"]
    workers_file = own_master.env["DISTRIBUTED_WORKERS_FILE"]
    before = open(workers_file, "rb").read()
    wait_until(lambda: own_master.get("/distributed/workers")[1]["workers"][0]["status"]["state"] == "online", 30,
               message="worker b online on the master")
    prompt_id = own_master.queue_prompt(seed_stamp_prompt(seed=7600, sleep=ORPHAN_SHARE_SECONDS))

    def running_share() -> str | None:
        running = worker.get("/queue")[1]["queue_running"]
        return next((item[1] for item in running if str(item[3].get("client_id", "")).startswith("distributed-")), None)

    orphan = wait_until(running_share, 60, interval=0.05, message="worker b running the share")

    os.kill(own_master.process.pid, signal.SIGKILL)
    own_master.process.wait(10)
    killed_at = time.monotonic()
    own_master.start().wait_ready()
    restarted = time.monotonic() - killed_at

    assert open(workers_file, "rb").read() == before
    status, history = own_master.get(f"/history/{prompt_id}")
    assert status == 200 and history == {}
    assert own_master.get("/prompt")[1]["exec_info"]["queue_remaining"] == 0
    # The restarted master cancels the share its previous run left on b, long before the share would end.
    wait_until(lambda: queue_remaining(worker) == 0, ORPHAN_SHARE_SECONDS / 2, interval=0.1,
               message="the restarted master to cancel the share its previous run left on worker b")
    orphan_gone = time.monotonic() - killed_at
    orphan_history = worker.get(f"/history/{orphan}")[1].get(orphan, {})
    orphan_events = [message[0] for message in (orphan_history.get("status") or {}).get("messages", [])]
    assert "execution_interrupted" in orphan_events, orphan_history.get("status")
    assert job_of(own_master, prompt_id) is None
    wait_until(lambda: own_master.get("/distributed/workers")[1]["workers"][0]["status"]["state"] == "online", 30,
               message="worker b online after the restart")
    again = own_master.wait_history(own_master.queue_prompt(seed_stamp_prompt(seed=7610)), 60)
    assert [read_stamp(p) for p in saved_images(again, own_master.output_dir)] == [(7610, 0)]
    record("master SIGKILL mid-run, restarted on the same workers.json",
           user_sees="the prompt is gone from the restarted master's queue and history; workers.json unchanged; "
                     "the next prompt runs",
           delivered=0, expected=1, seconds_master_restart=round(restarted, 1),
           seconds_until_worker_idle=round(orphan_gone, 1),
           orphan_on_worker="interrupted by the restarted master")


# --- a worker hung inside a node (its server keeps answering) ------------------------------------


@pytest.fixture
def hung_worker(cluster: Cluster) -> Iterator[ComfyInstance]:
    """A worker whose DistTestHang node never returns (nor heeds interrupts); killed afterwards."""
    worker = ComfyInstance("worker-hung", reset_dir(OUTPUT_ROOT / f"hung-{time.monotonic_ns()}"), env={"DIST_TEST_HANG": "1"})
    worker.start()
    try:
        cluster.workers["hung"] = worker.wait_ready()
        yield worker
    finally:
        cluster.workers.pop("hung", None)
        worker.stop()


def hang_prompt(seed: int) -> dict[str, Any]:
    """Seed stamp -> half a second of work -> DistTestHang -> collector -> SaveImage."""
    prompt = seed_stamp_prompt(seed=seed, sleep=0.5)
    prompt["6"] = {"class_type": "DistTestHang", "inputs": {"images": ["3", 0]}}
    prompt["4"]["inputs"]["images"] = ["6", 0]
    return prompt


def test_a_worker_hung_in_a_node_has_its_share_copied_to_an_idle_worker_and_every_image_arrives(
    cluster: Cluster, hung_worker: ComfyInstance
) -> None:
    cluster.use_workers("hung", "a")
    cluster.wait_online("hung", "a")
    started = time.monotonic()
    entry = cluster.run(hang_prompt(7500), timeout=90)
    finished = time.monotonic()

    got = stamps(cluster, entry)
    assert got == [(7500, 0), (7501, 0), (7502, 0)]
    share = {s["index"]: s for s in cluster.job(entry)["shares"]}[1]
    assert share["participant"] == "a" and share["attempts"] == []
    assert share["copies"][0]["participant"] == "a" and share["copies"][0]["state"] == "won"
    assert "Worker hung is" in share["copies"][0]["reason"]
    assert queue_remaining(hung_worker) > 0  # still stuck: only the copy made the prompt complete
    record("worker hung inside a node (server answers, no progress), another worker idle",
           user_sees="success; the share is copied to the idle worker, whose copy wins", delivered=len(got), expected=3,
           seconds_total=round(finished - started, 1), share_seconds=0.5, copy_reason=share["copies"][0]["reason"])


def test_a_worker_hung_in_a_node_with_nobody_to_copy_to_fails_its_share_after_the_stall_timeout(
    cluster: Cluster, hung_worker: ComfyInstance
) -> None:
    cluster.use_workers("hung", stall_timeout=3)
    cluster.wait_online("hung")
    started = time.monotonic()
    entry = cluster.run(hang_prompt(7600), timeout=90)
    finished = time.monotonic()

    got = stamps(cluster, entry)
    assert got == [(7600, 0), (7601, 0)]
    share = {s["index"]: s for s in cluster.job(entry)["shares"]}[1]
    assert share["participant"] == "master"
    assert len(share["attempts"]) == 1 and "showed no progress for 3 s (stall_timeout), stuck in node 6" in share["attempts"][0]
    record("worker hung inside a node, no other worker (stall_timeout 3 s)",
           user_sees="success; after the stall timeout the share is re-run, here by the master", delivered=len(got), expected=2,
           seconds_total=round(finished - started, 1), stall_timeout=3, attempt=share["attempts"][0])
