"""The one crossing from ComfyUI's execution thread to the server's event loop.

Nodes run on ComfyUI's prompt worker thread, each prompt inside its own short-lived event loop; the
sessions, sockets and tasks of this extension live on the server loop. A node hands a coroutine to
that loop and waits for it in short slices, so an interrupt from the UI is noticed within a tenth of a
second and cancels the remote work instead of waiting it out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.1


class Interrupted(Exception):
    """Raised in the calling thread when `is_interrupted` turned true while waiting."""


def run_on_loop(
    loop: asyncio.AbstractEventLoop,
    coroutine: Awaitable[T],
    is_interrupted: Callable[[], bool] = lambda: False,
    on_tick: Callable[[], None] | None = None,
) -> T:
    """Runs `coroutine` on `loop` from another thread and returns its result.

    Every POLL_SECONDS it calls `on_tick` (progress reporting) and checks `is_interrupted`; when that
    turns true the coroutine is cancelled (it cleans up remote work) and `Interrupted` is raised.
    """
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)  # type: ignore[arg-type]
    while True:
        done, _ = concurrent.futures.wait([future], timeout=POLL_SECONDS)
        if done:
            return future.result()
        if on_tick is not None:
            on_tick()
        if is_interrupted():
            future.cancel()
            raise Interrupted()
