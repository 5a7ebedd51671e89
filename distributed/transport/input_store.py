"""Worker side of the fast input path: images a master sent, kept in memory under their SHA-256.

A master PUTs an image (an upscale tile) to `/distributed/inputs/{key}` in the wire format before it
queues the share that loads it, and asks with HEAD whether the worker still holds it. The worker's
input node (comfy/image_input.py) reads it from here on ComfyUI's execution thread.

Nothing that arrives is trusted. The key must be a SHA-256 and the pixels must hash to it, so nobody
can put other pixels under a key another share will load; the body is a uint8 [H, W, 3] array of at
most MAX_INPUT_BYTES. The store keeps at most `max_bytes`, dropping the least recently used image
first, and forgets an image unused for `ttl_s`: a master that gives up never has to clean up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from ..errors import error_body
from ..workers.timeouts import transfer_deadline
from . import wire
from .input_images import MAX_INPUT_BYTES, is_key, key_of

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 900.0
DEFAULT_MAX_BYTES = 2 << 30
RECEIVING_AT_ONCE = 2
MAX_BODY_BYTES = MAX_INPUT_BYTES + (1 << 20)
"""The largest image with its framing (a header, a few bytes a block, a trailer)."""
BUSY_WAIT_S = 30.0


@dataclass
class _Kept:
    pixels: np.ndarray
    used_at: float


class InputStore:
    """Thread-safe key -> read-only uint8 image, bounded by bytes and by time since last use.

    Written from the server loop, read from the execution thread; every method takes one lock and
    does no I/O under it.
    """

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._images: OrderedDict[str, _Kept] = OrderedDict()
        self._bytes = 0

    def put(self, key: str, pixels: np.ndarray) -> None:
        """Keeps `pixels` (already checked against `key`), dropping the least recently used beyond the cap."""
        pixels.flags.writeable = False
        with self._lock:
            self._purge_locked()
            self._pop_locked(key)
            while self._images and self._bytes + pixels.nbytes > self.max_bytes:
                old_key, old = self._images.popitem(last=False)
                self._bytes -= old.pixels.nbytes
                log.info("input store over %d bytes: dropped image %s (%d bytes)", self.max_bytes, old_key, old.pixels.nbytes)
            self._images[key] = _Kept(pixels, self._clock())
            self._bytes += pixels.nbytes

    def get(self, key: str) -> np.ndarray | None:
        """The image, or None; a hit counts as a use."""
        with self._lock:
            self._purge_locked()
            kept = self._images.get(key)
            if kept is None:
                return None
            kept.used_at = self._clock()
            self._images.move_to_end(key)
            return kept.pixels

    def purge_expired(self) -> int:
        """Drops images unused for the TTL; returns how many. For a periodic task on idle workers."""
        with self._lock:
            return self._purge_locked()

    def _purge_locked(self) -> int:
        deadline = self._clock() - self.ttl_s
        expired = [key for key, kept in self._images.items() if kept.used_at <= deadline]
        for key in expired:
            self._pop_locked(key)
        return len(expired)

    def _pop_locked(self, key: str) -> None:
        old = self._images.pop(key, None)
        if old is not None:
            self._bytes -= old.pixels.nbytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_inputs_handler(store: InputStore, receiving_at_once: int = RECEIVING_AT_ONCE, busy_wait_s: float = BUSY_WAIT_S) -> Handler:
    """Handler for HEAD and PUT on INPUTS_PATH: HEAD answers 200 when the image is held, 404 if not;
    PUT decodes the body off the loop, checks it against the key, and keeps it (201).

    At most `receiving_at_once` bodies are decoded together, each within the deadline its announced
    size allows (the largest image's when none is announced), so senders that trickle bytes cannot make the worker hold many half-received
    images; a body that finds every slot taken for `busy_wait_s` is answered 503 (the master then
    fails the share on this worker, naming it, and the tile runs elsewhere).
    """
    receiving = asyncio.Semaphore(receiving_at_once)

    async def handle(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if not is_key(key):
            return web.json_response(error_body("key: must be the image's SHA-256, 64 lowercase hex digits", "key"), status=400)
        if request.method == "HEAD":
            return web.Response(status=200 if store.get(key) is not None else 404)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return web.json_response(error_body(f"body: more than {MAX_INPUT_BYTES >> 20} MiB", "body"), status=413)
        try:
            async with asyncio.timeout(busy_wait_s):
                await receiving.acquire()
        except TimeoutError:
            return web.json_response(error_body("body: busy receiving other images; try again", "body"), status=503)
        decoder = wire.Decoder(f"the image sent as {key}", expected_dtype="uint8", expected_shape=(None, None, 3),
                               max_bytes=MAX_INPUT_BYTES)
        try:
            async with asyncio.timeout(transfer_deadline(request.content_length or MAX_BODY_BYTES)):
                pixels = await wire.read_stream(request.content, decoder)
                matches = await asyncio.to_thread(key_of, pixels) == key
        except wire.WireError as error:
            return web.json_response(error_body(f"body: {error.cause}", "body"), status=400)
        except TimeoutError:
            return web.json_response(error_body("body: not received in time", "body"), status=408)
        finally:
            receiving.release()
        if not matches:
            return web.json_response(error_body("body: the pixels do not hash to the key they were sent under", "body"), status=400)
        store.put(key, pixels)
        return web.json_response({"key": key, "shape": list(pixels.shape)}, status=201)

    return handle
