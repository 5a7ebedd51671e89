"""The Distributed Upscale node: one big image, or every frame of a clip, finished by all GPUs at once.

The master enlarges each frame (with the upscale model if one is given, then to the exact size with
Lanczos) and cuts it into tiles (jobs/tiles.py). Tiles are the shares: each goes to whichever
participant frees up first, the master included, and comes back to be blended into its frame. A
tile renders the same wherever it runs: its pixels are quantised as a PNG would hold them, its
noise comes from its own seed, and every participant runs the same stock img2img chain
(jobs/upscale_plan.py). So the result does not depend on how many GPUs took part.
"""

from __future__ import annotations

import logging
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import nodes as comfy_nodes
import numpy as np
import torch

from ..jobs.tiles import Canvas, Tile, crop, pad_to_cells, tile_grid, tile_seed

logger = logging.getLogger(__name__)

MAX_SIDE = 16384
"""The largest side an enlarged frame may have."""


class DistributedUpscale:
    """Enlarges `image` by `upscale_by` and refines it tile by tile on every participant."""

    DESCRIPTION = ("Upscales an image (or every frame of a batch) tile by tile, with all GPUs at once: the master cuts the "
                   "enlarged picture into tiles, every participant renders tiles as it frees up, and the master blends "
                   "them without seams. The picture is the same whatever GPUs took part.")
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The picture, or the frames of a clip (each item of the batch)."}),
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "vae": ("VAE",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Each tile's noise comes from this seed and the tile's place alone."}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                "denoise": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01}),
                "upscale_by": ("FLOAT", {"default": 2.0, "min": 0.05, "max": 8.0, "step": 0.05}),
                "tile_width": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 8}),
                "tile_height": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 8}),
                "tile_padding": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 8,
                                         "tooltip": "Pixels of context around each tile, rendered but not kept."}),
                "mask_blur": ("INT", {"default": 16, "min": 0, "max": 256,
                                      "tooltip": "How far, in pixels, a tile fades into its neighbours."}),
            },
            "optional": {
                "upscale_model": ("UPSCALE_MODEL", {"tooltip": "Enlarge with this model first, then to the exact size."}),
                "tiled_decode": ("BOOLEAN", {"default": False, "tooltip": "Decode tiles in pieces, for less VRAM."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def upscale(self, image: torch.Tensor, model: Any, positive: Any, negative: Any, vae: Any, seed: int, steps: int,
                cfg: float, sampler_name: str, scheduler: str, denoise: float, upscale_by: float, tile_width: int,
                tile_height: int, tile_padding: int, mask_blur: int, upscale_model: Any = None, tiled_decode: bool = False,
                unique_id: str | None = None, prompt: dict | None = None) -> tuple[torch.Tensor]:
        height, width = round(image.shape[1] * upscale_by), round(image.shape[2] * upscale_by)
        if not 1 <= height <= MAX_SIDE or not 1 <= width <= MAX_SIDE:
            raise ValueError(f"Distributed Upscale: {width}x{height} is outside 1..{MAX_SIDE} pixels a side")
        frames = enlarge(image, width, height, upscale_model)
        blur = min(mask_blur, tile_padding)
        tiles = [tile for frame in range(frames.shape[0])
                 for tile in tile_grid(width, height, tile_width, tile_height, tile_padding, frame)]
        canvases = [Canvas(height, width, frames.shape[3], blur) for _ in range(frames.shape[0])]
        renderer = TileRenderer(model, positive, negative, vae, seed, steps, cfg, sampler_name, scheduler, denoise, tiled_decode)
        progress = comfy.utils.ProgressBar(len(tiles), node_id=unique_id)
        for done, tile in enumerate(tiles, start=1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            canvases[tile.frame].add(tile, renderer.render(frames[tile.frame], tile))
            progress.update_absolute(done, len(tiles))
        return (torch.from_numpy(np.stack([canvas.result() for canvas in canvases])),)


def enlarge(image: torch.Tensor, width: int, height: int, upscale_model: Any) -> np.ndarray:
    """Every frame at exactly width x height, as float32 numpy [B, H, W, C]: through the upscale model
    first when one is given, then Lanczos to the exact size."""
    pixels = image
    if upscale_model is not None:
        from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

        pixels = ImageUpscaleWithModel.execute(upscale_model, pixels)[0]
    if pixels.shape[1:3] != (height, width):
        pixels = comfy.utils.common_upscale(pixels.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
    return pixels.clamp(0.0, 1.0).float().cpu().numpy()


class TileRenderer:
    """Renders one tile here, exactly as a worker's stock chain would (jobs/upscale_plan.py)."""

    def __init__(self, model: Any, positive: Any, negative: Any, vae: Any, seed: int, steps: int, cfg: float,
                 sampler_name: str, scheduler: str, denoise: float, tiled_decode: bool) -> None:
        self._model, self._positive, self._negative, self._vae = model, positive, negative, vae
        self._seed, self._steps, self._cfg = seed, steps, cfg
        self._sampler_name, self._scheduler, self._denoise = sampler_name, scheduler, denoise
        self._tiled_decode = tiled_decode

    def render(self, frame: np.ndarray, tile: Tile) -> np.ndarray:
        """The tile's region [h, w, C], refined: VAE encode, sample with the tile's seed, decode."""
        region = crop(frame, tile.region)
        pixels = torch.from_numpy(pad_to_cells(region))[None]
        latent = comfy_nodes.VAEEncode().encode(self._vae, pixels)[0]
        sampled = comfy_nodes.common_ksampler(self._model, tile_seed(self._seed, tile), self._steps, self._cfg, self._sampler_name,
                                              self._scheduler, self._positive, self._negative, latent, denoise=self._denoise)[0]
        if self._tiled_decode:
            decoded = comfy_nodes.VAEDecodeTiled().decode(self._vae, sampled, 512, 64, 64, 8)[0]
        else:
            decoded = comfy_nodes.VAEDecode().decode(self._vae, sampled)[0]
        return decoded[0, : region.shape[0], : region.shape[1]].float().cpu().numpy()
