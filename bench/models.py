"""Model copy and inventory: throughput against `cp`, the resume point after a kill, inventory time.

Run: `scripts/bench.sh models [--size-mb 1024] [--runs 3] [--files 500] [--workers 8]`
(a few minutes; writes the test files under $TMPDIR and removes them).

1. Copy throughput on loopback. The worker is a separate process (bench/model_worker.py: this
   extension's real model routes over a folder). One file is copied by the master's `ModelCopier`
   (chunked PUTs, sha256 on both ends, fsync, put in place without overwriting) and by `cp`; the
   source is in the page cache for both. `cp` writes into the page cache and returns, so `cp + sync`
   (the copy made durable, as ours is) is printed too. Best of `--runs`.
2. The resume point: the worker process is killed (SIGKILL) once half the file is sent, started
   again, and the copy repeated: where it resumed, against what was sent before the kill.
3. Inventory of `--workers` workers with `--files` model files each (in 4 folder kinds, listed by
   10 loaders among 600 other node classes in `/object_info`), all on this machine: as stock
   workers (files read from `/object_info`), as workers with this extension (folders listed with
   sizes), and with sha256 (first: every file hashed; then: from the cache).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distributed.config.models import WorkerConfig
from distributed.transport.provision.hashes import HashCache
from distributed.transport.provision.inventory import Inventory
from distributed.transport.provision.library import ModelLibrary
from distributed.transport.provision.paths import ModelFolders
from distributed.transport.provision.sender import CopyFile, ModelCopier
from distributed.workers.pool import ClientPool

HERE = Path(__file__).resolve().parent
MB = 1 << 20
KINDS_SHARE = {"checkpoints": 0.2, "loras": 0.6, "vae": 0.08, "controlnet": 0.12}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerProcess:
    """bench/model_worker.py in its own process."""

    def __init__(self, root: Path, stock: bool = False) -> None:
        self.root, self.stock, self.port = root, stock, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        args = [sys.executable, str(HERE / "model_worker.py"), str(self.root), str(self.port), *(["--stock"] if self.stock else [])]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/system_stats", timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the worker process did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def config(self, index: int = 0) -> WorkerConfig:
        return WorkerConfig(id=f"w{index}", name=f"bench-{index}", type="remote", host="127.0.0.1", port=self.port)


def write_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        for _ in range(size // MB):
            file.write(os.urandom(MB))
        file.write(os.urandom(size % MB))


def warm(path: Path) -> None:
    with open(path, "rb") as file:
        while file.read(8 * MB):
            pass


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    """CPU seconds of every process involved: a figure the machine's other load disturbs less."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(*commands: list[str]) -> list[Timing]:
    """Runs the commands one after the other; the timing after each, counted from the start."""
    timings = []
    wall, cpu = time.perf_counter(), children_cpu()
    for command in commands:
        subprocess.run(command, check=True, capture_output=True)
        timings.append(Timing(time.perf_counter() - wall, children_cpu() - cpu))
    return timings


class CopyRun:
    """Runs copies one at a time and waits for each to end through the snapshots it publishes."""

    def __init__(self, hashes: HashCache, on_snapshot: Any = None) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.ended = asyncio.Event()
        self.on_snapshot = on_snapshot
        self.pool = ClientPool()
        self.copier = ModelCopier(self.pool, hashes, self.publish)

    def publish(self, snapshot: dict[str, Any]) -> None:
        self.snapshots.append(snapshot)
        if self.on_snapshot is not None:
            self.on_snapshot(snapshot)
        if snapshot["state"] != "copying":
            self.ended.set()

    async def run(self, worker: WorkerConfig, file: CopyFile, worker_pid: int | None = None) -> tuple[Timing, dict[str, Any]]:
        self.ended.clear()
        remote = psutil.Process(worker_pid) if worker_pid else None
        remote_cpu = sum(remote.cpu_times()[:2]) if remote else 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        self.copier.start(worker, [CopyFile(file.kind, file.name, file.source, file.size)])
        await self.ended.wait()
        spent = time.process_time() - cpu + (sum(remote.cpu_times()[:2]) - remote_cpu if remote else 0.0)
        return Timing(time.perf_counter() - wall, spent), self.snapshots[-1]

    async def close(self) -> None:
        await self.pool.close()


