"""Makespan of a Distributed Upscale against the ideal, on simulated GPUs.

Three worker ComfyUIs stand in for GPUs at speeds 1x, 1x and 1/3x: stock ones (tiles travel as
PNGs), or with `--extension` ones that run this extension (tiles travel as pixels both ways). The
test node pack holds every KSampler run for `--unit` seconds times the instance's DIST_TEST_SLOWDOWN
(DIST_TEST_SAMPLE_SECONDS, tests/node_pack/__init__.py). The master only orchestrates: it enlarges,
cuts, sends the tiles and blends. Every instance loads the tests' tiny SD checkpoint, and the
upscale runs with denoise 0, so the sampler's hold is the tile's "GPU time". The VAE is the test
pack's pass-through stand-in (DistTestPassThroughVAE: exact and nearly free), so what the figures
show beyond the hold is this extension's own cost: PNGs, uploads, fetches, scheduling, blending.
`--real-vae` uses the checkpoint's VAE instead (on a CPU it adds seconds to every tile).

A first run warms the workers (checkpoint loaded, speeds measured); the measured run upscales
another picture, so every tile is uploaded again. Printed:

- the ideal: total tile work / total speed;
- the best split of whole tiles, and a static even split (each participant a third of the tiles,
  the slow one among them);
- the measured tile phase (job start to last tile in, `duration_s` of the job) and the whole prompt
  (queue to history: enlarging, cutting, PNG writing and blending included);
- the seconds per tile each worker ran (the speed model's figure: the worker's own run, upload and
  fetch excluded), against `--unit` times its slowdown, and the ideal at those times: this ratio
  says how close the scheduling came to what the workers really had to do;
- the per-tile overhead: what the tile phase took beyond the best whole-tile split, per tile of
  the busiest participant, as a share of one tile's time (an upper bound: it counts uploads,
  fetches, PNG work on this machine's CPUs, and any scheduling slack);
- memory: how much each process's resident size grew during the measured run (sampled every 50 ms),
  beside the size of the whole upscaled image and of one tile.

Usage: scripts/bench.sh upscale [--target 4096] [--tile 1024] [--unit 4] [--real-vae] [--extension]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
from PIL import Image

from distributed.jobs.tiles import tile_grid
from distributed.workers.local.command import WORKER_ID_ENV
from tests.fixtures.tiny_sd import write_tiny_checkpoint
from tests.harness import ComfyInstance, reset_dir, running

OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "bench-upscale"
SLOWDOWNS = {"fast-1": 1.0, "fast-2": 1.0, "slow": 3.0}


def picture(path: Path, side: int, seed: int) -> str:
    """A smooth picture with some texture, side x side, written as a PNG; returns its name."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:side, 0:side] / side
    base = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs + 4 * ys + seed)], axis=2)
    pixels = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path / f"bench-{seed}.png", compress_level=1)
    return f"bench-{seed}.png"


def upscale_prompt(image: str, checkpoint: str, tile: int, real_vae: bool) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "7": {"class_type": "DistTestPassThroughVAE", "inputs": {}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a landscape", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": image}},
        "5": {"class_type": "DistributedUpscale", "inputs": {
            "image": ["4", 0], "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
            "vae": ["1", 2] if real_vae else ["7", 0], "seed": 1,
            "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.0, "upscale_by": 2.0,
            "tile_width": tile, "tile_height": tile, "tile_padding": 64, "mask_blur": 16}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }


def run(master: ComfyInstance, prompt: dict) -> tuple[float, dict]:
    """(seconds from queueing to the history entry, the upscale's job)."""
    start = time.perf_counter()
    entry = master.wait_history(master.queue_prompt(prompt), timeout=1800)
    elapsed = time.perf_counter() - start
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"run failed: {json.dumps(entry['status'])[:800]}")
    jobs = master.get("/distributed/jobs")[1]["jobs"]
    return elapsed, next(job for job in jobs if job["mode"] == "upscale" and job["prompt_id"] == entry["prompt"][1])


class PeakMemory:
    """Samples the resident memory of processes every 50 ms while a run lasts: the peak of each, over
    what it held when sampling began."""

    def __init__(self, instances: dict[str, ComfyInstance]) -> None:
        self._processes = {name: psutil.Process(instance.process.pid) for name, instance in instances.items() if instance.process}
        self._base = {name: process.memory_info().rss for name, process in self._processes.items()}
        self.peak = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self._processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)

    def growth(self, name: str) -> int:
        return self.peak[name] - self._base[name]


