"""What a result costs on its way from a worker to the master: stock PNG path against the fast path.

Starts a master with this extension (orchestrating only), a stock worker and a worker that runs this
extension (local-worker mode), all on this machine's CPU. For 1024 and 2048 px, smooth ("flat": a
32 px noise field upscaled bicubic, like the large soft regions of generated images) and noisy
content, 4 and 16 images, it prints per path:
  - encode: on the worker, the output node's own time (PreviewImage PNG level 1, or the sink's
    quantise + store), from the worker's history timestamps of a run whose upstream is cached;
  - transfer: downloading the bytes (stock: every /view PNG; fast: the raw wire stream);
  - decode: the master-side decode of those bytes into float32 IMAGE (PNG decode, or wire decode
    plus the uint8 -> float conversion), in CPU seconds of one thread of this process (the machine
    is shared, and wall time there measured other people's load as much as ours);
  - per image: (encode + transfer + decode) / images, without credit for their overlap;
  - stall: the master's worst event-loop stall during a real distributed run of the same work,
    measured as the worst round trip of `GET /distributed/jobs` polled every 5 ms from this
    process (the route does no I/O, so its latency is the loop's lateness plus ~1 ms of HTTP).
Then, behind a 100 Mbit/s `tc tbf` cap (network namespace; netem is missing from this kernel), the
fast path's raw and zlib transfers of 4 smooth 2048 px images, and what the master's link monitor
chooses after it has measured the link. Needs root for the namespace; skipped otherwise.

`--overhead` prints instead the older figure: a distributed run against the same work on one instance.

Usage: scripts/bench.sh collector_overhead [--quick] [--overhead]   (about 4 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from distributed.config.models import WorkerConfig
from distributed.transport import fetch, wire
from distributed.transport.limits import ResultLimits
from distributed.transport.link import LinkMonitor
from distributed.transport.sink import RESULT_UI_KEY, SINK_CLASS
from distributed.workers.client import WorkerClient
from tests.harness import ComfyInstance, reset_dir, running, wait_until
from tests.netns import LinkUnavailable, NamespacedWorker, capped_link

OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "bench-collector"
BENCH_LIMITS = ResultLimits(max_bytes=1 << 34, max_pixels=1 << 26)
"""Roomy bounds: the benchmark measures the path, not the caps."""
SIZES = (1024, 2048)
CONTENTS = ("flat", "noisy")
COUNTS = (4, 16)
TBF_RATE = "100mbit"


# --- prompts ----------------------------------------------------------------------------------


def content_nodes(kind: str, size: int, count: int, seed: Any) -> dict[str, dict]:
    """Node "2" renders the images."""
    if kind == "noisy":
        return {"2": {"class_type": "DistTestNoise", "inputs": {"seed": seed, "width": size, "height": size, "batch_size": count}}}
    return {
        "1a": {"class_type": "DistTestNoise", "inputs": {"seed": seed, "width": 32, "height": 32, "batch_size": count}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1a", 0], "upscale_method": "bicubic", "width": size, "height": size,
                                                     "crop": "disabled"}},
    }


def worker_prompt(kind: str, size: int, count: int, output: str, salt: int) -> dict:
    """Content -> a zero-second pass-through whose salt changes -> output: only the output re-runs.

    PreviewAny (it prints a tensor's summary) is the cheap output that warms the content's cache.
    """
    prompt = content_nodes(kind, size, count, 5)
    prompt["3"] = {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": 0.0, "steps": 1, "salt": salt}}
    inputs: dict[str, Any] = {"images": ["3", 0]}
    if output == SINK_CLASS:
        inputs |= {"precision": "uint8", "encoding": "raw"}
    if output == "PreviewAny":
        inputs = {"source": ["3", 0]}
    prompt["4"] = {"class_type": output, "inputs": inputs}
    return prompt


def master_prompt(kind: str, size: int, count: int, seed: int) -> dict:
    prompt = content_nodes(kind, size, count, ["1", 0])
    prompt["1"] = {"class_type": "DistributedSeed", "inputs": {"seed": seed}}
    prompt["4"] = {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}}
    prompt["5"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    return prompt


def run(instance: ComfyInstance, prompt: dict) -> tuple[str, dict]:
    prompt_id = instance.queue_prompt(prompt)
    entry = instance.wait_history(prompt_id, timeout=600)
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed on {instance.name}: {json.dumps(entry['status'])[:800]}")
    return prompt_id, entry


def execution_seconds(entry: dict) -> float:
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


# --- the two result paths, stage by stage -------------------------------------------------------


@dataclass
class Stages:
    encode: float
    transfer: float
    decode: float
    wire_bytes: int


async def stock_stages(worker: ComfyInstance, kind: str, size: int, count: int) -> Stages:
    run(worker, worker_prompt(kind, size, count, "PreviewAny", salt=1))
    _, entry = run(worker, worker_prompt(kind, size, count, "PreviewImage", salt=2))
    async with aiohttp.ClientSession() as session:
        client = WorkerClient(WorkerConfig(id="stock", name=worker.name, port=worker.port), session)
        refs = fetch.image_refs(entry, "4", worker.name)
        start = time.perf_counter()
        blobs = [await client.view(ref, 1 << 30, "the benchmark's own cap") for ref in refs]
        transfer = time.perf_counter() - start
    start = time.thread_time()
    for blob, ref in zip(blobs, refs, strict=True):
        fetch.decode_png(blob, worker.name, ref.filename, BENCH_LIMITS, "4")
    return Stages(execution_seconds(entry), transfer, time.thread_time() - start, sum(map(len, blobs)))


async def fast_stages(worker: ComfyInstance, kind: str, size: int, count: int, encoding: str = "raw") -> Stages:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        run(worker, worker_prompt(kind, size, count, "PreviewAny", salt=1))
        prompt_id, entry = run(worker, worker_prompt(kind, size, count, SINK_CLASS, salt=2))
        [described] = entry["outputs"]["4"][RESULT_UI_KEY]
        start = time.perf_counter()
        async with session.get(f"{worker.url}/distributed/results/{prompt_id}/4", params={"encoding": encoding}) as response:
            body = await response.read()
        transfer = time.perf_counter() - start
    start = time.thread_time()
    decoder = wire.Decoder(worker.name)
    decoder.feed(body)
    fetch.as_images(decoder.result())
    stages = Stages(execution_seconds(entry), transfer, time.thread_time() - start, len(body))
    assert described["shape"][0] == count
    return stages


# --- the master's event loop, seen from outside ---------------------------------------------------


class LoopProbe:
    """Polls a master route with one keep-alive connection; the worst round trip is the loop's worst stall."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        self._port = port
        self._interval = interval
        self._stop = threading.Event()
        self.worst = 0.0
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> LoopProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        while not self._stop.is_set():
            start = time.perf_counter()
            connection.request("GET", "/distributed/jobs")
            connection.getresponse().read()
            self.worst = max(self.worst, time.perf_counter() - start)
            self._stop.wait(self._interval)
        connection.close()


def use_worker(master: ComfyInstance, registry: Path, worker_id: str, worker: ComfyInstance, host: str = "127.0.0.1") -> None:
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False},
                                    "settings": {"health_interval": 0.5, "worker_timeout": 60, "assign_timeout": 60},
                                    "workers": [{"id": worker_id, "name": worker.name, "type": "remote", "host": host,
                                                 "port": worker.port}]}))

    def online() -> bool:
        workers = master.get("/distributed/workers")[1]["workers"]
        return [w["id"] for w in workers] == [worker_id] and workers[0]["status"]["state"] in ("online", "busy")

    wait_until(online, 30, message=f"the master to use {worker_id}")


