"""Worker side of the fast result path: outputs kept in memory until the master pulls them.

On a worker that runs this extension, the rewritten share ends in our output node, which calls
`ResultStore.put` from ComfyUI's execution thread instead of PNG-encoding a preview. The master
then fetches `GET /distributed/results/{prompt_id}/{node_id}` in the wire format (`wire.py`);
the worker never connects to the master.

A master that crashes or gives up never fetches, so the store bounds itself: entries expire after
a TTL and the oldest are evicted beyond a byte cap, each eviction logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from ..errors import error_body
from . import wire

log = logging.getLogger(__name__)


WIRE_CONTENT_TYPE = "application/x-distributed-wire"
DEFAULT_TTL_S = 600.0
DEFAULT_MAX_BYTES = 8 << 30


@dataclass(frozen=True)
class StoredResult:
    """One output waiting for the master."""

    array: np.ndarray
    encoding_hint: str
    stored_at: float


class ResultStore:
    """Thread-safe map (prompt_id, node_id) -> array, bounded by a TTL and a byte cap.

    Written from the execution thread, read from the server loop; every method takes one lock and
    does no I/O under it. Expired entries are dropped on every access and by `purge_expired`.
    """

    def __init__(
        self, *, ttl_s: float = DEFAULT_TTL_S, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], StoredResult] = OrderedDict()
        self._bytes = 0


    def put(self, prompt_id: str, node_id: str, array: np.ndarray, encoding_hint: str = "raw") -> None:
        """Keeps `array` for the master, evicting the oldest entries beyond the byte cap.

        A single result larger than the cap is still kept (alone): the share must be deliverable.
        Raises ValueError for an array the wire format cannot carry, so the node fails, not the fetch.
        """
        if encoding_hint not in wire.ENCODINGS:
            raise ValueError(f"unknown wire encoding '{encoding_hint}' (known: {', '.join(wire.ENCODINGS)})")
        wire.check_array(array)
        key = (prompt_id, node_id)
        entry = StoredResult(array, encoding_hint, self._clock())
        with self._lock:
            self._purge_expired_locked()
            self._pop_locked(key)
            while self._entries and self._bytes + array.nbytes > self.max_bytes:
                (old_prompt, old_node), old = self._entries.popitem(last=False)
                self._bytes -= old.array.nbytes
                log.warning(
                    "result store over %d bytes: dropped unfetched result of prompt %s node %s (%d bytes)",
                    self.max_bytes, old_prompt, old_node, old.array.nbytes,
                )
            if array.nbytes > self.max_bytes:
                log.warning("result of prompt %s node %s (%d bytes) alone exceeds the store cap of %d bytes",
                            prompt_id, node_id, array.nbytes, self.max_bytes)
            self._entries[key] = entry
            self._bytes += array.nbytes
        log.debug("stored result of prompt %s node %s: %s %s", prompt_id, node_id, array.dtype, array.shape)

    def get(self, prompt_id: str, node_id: str) -> StoredResult | None:
        with self._lock:
            self._purge_expired_locked()
            return self._entries.get((prompt_id, node_id))

    def delete(self, prompt_id: str, node_id: str, only: StoredResult | None = None) -> bool:
        """Drops an entry; with `only`, drops it only if it is still that entry (not a newer put)."""
        with self._lock:
            current = self._entries.get((prompt_id, node_id))
            if current is None or (only is not None and current is not only):
                return False
            self._pop_locked((prompt_id, node_id))
            return True

    def purge_expired(self) -> int:
        """Drops entries older than the TTL; returns how many. For a periodic task on idle workers."""
        with self._lock:
            return self._purge_expired_locked()

    def _purge_expired_locked(self) -> int:
        deadline = self._clock() - self.ttl_s
        expired = [key for key, entry in self._entries.items() if entry.stored_at <= deadline]
        for prompt_id, node_id in expired:
            self._pop_locked((prompt_id, node_id))
            log.warning("result of prompt %s node %s expired unfetched after %.0f s", prompt_id, node_id, self.ttl_s)
        return len(expired)

    def _pop_locked(self, key: tuple[str, str]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.array.nbytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_results_handler(store: ResultStore, *, chunk_size: int = wire.DEFAULT_CHUNK_SIZE) -> Handler:
    """Handler for GET/HEAD/DELETE on RESULTS_PATH.

    GET streams the entry (chunked) in `?encoding=` or the entry's hint and drops it once all of it
    was written; a client that disconnects midway leaves it for a retry until the TTL. Codec work
    (one block per step) runs in a thread, one step ahead of the socket, so the loop only writes.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        node_id = request.match_info["node_id"]
        if request.method == "DELETE":
            if not store.delete(prompt_id, node_id):
                return _missing(prompt_id, node_id)
            return web.json_response({"deleted": {"prompt_id": prompt_id, "node_id": node_id}})
        entry = store.get(prompt_id, node_id)
        if entry is None:
            return _missing(prompt_id, node_id)
        encoding = request.query.get("encoding", entry.encoding_hint)
        if encoding not in wire.ENCODINGS:
            return web.json_response(error_body(f"unknown encoding '{encoding}' (known: {', '.join(wire.ENCODINGS)})", "encoding"),
                                     status=400)
        response = web.StreamResponse(
            headers={
                "Content-Type": WIRE_CONTENT_TYPE,
                "X-Distributed-Encoding": encoding,
                "X-Distributed-Dtype": entry.array.dtype.name,
                "X-Distributed-Shape": ",".join(str(n) for n in entry.array.shape),
                "Cache-Control": "no-store",
            }
        )
        if request.method == "HEAD":
            return response
        response.enable_chunked_encoding()
        await response.prepare(request)
        await _stream(response, wire.encode(entry.array, encoding, chunk_size=chunk_size))
        await response.write_eof()
        store.delete(prompt_id, node_id, only=entry)
        log.debug("sent result of prompt %s node %s as %s", prompt_id, node_id, encoding)
        return response

    return handle


async def _stream(response: web.StreamResponse, pieces: Generator[bytes | memoryview, None, None]) -> None:
    pending = asyncio.ensure_future(asyncio.to_thread(next, pieces, None))
    try:
        while (piece := await pending) is not None:
            pending = asyncio.ensure_future(asyncio.to_thread(next, pieces, None))
            await response.write(piece)
    finally:
        # After a disconnect one step may still run in its thread; close the generator once it ends.
        if pending.done():
            pieces.close()
        else:
            pending.add_done_callback(lambda _: pieces.close())


def _missing(prompt_id: str, node_id: str) -> web.Response:
    return web.json_response(
        error_body(f"no result for prompt '{prompt_id}' node '{node_id}' (never stored, already fetched or expired)"),
        status=404,
    )