async def copy_throughput(tmp: Path, size: int, runs: int) -> None:
    source = tmp / "master" / "models" / "checkpoints" / "bench.safetensors"
    write_file(source, size)
    warm(source)
    target = tmp / "worker" / "models" / "checkpoints" / "bench.safetensors"
    cp_target = target.with_name("cp-copy.bin")  # same folder, same disk
    target.parent.mkdir(parents=True, exist_ok=True)
    [sha256sum] = run_timed(["sha256sum", str(source)])
    cp_runs: list[list[Timing]] = []
    ours: list[Timing] = []
    worker = WorkerProcess(tmp / "worker").start()
    copies = CopyRun(HashCache())  # the first copy hashes the source; later ones (other workers) find it known
    try:
        for _ in range(runs):
            cp_runs.append(run_timed(["cp", str(source), str(cp_target)], ["sync", str(cp_target)]))
            cp_target.unlink()
            target.unlink(missing_ok=True)
            timing, snapshot = await copies.run(worker.config(), CopyFile("checkpoints", "bench.safetensors", source, size),
                                                worker.process.pid if worker.process else None)
            assert snapshot["state"] == "done", snapshot
            ours.append(timing)
    finally:
        await copies.close()
        worker.stop()
        cp_target.unlink(missing_ok=True)
    cp = min((run[0] for run in cp_runs), key=lambda t: t.wall)
    cp_sync = min((run[1] for run in cp_runs), key=lambda t: t.wall)
    first, later = ours[0], min(ours[1:] or ours, key=lambda t: t.wall)

    def line(label: str, timing: Timing, compare: bool = False) -> str:
        text = f"   {label:27s} {timing.wall:6.2f} s {size / timing.wall / MB:7.0f} MB/s   CPU {timing.cpu:5.2f} s"
        if compare:
            text += f"   = {cp.wall / timing.wall:.0%} of cp, {cp_sync.wall / timing.wall:.0%} of cp + sync"
        return text

    print(f"\n1. Copy of {size / MB:.0f} MB on loopback ({runs} runs; cp and later copies: the fastest run)")
    print(line("cp", cp))
    print(line("cp + sync", cp_sync))
    print(line("sha256sum (one pass)", sha256sum))
    print(line("Copy models, first", first, compare=True))
    print(line("Copy models, later", later, compare=True))
    print("   first: the master hashes the file as it sends it; later: its hash is cached (a second worker).")
    print("   Either way the worker hashes what it receives and syncs it to disk before putting it in place.")
    print(f"   all runs, wall s: cp {', '.join(f'{r[0].wall:.2f}' for r in cp_runs)}; "
          f"cp + sync {', '.join(f'{r[1].wall:.2f}' for r in cp_runs)}; ours {', '.join(f'{t.wall:.2f}' for t in ours)}")


async def resume_point(tmp: Path, size: int) -> None:
    source = tmp / "master" / "models" / "checkpoints" / "bench.safetensors"
    (tmp / "worker" / "models" / "checkpoints" / "bench.safetensors").unlink(missing_ok=True)
    worker = WorkerProcess(tmp / "worker").start()
    config = worker.config()
    file = CopyFile("checkpoints", "bench.safetensors", source, size)
    sent_at_kill: list[int] = []

    def kill_half_way(snapshot: dict[str, Any]) -> None:
        if not sent_at_kill and snapshot["done_bytes"] >= size // 2:
            sent_at_kill.append(snapshot["done_bytes"])
            worker.kill()

    first, second = CopyRun(HashCache(), kill_half_way), CopyRun(HashCache())
    try:
        _, broken = await first.run(config, file)
        partial = next((tmp / "worker" / "models" / "checkpoints").glob(".bench.safetensors.*.part"))
        on_disk = partial.stat().st_size
        worker.start()
        rest, finished = await second.run(config, file)
    finally:
        await first.close()
        await second.close()
        worker.stop()
    resumed = finished["files"][0]["resumed_from"] or 0
    print(f"\n2. Worker killed half way through a {size / MB:.0f} MB copy")
    print(f"   sent before the kill  {sent_at_kill[0] / MB:8.1f} MB   (copy state: {broken['state']})")
    print(f"   partial on the worker {on_disk / MB:8.1f} MB")
    print(f"   resumed from          {resumed / MB:8.1f} MB   ({resumed / size:.0%} of the file); "
          f"the rest took {rest.wall:.2f} s, state {finished['state']}")


def model_tree(root: Path, files: int) -> None:
    left = files
    for index, (kind, share) in enumerate(KINDS_SHARE.items()):
        count = left if index == len(KINDS_SHARE) - 1 else round(files * share)
        left -= count
        for number in range(count):
            path = root / "models" / kind / f"family{number % 7}" / f"{kind}-{number:04d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(64 * 1024))


async def timed(label: str, work: Any) -> Any:
    started = time.perf_counter()
    result = await work
    print(f"   {label:40s} {time.perf_counter() - started:7.2f} s")
    return result


async def inventory(tmp: Path, workers: int, files: int) -> None:
    roots = [tmp / f"inv-{index}" for index in range(workers)]
    for root in roots:
        model_tree(root, files)
    master = ModelLibrary(lambda: ModelFolders([]), HashCache())
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "family0/checkpoints-0000.safetensors"}}}
    print(f"\n3. Inventory of {workers} workers with {files} model files each (all processes on this machine)")
    for stock in (True, False):
        processes = [WorkerProcess(root, stock=stock).start() for root in roots]
        pool = ClientPool()
        try:
            service = Inventory(pool, master)
            configs = [process.config(index) for index, process in enumerate(processes)]
            kind = "stock workers (/object_info)" if stock else "workers with the extension"
            body = await timed(f"{kind}, first", service.snapshot(configs))
            await timed(f"{kind}, again", service.snapshot(configs))
            await timed(f"{kind}, lacks for a prompt", service.needs(configs, prompt, []))
            assert all(len(row["models"]) == files for row in body["workers"]), [row["error"] for row in body["workers"]]
            if not stock:
                await timed("with sha256, first (hashes every file)", service.snapshot(configs, with_sha256=True))
                await timed("with sha256, again (cached)", service.snapshot(configs, with_sha256=True))
        finally:
            await pool.close()
            for process in processes:
                process.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        print(f"{os.cpu_count()} CPU cores; files under {tmp}")
        await copy_throughput(tmp, args.size_mb * MB, args.runs)
        await resume_point(tmp, args.size_mb * MB)
        await inventory(tmp, args.workers, args.files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
