"""Makespan of the scheduler against the ideal, on simulated GPUs: stock worker ComfyUIs running a
test node that sleeps a set time per share (DistTestSleep), the master only orchestrating.

Three figures (`--figure`):

- `speeds` (default): three workers at speeds 1x, 1x and 1/3x, 24 shares of one unit. Prints the
  ideal (total work / total speed), what an even split would take, late binding (mode 2) measured
  for the shares alone and for the whole prompt, the shares each worker ended with, and the same work
  as 24 whole prompts through the distributed queue (mode 4).
- `slowdown`: three workers at 1x; in the middle of a run of 24 shares one of them turns 5x slower
  (busy with something else) and the others run out of work while it still holds shares. Prints the
  makespan against the ideal for that change of speed (the fluid bound: work done at 3 units per
  unit of time until the change, 2.2 after), with backup copies on and off (`backup_tasks`).
- `scale`: 16 workers, 96 shares. Prints the makespan against the ideal (96 / 16 units), and what
  the master pays: its CPU time per share (psutil, over a run without the probe below) and its worst
  event-loop stall (the slowest answer of `GET /distributed/identity`, polled every 20 ms from this
  process during a second run; it includes ~1 ms of HTTP). The workers' own CPU time is printed
  too: on a small machine, 16 ComfyUIs (each running a full garbage collection after a prompt, at
  most every 10 s, unless it runs this extension) can need more CPU than there is. Each stock worker
  takes about 1 GB.

The machine's load average is printed with each figure: on a shared machine, the figures measure
other people's load too.

Usage: scripts/bench.sh scheduling [--figure speeds|slowdown|scale] [--unit 2] [--extension-workers]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from distributed.workers.local.command import WORKER_ID_ENV
from tests.harness import ComfyInstance, reset_dir, running, wait_until

OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "bench-scheduling"
SPEEDS = {"fast-1": 1.0, "fast-2": 1.0, "slow": 1 / 3}
SLOWDOWN = 5.0
PROBE_INTERVAL = 0.02


def sleep_prompt(unit: float, shares: int, salt: int = 0) -> dict:
    """`shares` shares of `unit` seconds; a different `salt` is another workflow to the speed model."""
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 1}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": 16, "height": 8, "batch_size": 1}},
        "3": {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": unit, "steps": 2, "salt": salt}},
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
    """Queues a prompt and waits for it: (seconds from queueing to its history entry, the job)."""
    start = time.perf_counter()
    entry = master.wait_history(master.queue_prompt(prompt), timeout=900)
    elapsed = time.perf_counter() - start
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed: {json.dumps(entry['status'])[:800]}")
    return elapsed, job_of(master, entry)


def job_of(master: ComfyInstance, entry: dict) -> dict:
    job_id = next(n["inputs"]["distributed_job_id"] for n in entry["prompt"][2].values() if n["class_type"] == "DistributedCollector")
    return master.get(f"/distributed/jobs/{job_id}")[1]


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def cluster(names: list[str], extension_workers: bool, settings: dict[str, Any],
            env: dict[str, dict[str, str]] | None = None) -> tuple[ComfyInstance, dict[str, ComfyInstance], Path]:
    """A master that only orchestrates, with the named stock workers listed (not started yet)."""
    base = reset_dir(OUTPUT)
    workers = {name: ComfyInstance(name, base / name, with_extension=extension_workers,
                                   env={WORKER_ID_ENV: name, **(env or {}).get(name, {})})
               for name in names}
    registry = base / "workers.json"
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False}, "settings": settings, "workers": [
        {"id": name, "name": name, "type": "remote", "host": "127.0.0.1", "port": w.port} for name, w in workers.items()
    ]}))
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(registry)})
    return master, workers, registry


def set_setting(registry: Path, **settings: Any) -> None:
    config = json.loads(registry.read_text())
    config["settings"].update(settings)
    registry.write_text(json.dumps(config))


# --- speeds ---------------------------------------------------------------------------------------


def figure_speeds(args: argparse.Namespace) -> None:
    shares = 24
    master, workers, registry = cluster(list(SPEEDS), args.extension_workers, {"health_interval": 0.5},
                                        {name: {"DIST_TEST_SLOWDOWN": f"{1 / speed:g}"} for name, speed in SPEEDS.items()})
    with running(master, *workers.values()):
        run(master, sleep_prompt(0.05, 3))  # warm-up: first-run imports on every worker
        ideal = shares * args.unit / sum(SPEEDS.values())
        even = max(shares / len(SPEEDS) * args.unit / speed for speed in SPEEDS.values())
        late, job = run(master, sleep_prompt(args.unit, shares))
        counts = Counter(share["participant"] for share in job["shares"])

        kind = "workers with this extension" if args.extension_workers else "stock workers"
        print(f"scheduling: {shares} shares of {args.unit:g} s at speeds 1x, 1x, 1/3x (3 CPU {kind}, master orchestrating); {load()}")
        print(f"  ideal (work / total speed):      {ideal:7.2f} s")
        print(f"  even split (fixed 1/3 each):     {even:7.2f} s  ({even / ideal:.2f}x ideal)")
        print(f"  late binding (mode 2), shares:   {job['duration_s']:7.2f} s  ({job['duration_s'] / ideal:.2f}x ideal)"
              "  from the job's start to its last share delivered")
        print(f"  late binding (mode 2), prompt:   {late:7.2f} s  ({late / ideal:.2f}x ideal)  queue to history, master included")
        print("  shares per participant:          " + ", ".join(f"{name} {counts.get(name, 0)}" for name in SPEEDS))
        set_setting(registry, distributed_queue=True)
        queued = queue_all(master, args.unit, shares)
        print(f"  distributed queue (mode 4):      {queued:7.2f} s  ({queued / ideal:.2f}x ideal)"
              f"  {shares} whole prompts queued at once, queue to last history entry")


# --- slowdown -------------------------------------------------------------------------------------


def slowed_run(master: ComfyInstance, switch: Path, unit: float, shares: int, salt: int) -> tuple[float, float, dict]:
    """One run in which the worker reading `switch` turns 5x slower halfway through the nominal run.

    Returns (makespan from queueing, when the slowdown began, the job)."""
    for _ in range(2):  # two warm runs of this workflow: every worker's estimate is certain
        run(master, sleep_prompt(unit, 6, salt))
    switch.unlink(missing_ok=True)
    at = shares * unit / 3 / 2
    started = time.perf_counter()
    prompt_id = master.queue_prompt(sleep_prompt(unit, shares, salt))
    timer = threading.Timer(at, lambda: switch.write_text(f"{SLOWDOWN:g}"))
    timer.start()
    try:
        entry = master.wait_history(prompt_id, timeout=900)
    finally:
        timer.cancel()
        switch.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed: {json.dumps(entry['status'])[:800]}")
    return elapsed, at, job_of(master, entry)


def figure_slowdown(args: argparse.Namespace) -> None:
    shares, names = 24, ["w1", "w2", "turns-slow"]
    switch = OUTPUT.parent / "bench-scheduling-slowdown"
    master, workers, registry = cluster(names, args.extension_workers, {"health_interval": 0.5},
                                        {"turns-slow": {"DIST_TEST_SLOWDOWN_FILE": str(switch)}})
    with running(master, *workers.values()):
        run(master, sleep_prompt(0.05, 3))  # warm-up: first-run imports on every worker
        print(f"slowdown: {shares} shares of {args.unit:g} s on 3 equal workers; one turns {SLOWDOWN:g}x slower "
              f"{shares * args.unit / 6:g} s into the run (master orchestrating); {load()}")
        for salt, backups in ((1, True), (2, False)):
            set_setting(registry, backup_tasks=backups)
            elapsed, at, job = slowed_run(master, switch, args.unit, shares, salt)
            work = shares * args.unit
            ideal = at + (work - 3 * at) / (2 + 1 / SLOWDOWN)
            counts = Counter(share["participant"] for share in job["shares"])
            copies = [f"share {s['index']} to {c['participant']} ({c['state']})" for s in job["shares"] for c in s["copies"]]
            label = "with backup copies" if backups else "without (backup_tasks off)"
            print(f"  {label:28s} {elapsed:7.2f} s  ({elapsed / ideal:.2f}x the ideal {ideal:.2f} s)  shares "
                  + ", ".join(f"{name} {counts.get(name, 0)}" for name in names) + (f"; copies: {', '.join(copies)}" if copies else ""))


# --- scale ----------------------------------------------------------------------------------------


class LoopProbe:
    """Times a cheap master route every 20 ms on a thread: its worst answer bounds the loop's stalls."""

    def __init__(self, master: ComfyInstance) -> None:
        self._url = master.url + "/distributed/identity"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.latencies: list[float] = []

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self._url, timeout=30) as response:
                response.read()
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(PROBE_INTERVAL)


