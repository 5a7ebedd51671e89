"""What distribution costs: a distributed run against the same work on one instance.

Starts K stock worker ComfyUIs and a master with this extension (orchestrating only), all on this
machine's CPU, renders N noise images of SIZE x SIZE, and prints:
  - the wall time of the work on one instance (one batch of N, ending in PreviewImage);
  - the wall time of the distributed run (K shares of N/K, collected on the master, same ending);
  - the result path alone: per-image download + decode time of the stock path (/view PNG) and its MB/s.

Usage: scripts/bench.sh collector_overhead [--images 8] [--size 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from distributed import gather
from distributed.client import WorkerClient
from distributed.models import WorkerConfig
from tests.harness import ComfyInstance, reset_dir


def noise_prompt(seed: int, size: int, batch: int, distributed: bool) -> dict:
    source = ["1", 0] if distributed else seed
    prompt = {
        "2": {"class_type": "DistTestNoise", "inputs": {"seed": source, "width": size, "height": size, "batch_size": batch}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0] if distributed else ["2", 0]}},
    }
    if distributed:
        prompt["1"] = {"class_type": "DistributedSeed", "inputs": {"seed": seed}}
        prompt["3"] = {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}}
    return prompt


def timed_run(instance: ComfyInstance, prompt: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    entry = instance.wait_history(instance.queue_prompt(prompt), timeout=1200)
    elapsed = time.perf_counter() - start
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed on {instance.name}: {json.dumps(entry['status'])[:800]}")
    return elapsed, entry


async def result_path(worker: ComfyInstance, entry: dict, node_id: str) -> tuple[float, int, int]:
    """Seconds to download and decode a finished prompt's images through gather, bytes, count."""
    config = WorkerConfig(id="bench", name=worker.name, port=worker.port)
    async with aiohttp.ClientSession() as session:
        client = WorkerClient(config, session)
        refs = gather.image_refs(entry, node_id, worker.name)
        size = 0
        for ref in refs:
            size += len(await client.view(ref))
        start = time.perf_counter()
        await gather.fetch_images(client, refs)
        return time.perf_counter() - start, size, len(refs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.images % args.workers:
        raise SystemExit("--images must be a multiple of --workers")

    base = reset_dir(Path(__file__).resolve().parent.parent / "test-output" / "bench-collector")
    workers = [ComfyInstance(f"worker-{i}", base / f"worker-{i}") for i in range(args.workers)]
    registry = base / "workers.json"
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False}, "workers": [
        {"id": f"w{i}", "name": w.name, "type": "remote", "host": "127.0.0.1", "port": w.port} for i, w in enumerate(workers)
    ]}))
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(registry)})
    instances = [master, *workers]
    for instance in instances:
        instance.start()
    try:
        for instance in instances:
            instance.wait_ready()
        per_share = args.images // args.workers
        timed_run(workers[0], noise_prompt(1, 64, 1, distributed=False))  # warm-up: imports, first allocation
        timed_run(master, noise_prompt(1, 64, 1, distributed=True))
        direct, direct_entry = timed_run(workers[0], noise_prompt(11, args.size, args.images, distributed=False))
        distributed, _ = timed_run(master, noise_prompt(22, args.size, per_share, distributed=True))
        fetch_seconds, fetched_bytes, count = asyncio.run(result_path(workers[0], direct_entry, "4"))

        print(f"collector_overhead: {args.images} noise images of {args.size}x{args.size}, {args.workers} CPU workers on this machine")
        print(f"  one instance, batch of {args.images}:               {direct:8.2f} s")
        print(f"  distributed, {args.workers} shares of {per_share}:                {distributed:8.2f} s"
              f"  ({direct / distributed:.2f}x the single instance)")
        print(f"  ideal with {args.workers} workers (no overhead):           {direct / args.workers:8.2f} s")
        print(f"  result path (stock, /view PNG): {1000 * fetch_seconds / count:8.1f} ms/image download+decode, "
              f"{fetched_bytes / count / 1e6:.1f} MB/image, {fetched_bytes / fetch_seconds / 1e6:.0f} MB/s")
        print(f"  run overhead vs ideal: {1000 * (distributed - direct / args.workers) / per_share:8.1f} ms per image of a share")
    finally:
        for instance in instances:
            instance.stop()


if __name__ == "__main__":
    main()
