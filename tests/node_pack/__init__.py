"""Test-only nodes that stand in for GPU work in the integration tests and benchmarks.

Installed into test ComfyUI instances (master and workers) as a custom node folder; never shipped.
"""

from __future__ import annotations

import os
import time

import comfy.model_management
import comfy.utils
import torch


class DistTestSeedStamp:
    """An image whose first 8 pixels' red channel hold the seed's bytes, exactly recoverable after PNG."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            "width": ("INT", {"default": 64, "min": 8, "max": 8192}),
            "height": ("INT", {"default": 64, "min": 1, "max": 8192}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stamp"
    CATEGORY = "distributed_tests"

    def stamp(self, seed, width, height, batch_size):
        image = torch.zeros([batch_size, height, width, 3])
        for i, byte in enumerate(int(seed).to_bytes(8, "big")):
            image[:, 0, i, 0] = byte / 255.0
        for b in range(batch_size):
            image[b, 0, 8, 1] = b / 255.0
        return (image,)


class DistTestNoise:
    """Seed-dependent uniform noise: the worst case for PNG and the realistic case for transfers."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            "width": ("INT", {"default": 512, "min": 1, "max": 8192}),
            "height": ("INT", {"default": 512, "min": 1, "max": 8192}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "noise"
    CATEGORY = "distributed_tests"

    def noise(self, seed, width, height, batch_size):
        generator = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
        return (torch.rand([batch_size, height, width, 3], generator=generator),)


class DistTestSleep:
    """Passes images through after `seconds`, reporting `steps` progress steps like a sampler would.

    DIST_TEST_SLOWDOWN in the instance's environment multiplies the time: a slower simulated GPU.
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.01}),
            "steps": ("INT", {"default": 4, "min": 1, "max": 1000}),
        }, "optional": {
            "salt": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sleep"
    CATEGORY = "distributed_tests"

    def sleep(self, images, seconds, steps, salt=0, unique_id=None):
        seconds *= float(os.environ.get("DIST_TEST_SLOWDOWN", "1"))
        progress = comfy.utils.ProgressBar(steps, node_id=unique_id)
        for step in range(steps):
            deadline = time.monotonic() + seconds / steps
            while time.monotonic() < deadline:
                comfy.model_management.throw_exception_if_processing_interrupted()
                time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            progress.update_absolute(step + 1)
        return (images,)


NODE_CLASS_MAPPINGS = {
    "DistTestSeedStamp": DistTestSeedStamp,
    "DistTestNoise": DistTestNoise,
    "DistTestSleep": DistTestSleep,
}
