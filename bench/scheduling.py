"""Makespan of each scheduling mode against the ideal, on simulated GPUs of different speeds.

Three stock worker ComfyUIs stand in for GPUs at speeds 1x, 1x and 1/3x (a test node sleeps a set
time per share, three times longer on the slow one); the master only orchestrates. Prints, for 24
shares of one time unit each:
  - ideal: total work / total speed;
  - even split: what a fixed equal split would take (each participant gets 8 units of work);
  - late binding (mode 2, `shares=24`): measured, for the shares alone and for the whole prompt;
  - the share count each participant ended up with;
  - distributed queue (mode 4): the same work as 24 whole prompts queued at once, each run on the
    first free participant: the time until the last is in the master's history.

Usage: scripts/bench.sh scheduling [--unit 2] [--shares 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distributed.workers.local.command import WORKER_ID_ENV
from tests.harness import ComfyInstance, reset_dir, running

SPEEDS = {"fast-1": 1.0, "fast-2": 1.0, "slow": 1 / 3}


def sleep_prompt(unit: float, shares: int) -> dict:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 1}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": 16, "height": 8, "batch_size": 1}},
        "3": {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": unit, "steps": 2}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0], "shares": shares}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def whole_prompt(unit: float, seed: int) -> dict:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 16, "height": 8, "batch_size": 1}},
        "2": {"class_type": "DistTestSleep", "inputs": {"images": ["1", 0], "seconds": unit, "steps": 2}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def queue_all(master: ComfyInstance, unit: float, count: int) -> float:
    start = time.perf_counter()
    prompt_ids = [master.queue_prompt(whole_prompt(unit, seed)) for seed in range(count)]
    for prompt_id in prompt_ids:
        entry = master.wait_history(prompt_id, timeout=600)
        if entry["status"]["status_str"] != "success":
            raise SystemExit(f"queued prompt failed: {json.dumps(entry['status'])[:800]}")
    return time.perf_counter() - start


def run(master: ComfyInstance, prompt: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    entry = master.wait_history(master.queue_prompt(prompt), timeout=600)
    elapsed = time.perf_counter() - start
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed: {json.dumps(entry['status'])[:800]}")
    return elapsed, entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=float, default=2.0, help="seconds one share takes on a 1x participant")
    parser.add_argument("--shares", type=int, default=24)
    parser.add_argument("--extension-workers", action="store_true",
                        help="workers run this extension too (as local workers do): no 0.5 s gc pause every 10 s")
    args = parser.parse_args()

    base = reset_dir(Path(__file__).resolve().parent.parent / "test-output" / "bench-scheduling")
    workers = {
        name: ComfyInstance(name, base / name, with_extension=args.extension_workers,
                            env={"DIST_TEST_SLOWDOWN": f"{1 / speed:g}", WORKER_ID_ENV: name})
        for name, speed in SPEEDS.items()
    }
    registry = base / "workers.json"
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False}, "settings": {"health_interval": 0.5}, "workers": [
        {"id": name, "name": name, "type": "remote", "host": "127.0.0.1", "port": w.port} for name, w in workers.items()
    ]}))
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(registry)})
    with running(master, *workers.values()):
        run(master, sleep_prompt(0.05, 3))  # warm-up: first-run imports on every worker
        total_speed = sum(SPEEDS.values())
        ideal = args.shares * args.unit / total_speed
        even = max(args.shares / len(SPEEDS) * args.unit / speed for speed in SPEEDS.values())
        late, entry = run(master, sleep_prompt(args.unit, args.shares))
        job_id = next(n["inputs"]["distributed_job_id"] for n in entry["prompt"][2].values() if n["class_type"] == "DistributedCollector")
        job = master.get(f"/distributed/jobs/{job_id}")[1]
        counts = Counter(share["participant"] for share in job["shares"])

        kind = "workers with this extension" if args.extension_workers else "stock workers"
        print(f"scheduling: {args.shares} shares of {args.unit:g} s at speeds 1x, 1x, 1/3x (3 CPU {kind}, master orchestrating)")
        print(f"  ideal (work / total speed):      {ideal:7.2f} s")
        print(f"  even split (fixed 1/3 each):     {even:7.2f} s  ({even / ideal:.2f}x ideal)")
        print(f"  late binding (mode 2), shares:   {job['duration_s']:7.2f} s  ({job['duration_s'] / ideal:.2f}x ideal)"
              "  from the job's start to its last share delivered")
        print(f"  late binding (mode 2), prompt:   {late:7.2f} s  ({late / ideal:.2f}x ideal)  queue to history, master included")
        print("  shares per participant:          " + ", ".join(f"{name} {counts.get(name, 0)}" for name in SPEEDS))
        settings = json.loads(registry.read_text())
        settings["settings"]["distributed_queue"] = True
        registry.write_text(json.dumps(settings))
        queued = queue_all(master, args.unit, args.shares)
        print(f"  distributed queue (mode 4):      {queued:7.2f} s  ({queued / ideal:.2f}x ideal)"
              f"  {args.shares} whole prompts queued at once, queue to last history entry")


if __name__ == "__main__":
    main()
