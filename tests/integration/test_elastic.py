"""Elastic pools on real processes: a master whose pool starts real CPU ComfyUIs through a test start
command (tests/elastic/start_member.py) and ends them through a test stop command.

Each test defines its own pool with tiny values (grow after 0.5 s, idle a few seconds) and leaves no
member running: the pool is removed at the end and its members' processes are checked gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import OUTPUT_ROOT
from tests.harness import ComfyInstance, comfyui_python, http_json, reset_dir, wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt

SCRIPTS = Path(__file__).resolve().parents[1] / "elastic"
BOOT_SECONDS = 120
"""A member's ComfyUI starting on this shared machine: generous, it is only a deadline."""


# --- the master and its pools ---------------------------------------------------------------------


def start_master(base: Path, **settings: Any) -> ComfyInstance:
    """A master with the extension, its workers.json and state folder under `base`."""
    workers_file = base / "workers.json"
    base.mkdir(parents=True, exist_ok=True)
    if not workers_file.exists():
        workers_file.write_text(json.dumps({
            "version": 1, "master": {"participate": True},
            "settings": {"health_interval": 0.5, "worker_timeout": 6, "assign_timeout": 120, **settings}, "workers": [],
        }))
    master = ComfyInstance("master", base / "master", with_extension=True, env={
        "DISTRIBUTED_WORKERS_FILE": str(workers_file), "DISTRIBUTED_STATE_DIR": str(base / "state"),
    })
    return master.start().wait_ready()


@pytest.fixture(scope="module")
def elastic_base() -> Path:
    return reset_dir(OUTPUT_ROOT / "elastic")


@pytest.fixture(scope="module")
def master(elastic_base: Path) -> Iterator[ComfyInstance]:
    instance = start_master(elastic_base / "shared")
    try:
        yield instance
    finally:
        instance.stop()


def pool_body(name: str, members_dir: Path, mode: str = "ok", **fields: Any) -> dict[str, Any]:
    return {
        "name": name, "min": 0, "max": 1, "idle_seconds": 60, "grow_after_seconds": 0.5, "max_starts_per_10min": 10,
        "budget_hours_per_day": 2, "ready_timeout_seconds": BOOT_SECONDS,
        "start_command": [comfyui_python(), str(SCRIPTS / "start_member.py"), "--dir", str(members_dir), "--mode", mode],
        "stop_command": [comfyui_python(), str(SCRIPTS / "stop_member.py"), "--dir", str(members_dir)],
        **fields,
    }


def settings(master: ComfyInstance, **changes: Any) -> None:
    status, body = http_json("PATCH", f"{master.url}/distributed/config", {"settings": changes})
    assert status == 200, body


def master_participates(master: ComfyInstance, participate: bool) -> None:
    """Off, every share waits for a worker: an idle master would otherwise take a waiting share itself."""
    status, body = http_json("PATCH", f"{master.url}/distributed/config", {"master": {"participate": participate}})
    assert status == 200, body


def pool_view(master: ComfyInstance, name: str) -> dict[str, Any]:
    status, body = master.get("/distributed/pools")
    assert status == 200, body
    return next(pool for pool in body["pools"] if pool["name"] == name)


def members(master: ComfyInstance, name: str, state: str | None = None) -> list[dict[str, Any]]:
    return [m for m in pool_view(master, name)["members"] if state is None or m["state"] == state]


def events(members_dir: Path) -> list[str]:
    log = members_dir / "events.log"
    return log.read_text().splitlines() if log.exists() else []


def member_pid(members_dir: Path, member_id: str) -> int:
    return int((members_dir / f"{member_id}.pid").read_text())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def member_pids_left(members_dir: Path) -> list[int]:
    return [json.loads(path.read_text())["pid"] for path in members_dir.glob("*.json")]


