"""Fetches a finished share's outputs from a worker and decodes them off the event loop.

Stock path: a stock worker ends each share in a PreviewImage node that keeps the collector's node id,
so its history lists the images per collector in batch order. Each image is downloaded with /view and
decoded in a worker thread while the next one downloads, so a 2048x2048 batch never stalls the loop.
Only PNG is decoded, and only once its header shows a size the job's limits allow (a PNG of zeros
compresses 1000:1, so its file size says nothing).

Fast path: a worker that runs this extension ends the share in `DistributedResultSink`, whose history
output describes each stored array; the master streams it from the worker's results route into one
array allocated from the header (`wire.read_stream`), once what the history describes passed the
job's limits and the stream's header matches it. Each transfer is timed for the worker's link
(`link.LinkMonitor`), which picks the encoding of the next one.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import BadResult
from ..shares import PRECISIONS, AudioClip, ShareOutput
from ..workers.client import ImageRef, WorkerClient
from . import sink, wire
from .limits import ResultLimits
from .link import LinkMonitor

logger = logging.getLogger(__name__)

_CONVERT_ITEMS = 1 << 22
PNG_BYTES_PER_PIXEL = 8
"""The most a PNG can take per pixel stored plainly (16-bit RGBA): the largest /view answer read."""
PNG_OVERHEAD = 1 << 20
IMAGE_LIMIT_SETTING = "settings.max_image_megapixels"


def decode_png(data: bytes, worker_name: str, filename: str, limits: ResultLimits, node_id: str) -> np.ndarray:
    """PNG bytes -> float32 array [H, W, C] in 0..1, like ComfyUI's IMAGE, once the header showed a
    size `limits` allow. Runs in a thread."""
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            width, height = image.size
            limits.check_image(worker_name, node_id, height, width)
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGB")
            array = np.asarray(image, dtype=np.uint8)
    except BadResult:
        raise
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


async def fetch_images(client: WorkerClient, refs: list[ImageRef], limits: ResultLimits, node_id: str) -> np.ndarray:
    """Downloads and decodes images into one batch [B, H, W, C]; download i+1 overlaps decode i."""
    limits.check_count(client.name, node_id, len(refs))
    max_file = limits.max_pixels * PNG_BYTES_PER_PIXEL + PNG_OVERHEAD
    decoded: list[asyncio.Task[np.ndarray]] = []
    try:
        for ref in refs:
            data = await client.view(ref, max_file, IMAGE_LIMIT_SETTING)
            decoded.append(asyncio.ensure_future(asyncio.to_thread(decode_png, data, client.name, ref.filename, limits, node_id)))
            if len(decoded) > 1:  # the batch so far, with the next image as large as the last
                limits.check_bytes(client.name, node_id, (await decoded[-2]).size * len(decoded))
        arrays = await asyncio.gather(*decoded)
    finally:
        for task in decoded:
            task.cancel()
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        raise BadResult(client.name, f"returned images of different sizes in one batch: {sorted(shapes)}")
    limits.check_images(client.name, node_id, (len(arrays), *arrays[0].shape))
    return await asyncio.to_thread(np.stack, arrays)


async def fetch_outputs(client: WorkerClient, entry: dict, collector_ids: tuple[str, ...],
                        limits: Mapping[str, ResultLimits]) -> dict[str, np.ndarray]:
    """Every collector's batch from one finished share."""
    return {node_id: await fetch_images(client, image_refs(entry, node_id, client.name), limits[node_id], node_id)
            for node_id in collector_ids}


# --- fast path ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredOutput:
    """One array a worker's sink node stored, as its history output describes it."""

    key: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    sample_rate: int | None = None