def master_stall(master: ComfyInstance, kind: str, size: int, count: int, seed: int) -> float:
    with LoopProbe(master.port) as probe:
        run(master, master_prompt(kind, size, count, seed))
    return probe.worst


# --- a worker behind a bandwidth cap ------------------------------------------------------------


def capped_case() -> None:
    if os.geteuid() != 0:
        print("\ncapped link: skipped (needs root)")
        return
    try:
        with capped_link(7, TBF_RATE) as (namespace, address):
            worker = NamespacedWorker("worker-capped", reset_dir(OUTPUT / "worker-capped"), with_extension=True,
                                      env={"COMFYUI_DISTRIBUTED_WORKER_ID": "capped"})
            worker.namespace, worker.address = namespace, address
            try:
                worker.start().wait_ready()
                print(f"\ncapped link ({TBF_RATE}/s tbf), fast path, 4 flat 2048x2048 uint8 images:")
                links = LinkMonitor()
                for encoding in ("raw", "zlib"):
                    stages = asyncio.run(fast_stages(worker, "flat", 2048, 4, encoding))
                    links.observe("capped", stages.wire_bytes, stages.transfer)
                    total = (stages.encode + stages.transfer + stages.decode) / 4
                    print(f"  {encoding:5} {stages.wire_bytes / 4e6:7.2f} MB/img  transfer {1000 * stages.transfer / 4:7.1f} ms/img"
                          f"  per image {1000 * total:7.1f} ms")
                choice = links.choose("capped", "uint8")
                print(f"  link monitor after these transfers: {choice} ({links.report()['capped']['reason']})")
            finally:
                worker.stop()
    except LinkUnavailable as reason:
        print(f"\ncapped link: skipped ({reason})")