class Pool:
    """A pool defined through the API for one test; removed at the end, its members checked gone."""

    def __init__(self, master: ComfyInstance, members_dir: Path, name: str, **fields: Any) -> None:
        self.master, self.dir, self.name = master, members_dir, name
        status, body = master.post("/distributed/pools", pool_body(name, members_dir, **fields))
        assert status == 201, body

    def view(self) -> dict[str, Any]:
        return pool_view(self.master, self.name)

    def members(self, state: str | None = None) -> list[dict[str, Any]]:
        return members(self.master, self.name, state)

    def wait_online(self, count: int = 1) -> list[dict[str, Any]]:
        return wait_until(lambda: len(self.members("online")) >= count and self.members("online"), BOOT_SECONDS,
                          interval=0.25, message=f"{count} member(s) of {self.name} online")

    def remove(self) -> None:
        http_json("DELETE", f"{self.master.url}/distributed/pools/{self.name}")
        wait_until(lambda: not any(p["name"] == self.name for p in self.master.get("/distributed/pools")[1]["pools"]), 60,
                   message=f"every member of {self.name} stopped")
        pids = member_pids_left(self.dir)
        assert not [pid for pid in pids if alive(pid)], f"members left running: {pids}"


@pytest.fixture
def members_dir(elastic_base: Path, request: pytest.FixtureRequest) -> Path:
    return reset_dir(elastic_base / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name))


def whole_prompt(seed: int, sleep: float, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 16, "height": 8, "batch_size": 1}},
        "2": {"class_type": "DistTestSleep", "inputs": {"images": ["1", 0], "seconds": sleep, "steps": 2}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


# --- growing, serving, shrinking ------------------------------------------------------------------


def test_queued_prompts_that_wait_grow_the_pool_to_its_max_and_run_on_its_member(master: ComfyInstance, members_dir: Path) -> None:
    status, _ = http_json("PATCH", f"{master.url}/distributed/config",
                          {"master": {"participate": False}, "settings": {"distributed_queue": True}})
    assert status == 200
    pool = Pool(master, members_dir, "queue", max=1, idle_seconds=60)
    try:
        first = master.queue_prompt(whole_prompt(seed=101, sleep=2, prefix="elastic-queue"))
        second = master.queue_prompt(whole_prompt(seed=102, sleep=2, prefix="elastic-queue"))
        (member,) = pool.wait_online()
        # The second prompt waits while the member runs the first: the pool wants one more, and may not.
        wait_until(lambda: pool.view()["blocked"] == "at its max of 1 member", BOOT_SECONDS, interval=0.1,
                   message="the pool to refuse a second member at its max")
        entries = [master.wait_history(first, 180), master.wait_history(second, 180)]

        assert [e["status"]["status_str"] for e in entries] == ["success", "success"]
        assert [e["meta"]["3"]["distributed_worker"] for e in entries] == [member["id"], member["id"]]
        assert [[read_stamp(p) for p in saved_images(e, master.output_dir)] for e in entries] == [[(101, 0)], [(102, 0)]]
        assert pool.view()["starts_last_10min"] == 1
        assert [line for line in events(members_dir) if line.startswith("start")] == [f"start {member['id']} ok"]
    finally:
        pool.remove()
        http_json("PATCH", f"{master.url}/distributed/config", {"master": {"participate": True}, "settings": {"distributed_queue": False}})


def test_member_takes_waiting_shares_then_stops_once_idle(master: ComfyInstance, members_dir: Path) -> None:
    master_participates(master, False)
    pool = Pool(master, members_dir, "shares", idle_seconds=3)
    try:
        prompt = seed_stamp_prompt(seed=500, sleep=1, prefix="elastic-shares")
        prompt["4"]["inputs"]["shares"] = 3  # the master only orchestrates: every share waits for a worker
        prompt_id = master.queue_prompt(prompt)
        entry = master.wait_history(prompt_id, 240)
        job = next(j for j in master.get("/distributed/jobs")[1]["jobs"] if j["prompt_id"] == prompt_id)
        (member_id,) = {s["participant"] for s in job["shares"]}
        pid = member_pid(members_dir, member_id)

        assert entry["status"]["status_str"] == "success"
        assert [read_stamp(p) for p in saved_images(entry, master.output_dir)] == [(500, 0), (501, 0), (502, 0)]
        assert member_id.startswith("shares-")
        wait_until(lambda: not pool.members(), 60, interval=0.25, message="the idle member to be stopped")
        assert f"stop {member_id}" in events(members_dir)
        assert not alive(pid)
        assert master.get("/distributed/workers")[1]["workers"] == []
    finally:
        pool.remove()
        master_participates(master, True)


# --- limits and failures --------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "reported"), [
    ("fail", "exited with code 3 before printing its address"),
    ("dead-url", "did not answer at http://127.0.0.1:"),
])
def test_failed_start_is_reported_with_its_output_stopped_and_backed_off(master: ComfyInstance, members_dir: Path, mode: str,
                                                                          reported: str) -> None:
    pool = Pool(master, members_dir, f"broken-{mode}", mode=mode, min=1, ready_timeout_seconds=2)
    try:
        first = wait_until(lambda: pool.view()["last_failure"], 60, interval=0.1, message="the first failure to be reported")
        assert reported in first["reason"]
        assert f"starting member {first['member_id']} ({mode})" in first["output"]
        if mode == "fail":
            assert "cannot create the member: quota exceeded" in first["output"]
        wait_until(lambda: f"stop {first['member_id']}" in events(members_dir), 30, message="the failed member to be stopped")
        second = wait_until(lambda: (f := pool.view()["last_failure"]) and f["member_id"] != first["member_id"] and f, 90,
                            interval=0.1, message="the second try to fail")
        view = pool.view()

        assert second["started_at"] - first["at"] >= 10, "the second try came before the first backoff of 10 s"
        assert view["failures_in_a_row"] == 2
        assert view["next_try_at"] - second["at"] >= 19  # the backoff doubled
        assert master.get("/distributed/workers")[1]["workers"] == []
    finally:
        pool.remove()


