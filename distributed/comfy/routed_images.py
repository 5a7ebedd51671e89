"""Saves a worker's images of a routed prompt on the master, as the prompt's own output node would.

A prompt of the distributed queue that a worker rendered must leave the same files on the master as
if the master had rendered it: SaveImage's files in the output folder, PreviewImage's in the temp
folder, named by ComfyUI's own `folder_paths.get_save_image_path`, each PNG carrying the user's
prompt and every `extra_pnginfo` entry (the workflow) as text chunks, at the node's compress level,
and nothing when ComfyUI runs with `--disable-metadata`.

These files are written beside the master's own execution thread, which may save at the same time
under the same prefix: a file is created only if its name is free, and a taken name is computed
again, so neither side ever overwrites the other's image.
"""

from __future__ import annotations

import json
import os
import random
import string
import threading
from typing import Any

import folder_paths
import numpy as np
from comfy.cli_args import args
from PIL import Image
from PIL.PngImagePlugin import PngInfo

SAVE_COMPRESS_LEVEL = 4
PREVIEW_COMPRESS_LEVEL = 1
"""SaveImage's and PreviewImage's own levels."""
MAX_NAME_RETRIES = 100

_saving = threading.Lock()
"""Our saves, one at a time: two of them never compute the same name."""


def save(class_type: str, filename_prefix: str, images: np.ndarray, prompt: dict[str, Any],
         extra_pnginfo: dict[str, Any] | None) -> list[dict[str, str]]:
    """Writes a batch [B, H, W, C] in 0..1 as `class_type` (SaveImage or PreviewImage) would; returns
    the file references ComfyUI's history and `executed` event list for it."""
    if class_type == "SaveImage":
        folder, kind, level = folder_paths.get_output_directory(), "output", SAVE_COMPRESS_LEVEL
    else:
        folder, kind, level = folder_paths.get_temp_directory(), "temp", PREVIEW_COMPRESS_LEVEL
        filename_prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    metadata = None if args.disable_metadata else png_text(prompt, extra_pnginfo)
    height, width = images.shape[1], images.shape[2]
    results = []
    with _saving:
        target, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder, width, height)
        for number, image in enumerate(images):
            pixels = Image.fromarray(np.clip(255.0 * image, 0, 255).astype(np.uint8))
            for _ in range(MAX_NAME_RETRIES):
                file = f"{name.replace('%batch_num%', str(number))}_{counter:05}_.png"
                path = os.path.join(target, file)
                try:
                    handle = open(path, "xb")
                except FileExistsError:  # the execution thread saved under this prefix meanwhile
                    target, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder, width, height)
                    continue
                with handle:
                    try:
                        pixels.save(handle, format="PNG", pnginfo=metadata, compress_level=level)
                    except BaseException:
                        os.remove(path)
                        raise
                break
            else:
                raise OSError(f"no free file name for '{filename_prefix}' after {MAX_NAME_RETRIES} tries")
            results.append({"filename": file, "subfolder": subfolder, "type": kind})
            counter += 1
    return results


def png_text(prompt: dict[str, Any], extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """The text chunks ComfyUI's SaveImage writes: the prompt, then each extra_pnginfo entry, as JSON."""
    metadata = PngInfo()
    metadata.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata
