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
from typing import Any, TypeVar

from ..jobs.dispatch import Dispatcher
from ..jobs.outcomes import CollectorOutcome, JobProgress, TileOutcome
from ..jobs.routed import QueuedPrompt, RoutedOutcome
from ..jobs.router import PromptRouter
from ..jobs.upscale_plan import TilePlan
from ..shares import ShareOutput, ShareProgress

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


class JobBridge:
    """Everything the nodes ask of the server loop, each call one crossing through `run_on_loop`.

    What comes back is immutable (a CollectorOutcome, a RoutedOutcome, a fresh graph) or a value the
    loop never changes again, so no object the loop changes is ever read on the execution thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, dispatcher: Dispatcher, router: PromptRouter) -> None:
        self._loop = loop
        self._dispatcher = dispatcher
        self._router = router

    # --- collectors ---------------------------------------------------------------------------

    def start_job(self, job_id: str, is_interrupted: Callable[[], bool]) -> bool:
        """Starts the job's remote shares; True when the master must render share 0 itself."""
        return run_on_loop(self._loop, self._dispatcher.start(job_id), is_interrupted)

    def collector_outcome(self, job_id: str, collector_id: str, master_shape: tuple[int, ...] | None, master_part: Any,
                          is_interrupted: Callable[[], bool], on_tick: Callable[[], None]) -> CollectorOutcome:
        """Waits for the workers' shares; the master's own share (`master_part`, of `master_shape`) is done now."""
        waiting = self._dispatcher.collector_outcome(job_id, collector_id, master_shape, master_part)
        return run_on_loop(self._loop, waiting, is_interrupted, on_tick)

    def master_progress(self, job_id: str, progress: ShareProgress) -> None:
        """Where the master's own share stands (from ComfyUI's progress on this thread); never waits."""
        self._loop.call_soon_threadsafe(self._dispatcher.master_progress, job_id, progress)

    def job_progress(self, job_id: str) -> JobProgress | None:
        """The job's latest progress as the loop published it (no crossing: a thread-safe read)."""
        return self._dispatcher.progress.read(job_id)

    def deliver_master_share(self, job_id: str, index: int, collector_id: str, result: ShareOutput, last: bool, token: str,
                             is_interrupted: Callable[[], bool], on_tick: Callable[[], None]) -> CollectorOutcome | None:
        """A share the master rendered itself is in, for one collector; after the last one of an
        expansion, the collector's next outcome (waiting, like `collector_outcome`, for the workers).
        `token` is the one the job's expansion carries."""
        delivery = self._dispatcher.deliver_from_master(job_id, index, collector_id, result, last, token)
        return run_on_loop(self._loop, delivery, is_interrupted, on_tick)

    def release_job(self, job_id: str, collector_id: str) -> None:
        """The collector has its images: the job may drop them."""
        self._loop.call_soon_threadsafe(self._dispatcher.release, job_id, collector_id)

    # --- the Distributed Upscale ------------------------------------------------------------------

    def tile_workers(self, is_interrupted: Callable[[], bool]) -> int:
        """How many enabled workers answer now: with none, the upscale renders every tile here."""
        return run_on_loop(self._loop, self._dispatcher.tile_workers(), is_interrupted)

    def start_tiles(self, plan: TilePlan, prompt_id: str | None, is_interrupted: Callable[[], bool]) -> str:
        """Starts handing the plan's tiles out; returns the job id. `plan` is immutable."""
        return run_on_loop(self._loop, self._dispatcher.start_tiles(plan, prompt_id), is_interrupted)

    def tile_outcome(self, job_id: str, is_interrupted: Callable[[], bool], on_tick: Callable[[], None]) -> TileOutcome:
        """Waits for the upscale's next step: tiles that came in, tiles to render here, or the end."""
        return run_on_loop(self._loop, self._dispatcher.tile_outcome(job_id), is_interrupted, on_tick)

    def deliver_tiles(self, job_id: str, share_index: int, is_interrupted: Callable[[], bool]) -> None:
        """The master rendered and blended a share of tiles itself."""

        async def deliver() -> None:
            self._dispatcher.deliver_tiles(job_id, share_index)

        run_on_loop(self._loop, deliver(), is_interrupted)

    def end_tiles(self, job_id: str) -> None:
        """The upscale node is done with its job (whatever the outcome); never waits."""
        asyncio.run_coroutine_threadsafe(self._dispatcher.end_tiles(job_id), self._loop)

    # --- the distributed queue, when the master does not render its prompts ----------------------

    def hold_routed(self, prompt_id: str, queued: QueuedPrompt, is_interrupted: Callable[[], bool]) -> RoutedOutcome | None:
        """The thread popped `prompt_id`: None when the master renders it itself; otherwise, once a
        worker rendered it, how it ended. Interrupted, it raises Interrupted (see `routed_interrupted`)."""
        return run_on_loop(self._loop, self._router.hold(prompt_id, queued), is_interrupted)

    def routed_interrupted(self, prompt_id: str) -> RoutedOutcome:
        """After `hold_routed` was interrupted: the prompt is stopped on its worker; how it ended."""

        async def stop() -> RoutedOutcome:
            return self._router.interrupted(prompt_id)

        return run_on_loop(self._loop, stop())


_bound: JobBridge | None = None


def bind(bridge: JobBridge) -> None:
    """Gives the nodes the running master's bridge (called once, by the package's __init__)."""
    global _bound
    _bound = bridge


def bound() -> JobBridge | None:
    """The master's bridge; None in a ComfyUI that is not a distributed master (a local worker)."""
    return _bound