def test_the_rate_limit_holds_the_pool_back_once_the_backoff_is_over(master: ComfyInstance, members_dir: Path) -> None:
    pool = Pool(master, members_dir, "rated", mode="fail", min=1, max_starts_per_10min=1)
    try:
        first = wait_until(lambda: pool.view()["last_failure"], 60, interval=0.1, message="the first start to fail")
        # Refusals are decided every round: the backoff's first, then the rate limit's.
        view = wait_until(lambda: (v := pool.view())["blocked"] == "1 starts in the last 10 minutes, its limit" and v, 30,
                          interval=0.1, message="the backoff to end and the rate limit to hold")

        assert view["next_try_at"] is None
        assert view["starts_last_10min"] == 1
        assert [line for line in events(members_dir) if line.startswith("start")] == [f"start {first['member_id']} fail"]
    finally:
        pool.remove()


def test_pool_stops_and_starts_no_member_once_the_days_budget_is_spent(master: ComfyInstance, members_dir: Path) -> None:
    # 0.002 member-hours is 7.2 s; a member runs at least its 2 s of idle time, so one start fits.
    pool = Pool(master, members_dir, "budget", mode="dead-url", min=1, idle_seconds=2, budget_hours_per_day=0.002,
                ready_timeout_seconds=60)
    try:
        (member,) = wait_until(lambda: pool.members(), 30, interval=0.1, message="the first member to start")
        wait_until(lambda: pool.view()["budget_spent"], 60, interval=0.1, message="the budget to be spent")
        wait_until(lambda: not pool.members(), 60, interval=0.1, message="the member to be stopped")
        view = pool.view()

        assert view["hours_used"] >= 0.002
        assert view["blocked"] == "the day's budget of 0.002 member-hours is spent"
        assert view["starts_last_10min"] == 1
        assert [line.split()[:2] for line in events(members_dir)] == [["start", member["id"]], ["stop", member["id"]]]
    finally:
        pool.remove()


