"""The worker end of the fast input path: the node that loads an image a master sent, and its route.

Every instance with this extension registers both, so any of them can render upscale tiles for a
master without a PNG: the master PUTs the pixels (transport/input_images.py), the store keeps them
(transport/input_store.py), and this node hands them to the share's VAEEncode as a LoadImage would:
float32 [1, H, W, 3], the 8-bit values divided by 255.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import numpy as np
import torch
from aiohttp import web

from ..transport.input_images import INPUT_CLASS, INPUT_DISPLAY_NAME, INPUTS_PATH
from ..transport.input_store import InputStore, make_inputs_handler
from .result_sink import serve_store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PURGE_INTERVAL_S = 60.0


class DistributedImageInput:
    """Loads an image a master sent to this instance. Use `input_node(store)` for the class ComfyUI
    registers: it binds the store."""

    store: ClassVar[InputStore]

    DESCRIPTION = "Used by Distributed Upscale on workers: the tile a master sent, without a PNG."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"
    CATEGORY = "distributed/internal"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"key": ("STRING", {"default": ""})}}

    def load(self, key: str) -> tuple[torch.Tensor]:
        pixels = self.store.get(key)
        if pixels is None:
            raise ValueError(f"{INPUT_DISPLAY_NAME}: image {key[:16]}… is not on this worker (never sent, or dropped "
                             "to stay within its memory cap); the master sends it again with the next share")
        return (torch.from_numpy(pixels.astype(np.float32)).div_(255.0)[None],)


def input_node(store: InputStore) -> type[DistributedImageInput]:
    """The node class to register as INPUT_CLASS, bound to `store`."""
    return type(INPUT_CLASS, (DistributedImageInput,), {"store": store})


def install(server: Any, guard: Callable[[Handler], Handler], store: InputStore | None = None) -> InputStore:
    """Adds the inputs route and a periodic purge of unused images to a ComfyUI PromptServer.

    The route is guarded like the results route: no other web origin may fill the worker's memory.
    Call before ComfyUI adds its route table.
    """
    store = store if store is not None else InputStore()
    serve_store(server, INPUTS_PATH, ("HEAD", "PUT"), guard(make_inputs_handler(store)), store, PURGE_INTERVAL_S)
    return store
