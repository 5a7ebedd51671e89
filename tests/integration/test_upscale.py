"""Distributed Upscale on real ComfyUI processes, with the tests' tiny SD checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import Cluster
from tests.fixtures.tiny_sd import (
    CHECKPOINT_NODE,
    DECODE_NODE,
    NEGATIVE_NODE,
    OUTPUT_NODE,
    POSITIVE_NODE,
    tiny_txt2img_prompt,
    write_tiny_checkpoint,
)
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