def stored_outputs(entry: dict, node_id: str, worker_name: str) -> list[StoredOutput]:
    """What the sink at `node_id` stored for the master, from the worker's history entry."""
    output = (entry.get("outputs") or {}).get(node_id)
    described = output.get(sink.RESULT_UI_KEY) if isinstance(output, dict) else None
    if not isinstance(described, list) or not described:
        raise BadResult(worker_name, f"finished without a stored result for collector node {node_id}")
    outputs = []
    for item in described:
        try:
            sample_rate = item.get("sample_rate")
            output = StoredOutput(str(item["key"]), str(item["kind"]), str(item["dtype"]),
                                  tuple(int(n) for n in item["shape"][: wire.MAX_NDIM + 1]), sample_rate)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise BadResult(worker_name, f"history describes a malformed result for node {node_id}") from None
        if output.dtype not in PRECISIONS or not (sample_rate is None or (type(sample_rate) is int and sample_rate > 0)):
            raise BadResult(worker_name, f"history describes a malformed result for node {node_id}")
        outputs.append(output)
    return outputs


def as_images(array: np.ndarray) -> np.ndarray:
    """A fetched batch as ComfyUI's IMAGE: float32 in 0..1. Runs in a thread.

    uint8 is scaled exactly as `decode_png` does (so both paths give the same floats), into one new
    array, slice by slice so no single numpy call holds the GIL long.
    """
    if array.dtype == np.float32:
        return array
    out = np.empty(array.shape, dtype=np.float32)
    flat_in, flat_out = array.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _CONVERT_ITEMS):
        piece = slice(start, start + _CONVERT_ITEMS)
        if array.dtype == np.uint8:
            np.divide(flat_in[piece], np.float32(255.0), out=flat_out[piece], dtype=np.float32)
        else:
            flat_out[piece] = flat_in[piece]
    return out


async def fetch_stored(client: WorkerClient, prompt_id: str, output: StoredOutput, links: LinkMonitor,
                       limits: ResultLimits) -> np.ndarray:
    """Streams one stored array in the link's encoding, checked against what the history announced
    (which the caller checked against the job's `limits`)."""
    encoding = links.choose(client.worker.id, output.dtype)
    decoder = wire.Decoder(client.name, expected_dtype=output.dtype, expected_shape=output.shape, max_bytes=limits.max_bytes)
    transfer = await client.download(
        sink.result_path(prompt_id, output.key), lambda body: wire.read_stream(body, decoder),
        size=int(np.prod(output.shape, dtype=np.int64)) * np.dtype(output.dtype).itemsize, params={"encoding": encoding},
        not_found=f"holds no result for node {output.key} of prompt {prompt_id} (expired or fetched already)",
    )
    links.observe(client.worker.id, transfer.wire_bytes, transfer.seconds)
    return transfer.value


async def fetch_results(
    client: WorkerClient, prompt_id: str, entry: dict, collector_ids: tuple[str, ...], links: LinkMonitor,
    limits: Mapping[str, ResultLimits], audio_ids: tuple[str, ...] = (),
) -> dict[str, ShareOutput]:
    """Every collector's result from a share that ended in sink nodes: an image batch, or for the
    collectors in `audio_ids` an audio clip; each within its `limits`."""
    results: dict[str, ShareOutput] = {}
    for node_id in collector_ids:
        kind = "audio" if node_id in audio_ids else "images"
        outputs = [output for output in stored_outputs(entry, node_id, client.name) if output.kind == kind]
        if len(outputs) != 1:
            raise BadResult(client.name, f"stored {len(outputs)} {kind} outputs for collector node {node_id}, expected 1")
        if kind == "images":
            limits[node_id].check_images(client.name, node_id, outputs[0].shape)
        else:
            limits[node_id].check_audio(client.name, node_id, outputs[0].shape)
        array = await fetch_stored(client, prompt_id, outputs[0], links, limits[node_id])
        if kind == "images":
            results[node_id] = await asyncio.to_thread(as_images, array)
        elif outputs[0].sample_rate is None or array.ndim != 3:
            raise BadResult(client.name, f"sent audio for collector node {node_id} without a sample rate "
                                         "or not shaped [batch, channels, samples]")
        else:
            results[node_id] = AudioClip(array.astype(np.float32, copy=False), outputs[0].sample_rate)
    return results