def test_a_member_that_dies_mid_share_has_its_share_run_again(master: ComfyInstance, members_dir: Path) -> None:
    settings(master, assign_timeout=240)
    master_participates(master, False)
    pool = Pool(master, members_dir, "dying", min=1, max=2, idle_seconds=60)
    try:
        (first,) = pool.wait_online()
        prompt = seed_stamp_prompt(seed=700, sleep=6, prefix="elastic-dying")
        prompt["4"]["inputs"]["shares"] = 1  # the master only orchestrates: the share goes to the member
        prompt_id = master.queue_prompt(prompt)
        worker = ComfyInstance(first["id"], members_dir / first["id"], port=int(first["url"].rsplit(":", 1)[1]))
        wait_until(lambda: worker.get("/prompt")[1]["exec_info"]["queue_remaining"] > 0, 60, interval=0.1,
                   message="the member to run its share")
        os.kill(member_pid(members_dir, first["id"]), signal.SIGKILL)
        entry = master.wait_history(prompt_id, 300)
        job = next(j for j in master.get("/distributed/jobs")[1]["jobs"] if j["prompt_id"] == prompt_id)
        (share,) = job["shares"]

        assert entry["status"]["status_str"] == "success"
        assert [read_stamp(p) for p in saved_images(entry, master.output_dir)] == [(700, 0)]
        assert share["attempts"] and share["attempts"][0].startswith(f"worker '{first['id']}'")
        assert share["participant"] not in (first["id"], "master"), "the share was re-run by a new member of the pool"
        wait_until(lambda: f"stop {first['id']}" in events(members_dir), 60, message="the dead member to be stopped")
    finally:
        pool.remove()
        settings(master, assign_timeout=120)
        master_participates(master, True)


# --- nothing left running -------------------------------------------------------------------------


def test_master_killed_then_restarted_adopts_answering_members_and_stops_the_rest(elastic_base: Path) -> None:
    base = reset_dir(elastic_base / "restart")
    members_dir = base / "members"
    master = start_master(base)
    try:
        status, body = master.post("/distributed/pools", pool_body("restart", members_dir, min=2, max=2, idle_seconds=600))
        assert status == 201, body
        online = wait_until(lambda: len(m := members(master, "restart", "online")) == 2 and m, 2 * BOOT_SECONDS,
                            interval=0.25, message="two members online")
        kept, frozen = (m["id"] for m in online)
        kept_pid, frozen_pid = member_pid(members_dir, kept), member_pid(members_dir, frozen)
        status, body = http_json("PATCH", f"{master.url}/distributed/pools/restart", {"min": 0})  # no replacement after the restart
        assert status == 200, body
        master.kill()
        os.kill(frozen_pid, signal.SIGSTOP)  # still running, but no longer answers
        master = start_master(base)
        wait_until(lambda: f"stop {frozen}" in events(members_dir), 60, message="the member that no longer answers to be stopped")
        adopted = wait_until(lambda: (m := members(master, "restart", "online")) and m, 30, message="the answering member adopted")

        assert kept in [m["id"] for m in adopted]
        assert alive(kept_pid), "the answering member was adopted, not restarted"
        assert kept in [w["id"] for w in master.get("/distributed/workers")[1]["workers"]]
        assert not alive(frozen_pid)
        assert f"stop {kept}" not in events(members_dir)
        master.stop(timeout=60)  # a clean stop runs every member's stop command

        assert f"stop {kept}" in events(members_dir)
        assert not alive(kept_pid)
    finally:
        master.stop(timeout=60)
        for pid in (member_pid(members_dir, path.stem) for path in members_dir.glob("*.pid")):
            if alive(pid):  # the cleanup of a failed test
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
