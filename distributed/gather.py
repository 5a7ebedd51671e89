"""Fetches a finished share's images from a stock worker and decodes them off the event loop.

A stock worker ends each share in a PreviewImage node that keeps the collector's node id, so its
history lists the images per collector in batch order. Each image is downloaded with /view and decoded
in a worker thread while the next one downloads, so a 2048x2048 batch never stalls the server loop.
"""

from __future__ import annotations

import asyncio
import io
import logging

import numpy as np
from PIL import Image

from .client import WorkerClient
from .errors import BadResult
from .models import ImageRef

logger = logging.getLogger(__name__)


def decode_png(data: bytes, worker_name: str, filename: str) -> np.ndarray:
    """PNG bytes -> float32 array [H, W, C] in 0..1, like ComfyUI's IMAGE. Runs in a thread."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGB")
            array = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # PIL raises many types for a broken file
        raise BadResult(worker_name, f"image {filename} could not be decoded ({error})") from None
    return array.astype(np.float32) / np.float32(255.0)


def image_refs(entry: dict, node_id: str, worker_name: str) -> list[ImageRef]:
    """The images a history entry lists for one output node."""
    output = (entry.get("outputs") or {}).get(node_id)
    images = output.get("images") if isinstance(output, dict) else None
    if not isinstance(images, list) or not images:
        raise BadResult(worker_name, f"finished without images for collector node {node_id}")
    refs = []
    for image in images:
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
            raise BadResult(worker_name, f"history lists a malformed image for node {node_id}")
        refs.append(ImageRef(image["filename"], str(image.get("subfolder", "")), str(image.get("type", "temp"))))
    return refs


async def fetch_images(client: WorkerClient, refs: list[ImageRef]) -> np.ndarray:
    """Downloads and decodes images into one batch [B, H, W, C]; download i+1 overlaps decode i."""
    decoded: list[asyncio.Task[np.ndarray]] = []
    try:
        for ref in refs:
            data = await client.view(ref)
            decoded.append(asyncio.ensure_future(asyncio.to_thread(decode_png, data, client.name, ref.filename)))
        arrays = await asyncio.gather(*decoded)
    finally:
        for task in decoded:
            task.cancel()
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise BadResult(client.name, f"returned images of different sizes in one batch: {sorted(shapes)}")
    return await asyncio.to_thread(np.stack, arrays)


async def fetch_outputs(client: WorkerClient, entry: dict, collector_ids: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every collector's batch from one finished share."""
    return {node_id: await fetch_images(client, image_refs(entry, node_id, client.name)) for node_id in collector_ids}
