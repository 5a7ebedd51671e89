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

    The instance's environment shapes the time, to simulate GPUs:
    - DIST_TEST_SLOWDOWN multiplies it: a slower GPU;
    - DIST_TEST_SLOWDOWN_FILE names a file that, while it exists, multiplies it by the number it holds:
      a GPU that turns slower mid-run (busy with something else);
    - DIST_TEST_COLD_START_SECONDS adds that many seconds to the process's first run of the node: a
      model load on the first run only.
    """

    first_run_done = False

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
        seconds *= float(os.environ.get("DIST_TEST_SLOWDOWN", "1")) * _file_factor(os.environ.get("DIST_TEST_SLOWDOWN_FILE"))
        if not DistTestSleep.first_run_done:
            DistTestSleep.first_run_done = True
            _wait(float(os.environ.get("DIST_TEST_COLD_START_SECONDS", "0")))
        progress = comfy.utils.ProgressBar(steps, node_id=unique_id)
        for step in range(steps):
            _wait(seconds / steps)
            progress.update_absolute(step + 1)
        return (images,)


def _file_factor(path):
    try:
        with open(path, encoding="utf-8") as file:
            return float(file.read().strip() or "1")
    except (TypeError, OSError, ValueError):
        return 1.0


def _wait(seconds):
    """Sleeps, heeding an interrupt within 20 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        comfy.model_management.throw_exception_if_processing_interrupted()
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


class DistTestHang:
    """Passes images through, except in an instance started with DIST_TEST_HANG=1: there it never
    returns, reports no progress and ignores interrupts, while the server keeps answering (a node
    stuck in a driver call, a deadlock). Its worker is of no more use: tests kill it afterwards."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "hang"
    CATEGORY = "distributed_tests"

    def hang(self, images):
        while os.environ.get("DIST_TEST_HANG") == "1":
            time.sleep(1.0)
        return (images,)


class DistTestTone:
    """Seed-dependent mono audio: the first 8 samples hold the seed's bytes (/255), the rest a quiet
    tone. Odd seeds run `extra` samples longer, so shares of one job differ in length."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            "samples": ("INT", {"default": 4000, "min": 16, "max": 10_000_000}),
            "extra": ("INT", {"default": 0, "min": 0, "max": 100_000}),
            "sample_rate": ("INT", {"default": 16000, "min": 8000, "max": 192000}),
        }}

    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "tone"
    CATEGORY = "distributed_tests"

    def tone(self, seed, samples, extra, sample_rate):
        length = samples + (extra if seed % 2 else 0)
        waveform = 0.1 * torch.sin(torch.arange(length, dtype=torch.float32) * 0.05).reshape(1, 1, length)
        for i, byte in enumerate(int(seed).to_bytes(8, "big")):
            waveform[0, 0, i] = byte / 255.0
        return ({"waveform": waveform, "sample_rate": sample_rate},)


class DistTestSaveAudioArray:
    """Saves an AUDIO batch as .npy in the output folder (the stock audio nodes need torchaudio)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "dist_audio"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "distributed_tests"

    def save(self, audio, filename_prefix):
        import folder_paths
        import numpy as np

        name = f"{filename_prefix}_{time.monotonic_ns()}.npy"
        np.save(os.path.join(folder_paths.get_output_directory(), name), audio["waveform"].cpu().numpy())
        return {"ui": {"audio_arrays": [{"filename": name, "sample_rate": int(audio["sample_rate"])}]}}


class PixelPackingVAE:
    """A VAE stand-in that packs each 8x8 block of pixels into a latent cell's channels and back.

    Exact and nearly free: with denoise 0 the sampler returns the latent untouched, so a tile comes
    back with its pixels unchanged. That is the pass-through an upscale's seam test and benchmark need
    (the tiny checkpoint's VAE darkens and flattens a picture, and costs a minute a tile on a CPU).
    Only the methods the stock VAEEncode, VAEDecode and VAEDecodeTiled call are here.
    """

    CELL = 8

    def encode(self, pixels):
        return torch.nn.functional.pixel_unshuffle(pixels.movedim(-1, 1), self.CELL)

    def decode(self, latent):
        return torch.nn.functional.pixel_shuffle(latent, self.CELL).movedim(1, -1)

    def decode_tiled(self, samples, **_tiling):
        return self.decode(samples)

    def spacial_compression_decode(self):
        return self.CELL

    def temporal_compression_decode(self):
        return None


class DistTestPassThroughVAE:
    """Loads the pass-through VAE stand-in (see PixelPackingVAE)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "distributed_tests"

    def load(self):
        return (PixelPackingVAE(),)


NODE_CLASS_MAPPINGS = {
    "DistTestPassThroughVAE": DistTestPassThroughVAE,
    "DistTestSeedStamp": DistTestSeedStamp,
    "DistTestNoise": DistTestNoise,
    "DistTestSleep": DistTestSleep,
    "DistTestHang": DistTestHang,
    "DistTestTone": DistTestTone,
    "DistTestSaveAudioArray": DistTestSaveAudioArray,
}


def _hold_every_sampling_run() -> None:
    """With DIST_TEST_SAMPLE_SECONDS set, every KSampler run (a worker's tile chain, the master's own
    tile renderer, any txt2img) takes that long more, times DIST_TEST_SLOWDOWN: a stand-in for GPU
    time per tile in the upscale benchmark, on instances whose sampling is otherwise tiny."""
    import nodes

    seconds = float(os.environ.get("DIST_TEST_SAMPLE_SECONDS", "0")) * float(os.environ.get("DIST_TEST_SLOWDOWN", "1"))
    if seconds <= 0:
        return
    sample = nodes.common_ksampler

    def held(*args, **kwargs):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return sample(*args, **kwargs)

    nodes.common_ksampler = held


_hold_every_sampling_run()