# --- main ---------------------------------------------------------------------------------------


def ms(seconds: float, count: int) -> str:
    return f"{1000 * seconds / count:8.1f}"


def table(master: ComfyInstance, registry: Path, stock: ComfyInstance, fast: ComfyInstance, quick: bool) -> None:
    print("collector_overhead: result path per image, ms (CPU workers on this machine; per image = encode+transfer+decode)")
    print(f"{'size':>5} {'content':7} {'n':>3} {'path':5} {'MB/img':>7} {'encode':>8} {'transfer':>8} {'decode':>8} "
          f"{'per img':>8} {'stall':>7}")
    seed = 100
    for size in SIZES:
        for kind in CONTENTS:
            for count in COUNTS[:1] if quick else COUNTS:
                for path, worker_id, worker in (("stock", "stock", stock), ("fast", "fast", fast)):
                    stages = asyncio.run((stock_stages if path == "stock" else fast_stages)(worker, kind, size, count))
                    use_worker(master, registry, worker_id, worker)
                    seed += 1
                    stall = master_stall(master, kind, size, count, seed)
                    total = stages.encode + stages.transfer + stages.decode
                    print(f"{size:5} {kind:7} {count:3} {path:5} {stages.wire_bytes / count / 1e6:7.2f} {ms(stages.encode, count)} "
                          f"{ms(stages.transfer, count)} {ms(stages.decode, count)} {ms(total, count)} {1000 * stall:6.0f}ms",
                          flush=True)


def overhead(master: ComfyInstance, registry: Path, stock: ComfyInstance) -> None:
    use_worker(master, registry, "stock", stock)
    start = time.perf_counter()
    run(stock, content_nodes("noisy", 1024, 8, 11) | {"4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    direct = time.perf_counter() - start
    start = time.perf_counter()
    run(master, master_prompt("noisy", 1024, 8, 22))
    print(f"one instance, 8 noisy 1024 px images: {direct:.2f} s; the same as one share on a worker via the master: "
          f"{time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 images only, no capped link")
    parser.add_argument("--overhead", action="store_true", help="print the distributed-run overhead instead")
    args = parser.parse_args()

    base = reset_dir(OUTPUT)
    registry = base / "workers.json"
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False}, "workers": []}))
    stock = ComfyInstance("worker-stock", base / "worker-stock")
    fast = ComfyInstance("worker-fast", base / "worker-fast", with_extension=True, env={"COMFYUI_DISTRIBUTED_WORKER_ID": "fast"})
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(registry)})
    with running(master, stock, fast):
        if args.overhead:
            overhead(master, registry, stock)
            return
        table(master, registry, stock, fast, args.quick)
    if not args.quick:
        capped_case()


if __name__ == "__main__":
    main()
