"""Save Image (Distributed): SaveImage whose every image carries the prompt that renders it.

Stock SaveImage writes the same prompt and workflow into every PNG of a batch: the master's, with
share 0's seed. For a collected batch that is wrong for every other image. This node asks the
collector upstream which share made each image (`provenance`) and embeds, per image, the prompt and
workflow that render that image on one GPU (jobs/provenance.py). Downstream of anything but a
collector, or when the batch no longer lines up with the collector's, it saves as SaveImage does.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import folder_paths
import numpy as np
from comfy.cli_args import args
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..graph import ancestors
from ..jobs.plan import COLLECTOR_CLASS
from ..jobs.provenance import ImageOrigin, prompt_for, workflow_for
from .provenance import ORIGINS
from .result_sink import comfy_prompt_id

logger = logging.getLogger(__name__)

COMPRESS_LEVEL = 4
"""SaveImage's own level."""


class DistributedSaveImage:
    """Saves images to the output folder, each with the prompt and workflow that render it alone."""

    DESCRIPTION = ("Saves the images to your ComfyUI output directory, like Save Image. Below a Distributed Collector, "
                   "each image carries the seed, value or batch index of the share that made it, so dragging it "
                   "into ComfyUI renders that very image.")
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save_images"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }

    def save_images(self, images: Any, filename_prefix: str = "ComfyUI", prompt: dict | None = None,
                    extra_pnginfo: dict | None = None, unique_id: str | None = None) -> dict[str, Any]:
        output_dir = folder_paths.get_output_directory()
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, output_dir, images[0].shape[1], images[0].shape[0])
        origins = self._origins(prompt, str(unique_id), len(images))
        results = []
        for number, image in enumerate(images):
            pixels = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            metadata = None if args.disable_metadata else self._metadata(prompt, extra_pnginfo, origins[number] if origins else None)
            file = f"{filename.replace('%batch_num%', str(number))}_{counter:05}_.png"
            Image.fromarray(pixels).save(os.path.join(folder, file), pnginfo=metadata, compress_level=COMPRESS_LEVEL)
            results.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
        return {"ui": {"images": results}}

    @staticmethod
    def _origins(prompt: dict | None, node_id: str, count: int) -> tuple[ImageOrigin, ...] | None:
        """Each image's origin, if this node saves exactly one collector's batch, image for image."""
        if not prompt or node_id not in prompt:
            return None
        collectors = [upstream for upstream in ancestors(prompt, [node_id]) if prompt[upstream].get("class_type") == COLLECTOR_CLASS]
        if len(collectors) != 1:
            return None
        origins = ORIGINS.origins(comfy_prompt_id(), collectors[0])
        if origins is None or len(origins) != count:
            if origins is not None:
                logger.info("Save Image (Distributed) node %s: %d images, but collector %s made %d; saving with the run's prompt",
                            node_id, count, collectors[0], len(origins))
            return None
        return origins

    @staticmethod
    def _metadata(prompt: dict | None, extra_pnginfo: dict | None, origin: ImageOrigin | None) -> PngInfo:
        metadata = PngInfo()
        if prompt is not None:
            metadata.add_text("prompt", json.dumps(prompt_for(prompt, origin) if origin else prompt))
        for key, value in (extra_pnginfo or {}).items():
            if key == "workflow" and origin is not None and prompt is not None:
                value = workflow_for(value, prompt, origin)
            metadata.add_text(key, json.dumps(value))
        return metadata
