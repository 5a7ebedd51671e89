"""Images a share loads that the master holds in memory (upscale tiles), on their way to a worker.

A worker that runs this extension (its object info lists INPUT_CLASS) gets each image's pixels in
the wire format, PUT to INPUTS_PATH under the image's SHA-256, and the share's LoadImage becomes an
INPUT_CLASS node naming that key: no PNG is encoded or decoded anywhere. Before each share the
master asks (HEAD) whether the worker still holds the key, so an image crosses the link once while
the worker keeps it, and a restarted worker or an evicted image simply gets it again. The worker
checks what arrives against the key (transport/input_store.py).

Any other worker gets the image as a PNG in the master's input folder, written the first time a
share needs it and uploaded like every input file (media.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import WorkerFailed
from ..graph import Prompt
from ..shares import InputImage
from ..workers.client import WorkerClient
from . import wire

INPUT_CLASS = "DistributedImageInput"
INPUT_DISPLAY_NAME = "Distributed Image Input"
INPUTS_PATH = "/distributed/inputs/{key}"
MAX_INPUT_BYTES = 512 << 20
"""The largest image a worker takes: a 8192 px tile with 1024 px of context on each side, and more."""
_KEY = re.compile(r"[0-9a-f]{64}")

logger = logging.getLogger(__name__)


def key_of(pixels: np.ndarray) -> str:
    """The key an image travels and is kept under: the SHA-256 of its C-order bytes."""
    return hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()


def is_key(text: str) -> bool:
    return _KEY.fullmatch(text) is not None


def input_path(key: str) -> str:
    return INPUTS_PATH.format(key=key)


def source_prompt(prompt: Prompt, inputs: Mapping[str, InputImage]) -> Prompt:
    """The share prompt with each in-memory image's LoadImage replaced by INPUT_CLASS, same node id."""
    rewritten = dict(prompt)
    for node_id, image in inputs.items():
        rewritten[node_id] = {"class_type": INPUT_CLASS, "inputs": {"key": image.key}}
    return rewritten


class PixelsRefused(WorkerFailed):
    """The worker's inputs route is missing or refuses the body (a proxy in front of it, say): the
    runner sends this worker PNGs instead, from now on."""


REFUSING = frozenset({404, 405, 413})
"""Answers to a PUT that say the route cannot take pixels at all, rather than that this body was bad."""


async def send_inputs(client: WorkerClient, images: Iterable[InputImage], encoding: str) -> None:
    """Makes sure the worker holds every image, sending those it lacks, streamed as it is encoded (a
    thread encodes one piece ahead of the socket). Raises WorkerFailed naming the image when the
    worker does not take one, PixelsRefused when its route cannot take pixels at all."""
    for image in {image.key: image for image in images}.values():
        status, _ = await client.send("HEAD", input_path(image.key))
        if status == 200:
            continue
        status, answer = await client.send("PUT", input_path(image.key), data=_encoded(image.pixels, encoding),
                                           data_size=image.pixels.nbytes)
        if status != 201:
            reason = answer.get("error") if isinstance(answer, dict) else None
            error = PixelsRefused if status in REFUSING else WorkerFailed
            raise error(client.name, f"did not take the pixels of tile image {image.key[:12]} (HTTP {status}: "
                                     f"{reason or 'no reason given'})")


async def _encoded(pixels: np.ndarray, encoding: str) -> AsyncIterator[bytes]:
    pieces = wire.encode(pixels, encoding)
    try:
        while (piece := await asyncio.to_thread(_next_bytes, pieces)) is not None:
            yield piece
    finally:
        pieces.close()


def _next_bytes(pieces: Iterator[bytes | memoryview]) -> bytes | None:
    piece = next(pieces, None)
    return None if piece is None else bytes(piece)


def write_png(input_dir: Path, image: InputImage) -> None:
    """Writes the image's PNG into the master's input folder unless it is there already. Runs in a
    thread; the PNG appears whole (written aside, then renamed), so an upload never reads half of one."""
    path = input_dir / image.file
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(image.pixels).save(buffer, format="PNG", compress_level=1)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{id(buffer)}.part")
    try:
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def clear_pngs(input_dir: Path, folder: str) -> None:
    """Removes every file of `folder` in the master's input folder: the tiles' scratch space, emptied
    when an upscale starts and when it ends (a PNG a cancelled share wrote late goes at the next start)."""
    for path in (input_dir / folder).glob("*"):
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            logger.warning("Cannot remove the tile file %s: %s", path, error)
