"""The worker end of the fast result path: the sink node, and the route the master fetches from.

Every instance with this extension, master or worker, registers both, so any of them can serve as a
worker of another master. Nothing here imports torch or ComfyUI at module level: the node only calls
methods of the tensor it is given, and ComfyUI's executing context is imported when the node runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar, Protocol

import numpy as np
from aiohttp import web

from ..shares import PRECISIONS
from ..transport import wire
from ..transport.result_store import ResultStore, make_results_handler
from ..transport.sink import AUDIO_KEY_SUFFIX, DEFAULT_PRECISION, RESULT_UI_KEY, RESULTS_PATH, SINK_CLASS, SINK_DISPLAY_NAME, describe

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wire_array(tensor: Any, precision: str) -> np.ndarray:
    """A torch tensor as the C-order CPU numpy array the wire carries.

    uint8 reproduces PreviewImage's `np.clip(255. * x, 0, 255).astype(np.uint8)` bit for bit (float32
    product, truncation), but on the tensor's own device, so a GPU worker copies a quarter of the bytes.
    """
    if precision == "uint8":
        converted = tensor.float().mul(255.0).clamp(0, 255).byte()
    elif precision == "float16":
        converted = tensor.half()
    elif precision == "float32":
        converted = tensor.float()
    else:
        raise ValueError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    return np.ascontiguousarray(converted.detach().cpu().numpy())


def comfy_prompt_id() -> str:
    """The id of the prompt ComfyUI is executing on this thread (imported late: ComfyUI only)."""
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    if context is None:
        raise RuntimeError(f"{SINK_DISPLAY_NAME} ran outside a ComfyUI prompt")
    return context.prompt_id


class DistributedResultSink:
    """Keeps a share's images (and audio waveform) in memory until the master fetches them.

    Use `sink_node(store)` for the class ComfyUI registers: it binds the store. The node always
    runs (IS_CHANGED is NaN): a cached run would store nothing, and the master would wait in vain.
    """

    store: ClassVar[ResultStore]
    current_prompt_id: ClassVar[Callable[[], str]]

    DESCRIPTION = "Used by the Distributed Collector on workers: holds a share's output for the master to fetch."
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "keep"
    CATEGORY = "distributed/internal"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "precision": (list(PRECISIONS), {"default": DEFAULT_PRECISION}),
                "encoding": (list(wire.ENCODINGS), {"default": "raw"}),
            },
            "optional": {"images": ("IMAGE",), "audio": ("AUDIO",)},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> float:
        return float("nan")

    def keep(self, precision: str, encoding: str, images: Any = None, audio: Any = None, unique_id: str | None = None
             ) -> dict[str, Any]:
        if images is None and audio is None:
            raise ValueError(f"{SINK_DISPLAY_NAME} needs images or audio")
        prompt_id = type(self).current_prompt_id()
        node_id = str(unique_id)
        stored = []
        if images is not None:
            array = wire_array(images, precision)
            self.store.put(prompt_id, node_id, array, encoding)
            stored.append(describe(node_id, "images", array))
        if audio is not None:
            waveform = wire_array(audio["waveform"], "float16" if precision == "float16" else "float32")
            key = node_id + AUDIO_KEY_SUFFIX
            self.store.put(prompt_id, key, waveform, encoding)
            stored.append(describe(key, "audio", waveform, sample_rate=int(audio["sample_rate"])))
        return {"ui": {RESULT_UI_KEY: stored}}


def sink_node(store: ResultStore, current_prompt_id: Callable[[], str] = comfy_prompt_id) -> type[DistributedResultSink]:
    """The node class to register as SINK_CLASS, bound to `store`."""
    return type(SINK_CLASS, (DistributedResultSink,), {"store": store, "current_prompt_id": staticmethod(current_prompt_id)})


def install(server: Any, guard: Callable[[Handler], Handler], store: ResultStore | None = None,
            purge_interval_s: float = PURGE_INTERVAL_S) -> ResultStore:
    """Adds the results route and a periodic purge of unfetched results to a ComfyUI PromptServer.

    The route is guarded against other web origins: a GET consumes the result, so a page the user
    visits must not be able to take (or probe) it. Call before ComfyUI adds its route table.
    """
    store = store if store is not None else ResultStore()
    serve_store(server, RESULTS_PATH, ("GET", "DELETE"), guard(make_results_handler(store)), store, purge_interval_s)
    return store


class Expiring(Protocol):
    def purge_expired(self) -> int: ...


def serve_store(server: Any, path: str, methods: tuple[str, ...], handler: Handler, store: Expiring, purge_interval_s: float) -> None:
    """Serves `handler` on `path` for `methods`, and purges `store` every `purge_interval_s` while
    the server runs: a worker's in-memory store must empty itself when no master comes back."""
    for method in methods:
        server.routes.route(method, path)(handler)
    server.app.cleanup_ctx.append(lambda app: _purging(store, purge_interval_s))


async def _purge_periodically(store: Expiring, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        store.purge_expired()


async def _purging(store: Expiring, interval_s: float) -> AsyncIterator[None]:
    """An aiohttp cleanup context that purges `store` every `interval_s` while the server runs."""
    task = asyncio.ensure_future(_purge_periodically(store, interval_s))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