@contextmanager
def started_in_waves(instances: list[ComfyInstance], wave: int = 4) -> Iterator[None]:
    """Starts the instances a few at a time (17 ComfyUIs importing torch at once on 2 cores take
    minutes), and stops them all at the end."""
    try:
        for first in range(0, len(instances), wave):
            group = instances[first:first + wave]
            for instance in group:
                instance.start()
            for instance in group:
                instance.wait_ready(timeout=600)
        yield
    finally:
        for instance in instances:
            instance.stop()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def figure_scale(args: argparse.Namespace) -> None:
    count, shares = 16, 96
    names = [f"w{i:02d}" for i in range(1, count + 1)]
    master, workers, _ = cluster(names, args.extension_workers, {"health_interval": 2.0})
    print(f"scale: starting {count} stock workers and the master; {load()}", flush=True)
    with started_in_waves([*workers.values(), master]):
        wait_until(lambda: all(w["status"]["state"] == "online" for w in master.get("/distributed/workers")[1]["workers"]),
                   120, message="every worker online")
        run(master, sleep_prompt(0.05, count))  # warm-up: first-run imports on every worker
        assert master.process is not None
        process = psutil.Process(master.process.pid)
        ideal = shares * args.unit / count
        print(f"scale: {shares} shares of {args.unit:g} s on {count} stock workers (master orchestrating); {load()}")
        worker_processes = [psutil.Process(w.process.pid) for w in workers.values() if w.process is not None]
        before, workers_before = cpu_seconds(process), sum(cpu_seconds(w) for w in worker_processes)
        elapsed, job = run(master, sleep_prompt(args.unit, shares))
        spent = cpu_seconds(process) - before
        workers_spent = sum(cpu_seconds(w) for w in worker_processes) - workers_before
        counts = Counter(share["participant"] for share in job["shares"])
        print(f"  ideal ({shares} x {args.unit:g} s / {count}):     {ideal:7.2f} s")
        duration = job["duration_s"]
        print(f"  run 1, shares:                {duration:7.2f} s  ({duration / ideal:.2f}x ideal), job start to last share")
        print(f"  run 1, prompt:                {elapsed:7.2f} s  ({elapsed / ideal:.2f}x ideal), queue to history")
        print(f"  master CPU per share:         {spent / shares * 1000:7.1f} ms  ({spent:.2f} s for the prompt, health checks included)")
        print(f"  workers' CPU, all together:   {workers_spent:7.2f} s  ({workers_spent / elapsed:.2f} of the machine's"
              f" {psutil.cpu_count()} cores for the whole run)")
        print(f"  shares per worker:            min {min(counts[n] for n in names)}, max {max(counts[n] for n in names)}")
        with LoopProbe(master) as probe:
            elapsed, job = run(master, sleep_prompt(args.unit, shares))
        ordered = sorted(probe.latencies)
        print(f"  run 2 (probed), prompt:       {elapsed:7.2f} s  ({elapsed / ideal:.2f}x ideal)")
        print(f"  master loop: worst answer     {ordered[-1] * 1000:7.1f} ms, p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms,"
              f" median {ordered[len(ordered) // 2] * 1000:.1f} ms ({len(ordered)} probes); {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", choices=("speeds", "slowdown", "scale"), default="speeds")
    parser.add_argument("--unit", type=float, default=2.0, help="seconds one share takes on a 1x participant")
    parser.add_argument("--extension-workers", action="store_true",
                        help="workers run this extension too (as local workers do): no 0.5 s gc pause every 10 s")
    args = parser.parse_args()
    {"speeds": figure_speeds, "slowdown": figure_slowdown, "scale": figure_scale}[args.figure](args)


if __name__ == "__main__":
    main()