def best_whole_split(tiles: int, speeds: list[float]) -> float:
    """The shortest makespan with whole tiles: the smallest time T at which the participants fit them all."""
    candidates = sorted({count / speed for speed in speeds for count in range(1, tiles + 1)})
    return next(t for t in candidates if sum(math.floor(t * speed + 1e-9) for speed in speeds) >= tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, default=4096, help="side of the upscaled picture (x2 of the input)")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--unit", type=float, default=4.0, help="seconds of simulated GPU time per tile at speed 1x")
    parser.add_argument("--real-vae", action="store_true", help="the checkpoint's VAE instead of the pass-through stand-in")
    parser.add_argument("--extension", action="store_true",
                        help="workers that run this extension (tiles travel as pixels) instead of stock ones (PNGs)")
    args = parser.parse_args()

    base = reset_dir(OUTPUT)
    checkpoint = ""
    workers = {}
    for name, slowdown in SLOWDOWNS.items():
        workers[name] = ComfyInstance(name, base / name, with_extension=args.extension, env={
            WORKER_ID_ENV: name, "DIST_TEST_SAMPLE_SECONDS": str(args.unit), "DIST_TEST_SLOWDOWN": str(slowdown)})
        checkpoint = write_tiny_checkpoint(workers[name].base_dir / "models")
    registry = base / "workers.json"
    registry.write_text(json.dumps({"version": 1, "master": {"participate": False}, "settings": {"health_interval": 1.0},
                                    "workers": [{"id": name, "name": name, "type": "remote", "host": "127.0.0.1", "port": w.port}
                                                for name, w in workers.items()]}))
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(registry)})
    write_tiny_checkpoint(master.base_dir / "models")
    master.input_dir.mkdir(parents=True, exist_ok=True)
    side = args.target // 2
    warm_image, measured_image = (picture(master.input_dir, side, seed) for seed in (1, 2))

    tiles = len(tile_grid(args.target, args.target, args.tile, args.tile, 64))
    speeds = [1.0 / slowdown for slowdown in SLOWDOWNS.values()]
    ideal = tiles * args.unit / sum(speeds)
    whole = best_whole_split(tiles, speeds) * args.unit
    even = max(math.ceil(tiles / len(speeds)) * args.unit, (tiles // len(speeds)) * args.unit / min(speeds))

    with running(master, *workers.values()):
        run(master, upscale_prompt(warm_image, checkpoint, args.tile, args.real_vae))
        with PeakMemory({"master": master, **workers}) as memory:
            elapsed, job = run(master, upscale_prompt(measured_image, checkpoint, args.tile, args.real_vae))
        speeds_now = master.get("/distributed/speeds")[1]

    duration = job["duration_s"]
    counts = Counter(tile["participant"] for tile in job["tiles"])
    busiest = max(counts.values())
    overhead = max(duration - whole, 0.0) / busiest / args.unit
    print(f"upscale: {args.target}x{args.target} from {side}x{side}, {tiles} tiles of {args.tile} px, {args.unit:g} s per tile at 1x; "
          f"speeds 1x, 1x, 1/3x (3 CPU {'extension' if args.extension else 'stock'} workers, master orchestrating); "
          "load average "
          + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    print(f"  ideal (work / total speed):     {ideal:7.2f} s")
    print(f"  best split of whole tiles:      {whole:7.2f} s  ({whole / ideal:.2f}x ideal)")
    print(f"  static even split:              {even:7.2f} s  ({even / ideal:.2f}x ideal)")
    print(f"  measured, tile phase:           {duration:7.2f} s  ({duration / ideal:.2f}x ideal)  job start to last tile")
    print(f"  measured, whole prompt:         {elapsed:7.2f} s  ({elapsed / ideal:.2f}x ideal)  queue to history: enlarge, "
          "cut, send, blend included")
    print(f"  shares: {len(job['shares'])}; tiles per participant: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in SLOWDOWNS))
    for key, participants in speeds_now.items():
        if key.startswith("tiles-"):
            seconds = {name: figures["seconds_per_unit"] for name, figures in participants.items()}
            print("  measured seconds per tile (speed model, run on the worker): " + ", ".join(
                f"{name} {value:.2f}" for name, value in seconds.items()))
            real_ideal = tiles / sum(1.0 / value for value in seconds.values())
            print(f"  ideal at those measured times:  {real_ideal:7.2f} s; tile phase {duration / real_ideal:.2f}x it "
                  "(the scheduling, uploads and fetches, against the work the workers really did)")
    print(f"  per-tile overhead (upper bound): {overhead * 100:5.1f}% of a tile's time  (tile phase beyond the best whole "
          "split, per tile of the busiest participant)")
    mib = 1 << 20
    image_bytes = args.target * args.target * 3 * 4
    region = max(tile_grid(args.target, args.target, args.tile, args.tile, 64), key=lambda t: t.region.width * t.region.height).region
    latent_bytes = (args.target // 8) ** 2 * 4 * 4
    print(f"  memory: the upscaled image is {image_bytes / mib:.0f} MiB as float32, its whole latent {latent_bytes / mib:.0f} MiB, "
          f"the largest tile {region.width}x{region.height} ({region.width * region.height * 3 * 4 / mib:.0f} MiB as float32)")
    print("  peak resident growth during the measured run: " + ", ".join(
        f"{name} {memory.growth(name) / mib:.0f} MiB" for name in ("master", *workers)))


if __name__ == "__main__":
    main()
