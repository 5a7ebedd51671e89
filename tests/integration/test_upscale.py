"""Distributed Upscale on real ComfyUI processes, with the tests' tiny SD checkpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from distributed.jobs.tiles import border_steps, tile_grid
from tests.conftest import OUTPUT_ROOT, Cluster
from tests.fixtures.tiny_sd import (
    CHECKPOINT_NODE,
    DECODE_NODE,
    NEGATIVE_NODE,
    OUTPUT_NODE,
    POSITIVE_NODE,
    tiny_txt2img_prompt,
    write_tiny_checkpoint,
)
from tests.harness import ComfyInstance, reset_dir, wait_until
from tests.integration.workflows import saved_images

UPSCALE_NODE = "20"
RESIZE_NODE = "19"


def upscale_prompt(checkpoint: str, seed: int, width: int = 64, height: int = 64, upscale_by: float = 2.0, batch_size: int = 1,
                   tile: int = 64, padding: int = 16, denoise: float = 0.3, prefix: str = "upscaled") -> dict[str, Any]:
    """txt2img at 64x64, resized to width x height, then the Distributed Upscale."""
    prompt = tiny_txt2img_prompt(checkpoint, seed=seed, batch_size=batch_size, filename_prefix=prefix)
    prompt[RESIZE_NODE] = {"class_type": "ImageScale", "inputs": {
        "image": [DECODE_NODE, 0], "upscale_method": "bilinear", "width": width, "height": height, "crop": "disabled"}}
    prompt[UPSCALE_NODE] = {"class_type": "DistributedUpscale", "inputs": {
        "image": [RESIZE_NODE, 0], "model": [CHECKPOINT_NODE, 0], "positive": [POSITIVE_NODE, 0], "negative": [NEGATIVE_NODE, 0],
        "vae": [CHECKPOINT_NODE, 2], "seed": seed, "steps": 3, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal",
        "denoise": denoise, "upscale_by": upscale_by, "tile_width": tile, "tile_height": tile, "tile_padding": padding,
        "mask_blur": 8}}
    prompt[OUTPUT_NODE]["inputs"]["images"] = [UPSCALE_NODE, 0]
    return prompt


def pictures(cluster: Cluster, entry: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(Image.open(path), dtype=np.int16) for path in saved_images(entry, cluster.master.output_dir)]


@pytest.fixture
def checkpoint(cluster: Cluster) -> str:
    name = ""
    for instance in (cluster.master, *cluster.workers.values()):
        name = write_tiny_checkpoint(instance.base_dir / "models")
    return name


@pytest.mark.parametrize(("width", "height", "upscale_by"), [(61, 53, 1.5), (64, 64, 2.0)])
def test_the_output_has_exactly_the_size_asked_for(cluster: Cluster, checkpoint: str, width: int, height: int, upscale_by: float) -> None:
    cluster.registry([])
    entry = cluster.run(upscale_prompt(checkpoint, seed=3, width=width, height=height, upscale_by=upscale_by, prefix="size"), timeout=300)

    (picture,) = pictures(cluster, entry)
    assert picture.shape[:2] == (round(height * upscale_by), round(width * upscale_by))


def test_a_batch_of_frames_comes_back_as_a_batch_of_the_same_size(cluster: Cluster, checkpoint: str) -> None:
    cluster.registry([])
    entry = cluster.run(upscale_prompt(checkpoint, seed=5, batch_size=3, upscale_by=1.5, prefix="frames"), timeout=300)

    frames = pictures(cluster, entry)
    assert [frame.shape for frame in frames] == [(96, 96, 3)] * 3
    assert np.abs(frames[0] - frames[1]).max() > 8  # each frame is its own picture


def upscale_job(cluster: Cluster, entry: dict[str, Any]) -> dict[str, Any]:
    """The tile job the master ran for a finished prompt."""
    prompt_id = entry["prompt"][1]
    status, body = cluster.master.get("/distributed/jobs")
    assert status == 200, body
    return next(job for job in body["jobs"] if job["mode"] == "upscale" and job["prompt_id"] == prompt_id)


def run_afresh(cluster: Cluster, prompt: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Runs a prompt with the master's cache emptied first, so the upscale renders again.

    ComfyUI empties its cache between two queue items, so a cheap prompt goes first: once it is
    done, the cache is emptied before the next item, whichever of the two its thread saw first.
    """
    status, body = cluster.master.post("/free", {"free_memory": True})
    assert status == 200, body
    cluster.run({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                 "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    entry = cluster.run(prompt, timeout=timeout)
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{cluster.master.log_tail()}"
    return entry


def test_distributed_tiles_give_the_single_instance_picture(cluster: Cluster, checkpoint: str) -> None:
    prompt = upscale_prompt(checkpoint, seed=9, width=96, height=96, upscale_by=2.0, prefix="alone")
    cluster.registry([])
    (alone,) = pictures(cluster, run_afresh(cluster, prompt))

    cluster.use_workers("a", "stock")
    prompt[OUTPUT_NODE]["inputs"]["filename_prefix"] = "together"
    entry = run_afresh(cluster, prompt)
    (together,) = pictures(cluster, entry)

    job = upscale_job(cluster, entry)
    assert job["state"] == "done" and len(job["tiles"]) == 9
    assert {tile["state"] for tile in job["tiles"]} == {"done"}
    assert {tile["participant"] for tile in job["tiles"]} & {"a", "stock"}, job["tiles"]  # workers rendered some
    assert together.shape == alone.shape == (192, 192, 3)
    assert np.abs(together - alone).max() <= 2


def test_a_worker_without_the_checkpoint_is_named_and_its_tiles_go_elsewhere(cluster: Cluster, checkpoint: str,
                                                                          spare_worker: Any) -> None:
    spare = {"id": "spare", "name": "Worker spare", "type": "remote", "host": "127.0.0.1", "port": spare_worker.port}
    cluster.registry([cluster.entry("a"), spare])
    cluster.wait_online("a", "spare")
    entry = run_afresh(cluster, upscale_prompt(checkpoint, seed=13, width=96, height=96, prefix="lacking"))

    job = upscale_job(cluster, entry)
    assert job["state"] == "done" and {tile["state"] for tile in job["tiles"]} == {"done"}
    assert "spare" not in {tile["participant"] for tile in job["tiles"]}
    attempts = [attempt for share in job["shares"] for attempt in share["attempts"]]
    assert any("Worker spare" in attempt and checkpoint in attempt for attempt in attempts), attempts
    (picture,) = pictures(cluster, entry)
    assert picture.shape == (192, 192, 3)


def test_a_worker_killed_mid_run_loses_no_tile(cluster: Cluster, checkpoint: str, spare_worker: Any) -> None:
    write_tiny_checkpoint(spare_worker.base_dir / "models")
    spare = {"id": "spare", "name": "Worker spare", "type": "remote", "host": "127.0.0.1", "port": spare_worker.port}
    cluster.registry([cluster.entry("a"), spare])
    cluster.wait_online("a", "spare")
    prompt_id = cluster.master.queue_prompt(upscale_prompt(checkpoint, seed=17, width=128, height=128, prefix="killed"))

    def spare_renders() -> bool:
        jobs = cluster.master.get("/distributed/jobs")[1]["jobs"]
        job = next((job for job in jobs if job["mode"] == "upscale" and job["prompt_id"] == prompt_id), None)
        return job is not None and any(t["participant"] == "spare" and t["state"] == "running" for t in job["tiles"])

    wait_until(spare_renders, 240, interval=0.1, message="a tile running on the spare worker")
    spare_worker.kill()
    entry = cluster.master.wait_history(prompt_id, 300)

    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{cluster.master.log_tail()}"
    job = upscale_job(cluster, entry)
    assert len(job["tiles"]) == 16 and {tile["state"] for tile in job["tiles"]} == {"done"}
    attempts = [attempt for share in job["shares"] for attempt in share["attempts"]]
    assert any("Worker spare" in attempt for attempt in attempts), attempts
    (picture,) = pictures(cluster, entry)
    assert picture.shape == (256, 256, 3)


@pytest.fixture
def extension_worker(checkpoint: str) -> Iterator[ComfyInstance]:
    """A worker that runs this extension too (its tiles come back on the fast path)."""
    worker = ComfyInstance("worker-extension", reset_dir(OUTPUT_ROOT / f"extension-{time.monotonic_ns()}"), with_extension=True)
    write_tiny_checkpoint(worker.base_dir / "models")
    worker.start()
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()


def test_a_stock_worker_and_an_extension_worker_render_tiles_of_one_picture(cluster: Cluster, checkpoint: str,
                                                                          extension_worker: ComfyInstance) -> None:
    prompt = upscale_prompt(checkpoint, seed=21, width=96, height=96, prefix="mixed-alone")
    cluster.registry([])
    (alone,) = pictures(cluster, run_afresh(cluster, prompt))

    extension = {"id": "extension", "name": "Worker extension", "type": "remote", "host": "127.0.0.1", "port": extension_worker.port}
    cluster.registry([cluster.entry("stock"), extension], participate=False)
    cluster.wait_online("stock", "extension")
    prompt[OUTPUT_NODE]["inputs"]["filename_prefix"] = "mixed-together"
    entry = run_afresh(cluster, prompt)
    (together,) = pictures(cluster, entry)

    job = upscale_job(cluster, entry)
    assert {tile["participant"] for tile in job["tiles"]} == {"stock", "extension"}, job["tiles"]
    assert np.abs(together - alone).max() <= 2
    # The stock worker loaded PNGs it was sent; the extension worker got pixels and no file at all,
    # and the master keeps no tile once the picture is done.
    assert list((cluster.workers["stock"].input_dir / "distributed_tiles").glob("*.png"))
    assert not (extension_worker.input_dir / "distributed_tiles").exists()
    assert not list((cluster.master.input_dir / "distributed_tiles").glob("*"))


def test_tiles_of_a_smooth_picture_meet_without_a_seam(cluster: Cluster, checkpoint: str) -> None:
    """The pass-through setting (denoise 0, and a VAE stand-in that packs pixels into the latent
    exactly) returns every tile as it was cut: the upscale must then equal a plain Lanczos enlargement,
    and no step across a tile border may stand out from the steps inside the tiles."""
    side, upscale_by, tile, padding = 96, 2.0, 64, 16
    # Smooth, but steep enough (waves of 24 and 32 px) that a tile put back one pixel off would show.
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
    smooth = np.stack([0.5 + 0.4 * np.sin(xs * np.pi / 12), 0.5 + 0.4 * np.cos(ys * np.pi / 16), 0.2 + 0.6 * xs / side], axis=2)
    cluster.master.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(smooth * 255).astype(np.uint8)).save(cluster.master.input_dir / "smooth.png")
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "smooth.png"}},
        "4": {"class_type": "DistTestPassThroughVAE", "inputs": {}},
        "5": {"class_type": "DistributedUpscale", "inputs": {
            "image": ["3", 0], "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "vae": ["4", 0], "seed": 1,
            "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.0, "upscale_by": upscale_by,
            "tile_width": tile, "tile_height": tile, "tile_padding": padding, "mask_blur": 8}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "seams-tiled"}},
        "7": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "lanczos", "scale_by": upscale_by}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "seams-plain"}},
    }
    cluster.use_workers("a", "b")  # they hold the test pack's VAE stand-in
    entry = run_afresh(cluster, prompt)

    def saved(node: str) -> np.ndarray:
        (image,) = entry["outputs"][node]["images"]
        return np.asarray(Image.open(cluster.master.output_dir / image["subfolder"] / image["filename"]), dtype=np.int16)

    tiled, plain = saved("6"), saved("8")
    job = upscale_job(cluster, entry)
    assert {tile["participant"] for tile in job["tiles"]} & {"a", "b"}, job["tiles"]  # workers rendered some
    assert tiled.shape == plain.shape == (192, 192, 3)
    assert np.abs(tiled - plain).max() <= 2
    at_border, inside = border_steps(tiled / 255.0, tile_grid(192, 192, tile, tile, padding))
    assert inside > 0 and at_border <= inside + 2 / 255, (at_border, inside)
