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
from pathlib import Path
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import nodes as comfy_nodes
import numpy as np
import torch

from ..errors import DistributedError
from ..jobs.tiles import Canvas, Tile, crop, crop_8bit, pad_to_cells, tile_grid, tile_seed
from ..jobs.upscale_plan import TILE_FOLDER, PlannedTile, TilePlan, upscale_template
from ..transport.input_images import clear_pngs
from .bridge import Interrupted, JobBridge, bound
from .collectors import interrupted
from .result_sink import comfy_prompt_id

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
        tiles = [tile for frame in range(frames.shape[0])
                 for tile in tile_grid(width, height, tile_width, tile_height, tile_padding, frame)]
        blender = Blender(tiles, [Canvas(height, width, frames.shape[3], min(mask_blur, tile_padding)) for _ in range(frames.shape[0])],
                          comfy.utils.ProgressBar(len(tiles), node_id=unique_id))
        renderer = TileRenderer(model, positive, negative, vae, seed, steps, cfg, sampler_name, scheduler, denoise, tiled_decode)
        bridge = bound()
        try:
            if bridge is not None and prompt and unique_id is not None and bridge.tile_workers(interrupted) > 0:
                distribute(bridge, prompt, str(unique_id), seed, frames, tiles, blender, renderer)
            else:
                for index, tile in enumerate(tiles):
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    blender.add(index, renderer.render(frames[tile.frame], tile))
        except Interrupted:
            raise comfy.model_management.InterruptProcessingException() from None
        except DistributedError as error:
            raise RuntimeError(f"Distributed Upscale: {error}") from None
        return (torch.from_numpy(blender.result()),)


class Blender:
    """The frames being put together: each tile is blended once, whoever rendered it."""

    def __init__(self, tiles: list[Tile], canvases: list[Canvas], progress: Any) -> None:
        self._tiles = tiles
        self._canvases = canvases
        self._progress = progress
        self._done: set[int] = set()

    def add(self, index: int, pixels: np.ndarray) -> None:
        """Tile `index` rendered: [h, w, C] at least its region's size (a worker's comes padded to latent cells)."""
        if index in self._done:
            return  # a copy of it came in already: a tile is never counted twice
        tile = self._tiles[index]
        self._canvases[tile.frame].add(tile, pixels[: tile.region.height, : tile.region.width])
        self._done.add(index)
        self._progress.update_absolute(len(self._done), len(self._tiles))

    def result(self) -> np.ndarray:
        """The frames [B, H, W, C]. Each canvas is let go once copied into the batch, so the master
        never holds every frame twice (one frame is its canvas's own buffer, not copied at all)."""
        missing = [self._tiles[i].name for i in range(len(self._tiles)) if i not in self._done]
        if missing:
            raise RuntimeError(f"Distributed Upscale: {', '.join(missing[:5])} never came in; nothing is blended with a hole")
        canvases, self._canvases = self._canvases, []
        if len(canvases) == 1:
            return canvases.pop().result()[None]
        batch = np.empty((len(canvases), *canvases[0].shape), dtype=np.float32)
        for index in range(len(batch)):
            batch[index] = canvases.pop(0).result()
        return batch


def distribute(bridge: JobBridge, prompt: dict, node_id: str, seed: int, frames: np.ndarray, tiles: list[Tile], blender: Blender,
               renderer: TileRenderer) -> None:
    """Renders the tiles with every participant: the tiles' 8-bit pixels go into the plan, the
    dispatcher hands the tiles out (as pixels to workers with this extension, as PNGs written into the
    master's input folder when a stock worker needs them), and this thread blends what comes in and
    renders what the dispatcher gives the master."""
    template = upscale_template(prompt, node_id)
    input_dir = Path(folder_paths.get_input_directory())
    clear_pngs(input_dir, TILE_FOLDER)
    planned = tuple(PlannedTile.of(tile, pad_to_cells(crop_8bit(frames[tile.frame], tile.region)[:, :, :3]), tile_seed(seed, tile))
                    for tile in tiles)
    try:
        job_id = bridge.start_tiles(TilePlan(template, planned, node_id), comfy_prompt_id(), interrupted)
        try:
            while True:
                outcome = bridge.tile_outcome(job_id, interrupted, lambda: None)
                for index, pixels in outcome.delivered:
                    blender.add(index, pixels)
                for share_index, indices in outcome.render:
                    for index in indices:
                        comfy.model_management.throw_exception_if_processing_interrupted()
                        blender.add(index, renderer.render(frames[tiles[index].frame], tiles[index]))
                    bridge.deliver_tiles(job_id, share_index, interrupted)
                if outcome.finished:
                    return
        finally:
            bridge.end_tiles(job_id)
    finally:
        clear_pngs(input_dir, TILE_FOLDER)


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
