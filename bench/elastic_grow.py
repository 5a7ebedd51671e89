"""From "work waits" to a new pool member taking its first share: our share of the time, and the
member's own start-up.

A master (the extension, no worker) has one elastic pool whose start command is the tests' script
(tests/elastic/start_member.py: a real CPU ComfyUI on a free port). Each round queues a prompt of
two shares: the master renders share 0, share 1 waits with nobody to take it, the pool starts a
member, and the member takes share 1. The master's pool snapshot gives when the wait began, when
the start command was launched and when the member was seen online; this script itself polls the
member's address (every 20 ms) for when it really answers, and the job (every 25 ms) for when share
1 is handed to the member. Prints, per round and as medians:

  - reaction: wait began -> start command launched, less the pool's grow_after (ours);
  - member start-up: start command launched -> member answers (the script and ComfyUI's own boot);
  - pick-up: member answers -> its first share handed to it (ours: readiness poll, workers.json,
    first health check, scheduler);
  - ours = reaction + pick-up; total = wait began -> first share.

Usage: scripts/bench.sh elastic_grow [--rounds 3] [--grow-after 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import ComfyInstance, comfyui_python, http_json, reset_dir, wait_until

T = TypeVar("T")
SCRIPTS = Path(__file__).resolve().parent.parent / "tests" / "elastic"
BASE = Path(__file__).resolve().parent.parent / "test-output" / "bench-elastic"


def prompt(seed: int) -> dict:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": 16, "height": 8, "batch_size": 1}},
        "3": {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": 1.0, "steps": 2}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0], "shares": 2}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/system_stats", timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def poll(predicate: Callable[[], T | bool | None], interval: float, timeout: float = 300) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value  # type: ignore[return-value]
        time.sleep(interval)  # the measurement's own sampling period
    raise SystemExit(f"timed out waiting for {predicate}")


def one_round(master: ComfyInstance, seed: int, grow_after: float) -> dict[str, float]:
    prompt_id = master.queue_prompt(prompt(seed))

    def member() -> dict[str, Any] | None:
        pools = master.get("/distributed/pools")[1]["pools"]
        found = [m for p in pools for m in p["members"] if m["url"]]
        return found[0] if found else None

    starting = poll(member, 0.02)
    ready_at = poll(lambda: answers(starting["url"]) and time.time(), 0.02)

    def first_share() -> float | None:
        jobs = master.get("/distributed/jobs")[1]["jobs"]
        job = next((j for j in jobs if j["prompt_id"] == prompt_id), None)
        shares = job["shares"] if job else []
        return time.time() if any(s["participant"] == starting["id"] for s in shares) else None

    first_share_at = poll(first_share, 0.025)
    master.wait_history(prompt_id, 300)
    timeline = next(m for p in master.get("/distributed/pools")[1]["pools"] for m in p["members"] if m["id"] == starting["id"])["timeline"]
    status, body = http_json("POST", f"{master.url}/distributed/pools/bench/members/{starting['id']}/stop")
    assert status == 202, body
    wait_until(lambda: not master.get("/distributed/pools")[1]["pools"][0]["members"], 60, message="the member to stop")
    reaction = timeline["command_started"] - timeline["wait_began"] - grow_after
    pick_up = first_share_at - ready_at
    return {
        "reaction": reaction,
        "member start-up": ready_at - timeline["command_started"],
        "pick-up": pick_up,
        "  of which: seen online": timeline["online_at"] - ready_at,
        "ours": reaction + pick_up,
        "total": first_share_at - timeline["wait_began"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grow-after", type=float, default=0.0)
    args = parser.parse_args()
    base = reset_dir(BASE)
    (base / "workers.json").write_text(json.dumps({"version": 1, "settings": {"health_interval": 0.5, "assign_timeout": 300}}))
    master = ComfyInstance("master", base / "master", with_extension=True, env={
        "DISTRIBUTED_WORKERS_FILE": str(base / "workers.json"), "DISTRIBUTED_STATE_DIR": str(base / "state"),
    })
    master.start().wait_ready()
    try:
        status, body = master.post("/distributed/pools", {
            "name": "bench", "max": 1, "idle_seconds": 600, "grow_after_seconds": args.grow_after, "budget_hours_per_day": 5,
            "max_starts_per_10min": 100,
            "start_command": [comfyui_python(), str(SCRIPTS / "start_member.py"), "--dir", str(base / "members")],
            "stop_command": [comfyui_python(), str(SCRIPTS / "stop_member.py"), "--dir", str(base / "members")],
        })
        assert status == 201, body
        rounds = []
        for seed in range(args.rounds):
            figures = one_round(master, 1000 + seed, args.grow_after)
            rounds.append(figures)
            print(f"round {seed + 1}: " + ", ".join(f"{name.strip()} {value:.2f}s" for name, value in figures.items()), flush=True)
        print(f"\nmedians over {args.rounds} rounds (grow_after {args.grow_after:g}s, not counted):")
        for name in rounds[0]:
            print(f"  {name:<24} {statistics.median(r[name] for r in rounds):6.2f} s")
    finally:
        http_json("DELETE", f"{master.url}/distributed/pools/bench")
        wait_until(lambda: not master.get("/distributed/pools")[1]["pools"], 60, message="the pool's members to stop")
        master.stop(timeout=60)


if __name__ == "__main__":
    main()
