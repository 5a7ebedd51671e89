"""The distributed queue: prompts without a collector are routed whole to the first free participant.

SwarmUI's multi-backend behaviour, with the master's queue and history kept as the single view: the
prompt the user queued is replaced on the master by one proxy node (`DistributedQueuedPrompt`) that
stands for it. Participants are used in the order they are listed, the master first: a prompt goes
to the master when it is free, to the first listed worker when two are queued at once, and so on; a
prompt waiting on the master goes to whichever participant frees up first. The master "frees up"
when its execution thread reaches the proxy: the proxy then runs the original graph in place. A
worker's images come back into the proxy, which saves them as the prompt's own output nodes would.

Only prompts whose outputs are images (SaveImage, PreviewImage) are distributed this way; any other
prompt runs on the master as stock ComfyUI would.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import graph
from ..config.models import WorkerConfig
from ..config.registry import Registry
from ..errors import JobFailed, WorkerUnavailable
from ..shares import ShareProgress, ShareWork
from .contracts import ShareRunning, WorkerAvailability
from .job import MASTER

logger = logging.getLogger(__name__)

PROXY_CLASS = "DistributedQueuedPrompt"
PROXY_NODE_ID = "distributed_queue"
RUN_INPUT = "run_id"
IMAGE_OUTPUTS = ("SaveImage", "PreviewImage")
TICK_SECONDS = 0.25
KEEP_FINISHED_RUNS = 100

MasterQueue = Callable[[], tuple[list[str], list[str]]]
"""(running prompt ids, pending prompt ids in execution order) of the master's ComfyUI queue."""


class RouteState(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RoutedResult:
    """What a worker made of a routed prompt, handed to the proxy node on the execution thread."""

    prompt: graph.Prompt
    """A copy of the user's prompt (for the saved images' metadata)."""
    outputs: tuple[str, ...]
    images: dict[str, np.ndarray]
    participant_name: str


@dataclass
class RoutedPrompt:
    """One whole prompt waiting for, or running on, a participant. Lives on the server loop."""

    run_id: str
    prompt: graph.Prompt
    prompt_id: str
    outputs: tuple[str, ...]
    participant: str | None = None
    participant_name: str | None = None
    state: RouteState = RouteState.WAITING
    error: str | None = None
    attempts: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    progress: ShareProgress | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    seen_on_master: bool = False
    created_at: float = field(default_factory=time.time)

    def worker_work(self) -> ShareWork:
        """The prompt as a worker gets it: outputs become previews, so its output folder stays clean."""
        prompt = graph.subgraph(self.prompt, self.prompt)
        for node_id in self.outputs:
            prompt[node_id] = {"class_type": "PreviewImage", "inputs": {"images": prompt[node_id]["inputs"]["images"]}}
        return ShareWork(prompt, self.outputs)

    def result(self) -> RoutedResult:
        return RoutedResult(graph.subgraph(self.prompt, self.prompt), self.outputs, dict(self.images), self.participant_name or "")


def image_outputs(prompt: graph.Prompt, is_output_node: Callable[[str], bool]) -> tuple[str, ...] | None:
    """The prompt's output nodes if all of them save or preview images, else None."""
    outputs = [node_id for node_id, node in prompt.items() if isinstance(node, dict) and is_output_node(str(node.get("class_type")))]
    if not outputs or any(prompt[node_id]["class_type"] not in IMAGE_OUTPUTS for node_id in outputs):
        return None
    if any(not graph.is_link(prompt[node_id].get("inputs", {}).get("images")) for node_id in outputs):
        return None
    return tuple(outputs)


class PromptRouter:
    """Holds whole prompts on the master and hands each to the first free listed participant."""

    def __init__(self, registry: Registry, health: WorkerAvailability, runner: ShareRunning,
                 master_queue: MasterQueue, master_prompt_ended: Callable[[str], bool],
                 pools_can_grow: Callable[[], bool] = lambda: False) -> None:
        self._registry = registry
        self._pools_can_grow = pools_can_grow
        """Whether an elastic pool may still start a worker: a prompt nobody can run now then waits for it."""
        self._waiting_since: float | None = None
        self._health = health
        self._runner = runner
        self._master_queue = master_queue
        self._master_prompt_ended = master_prompt_ended
        self._runs: dict[str, RoutedPrompt] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()

    # --- the on-prompt hook ---------------------------------------------------------------

    def submit(self, prompt: graph.Prompt, prompt_id: str, outputs: tuple[str, ...]) -> graph.Prompt:
        """Registers a whole prompt; returns the proxy prompt the master queues in its place."""
        run = RoutedPrompt(uuid.uuid4().hex, graph.subgraph(prompt, prompt), prompt_id, outputs)
        self._runs[run.run_id] = run
        self._forget_old_runs()
        self._wake.set()
        return {PROXY_NODE_ID: {"class_type": PROXY_CLASS, "inputs": {RUN_INPUT: run.run_id}}}

    def runs(self) -> list[RoutedPrompt]:
        return sorted(self._runs.values(), key=lambda run: run.created_at, reverse=True)

    def waiting_since(self) -> float | None:
        """Since when (time.monotonic) a prompt has waited with every participant busy; None if none waits."""
        return self._waiting_since

    def holds_share(self, worker_id: str) -> bool:
        """Whether the worker runs a whole prompt of the distributed queue now."""
        return any(run.state == RouteState.RUNNING and run.participant == worker_id for run in self._runs.values())

    # --- the proxy node, via the bridge -----------------------------------------------------

    def claim_for_master(self, run_id: str) -> graph.Prompt | None:
        """The master reached the proxy: it takes the run if nobody has; returns the graph to expand."""
        run = self._require(run_id)
        if run.state != RouteState.WAITING or not self._registry.snapshot().master.participate:
            return None
        run.state, run.participant, run.participant_name = RouteState.RUNNING, MASTER, MASTER
        logger.info("Queued prompt %s runs on the master", run.prompt_id)
        return graph.with_prefix(run.prompt, f"{PROXY_NODE_ID}.")

    def release(self, run_id: str) -> None:
        """The proxy saved the images: drop them."""
        run = self._runs.get(run_id)
        if run is not None:
            run.images = {}

    async def result(self, run_id: str) -> RoutedResult | None:
        """Waits for a worker's result; None when the run fell back to the master (claim it then)."""
        run = self._require(run_id)
        try:
            while not run.finished.is_set():
                if run.state == RouteState.WAITING and self._registry.snapshot().master.participate:
                    return None
                self._wake.set()
                try:
                    await asyncio.wait_for(run.finished.wait(), TICK_SECONDS)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            await self.cancel(run, "interrupted on the master")
            raise
        if run.state != RouteState.DONE:
            raise JobFailed(run.error or "the queued prompt failed")
        return run.result()

    async def cancel(self, run: RoutedPrompt, reason: str) -> None:
        task = self._tasks.pop(run.run_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not run.finished.is_set():
            run.error = reason
            self._finish(run, RouteState.CANCELLED)

    # --- the loop -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Hands waiting runs to free workers, in the master's queue order, until cancelled."""
        while True:
            self._wake.clear()
            await self._assign()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _assign(self) -> None:
        running, pending = self._master_queue()
        order = {prompt_id: position for position, prompt_id in enumerate(running + pending)}
        for run in list(self._runs.values()):
            if run.prompt_id in order:
                run.seen_on_master = True
            elif run.seen_on_master and not run.finished.is_set():
                if self._master_prompt_ended(run.prompt_id):
                    if run.participant == MASTER:
                        self._finish(run, RouteState.DONE)  # the master ran the graph in place
                    else:
                        await self.cancel(run, "the master's prompt ended first")  # interrupted or failed there
                else:
                    await self.cancel(run, "removed from the master's queue")  # the user cancelled it there
        waiting = sorted((r for r in self._runs.values() if r.state == RouteState.WAITING and r.seen_on_master),
                         key=lambda r: order.get(r.prompt_id, len(order)))
        config = self._registry.snapshot()
        busy = {r.participant for r in self._runs.values() if r.state == RouteState.RUNNING}
        left_waiting = False
        for run in waiting:
            if config.master.participate and self._master_takes(run, running, pending):
                continue
            worker = next((w for w in config.workers if self._is_free(w, busy) and w.id not in run.excluded), None)
            if worker is None:
                if not self._could_ever_run(run, config.master.participate):
                    run.error = "no participant could run it: " + "; ".join(run.attempts or ["no worker is online"])
                    self._finish(run, RouteState.FAILED)
                left_waiting = left_waiting or not run.finished.is_set()
                continue
            busy.add(worker.id)
            self._start(run, worker)
        self._waiting_since = (self._waiting_since or time.monotonic()) if left_waiting else None

    def _master_takes(self, run: RoutedPrompt, running: list[str], pending: list[str]) -> bool:
        """The master's thread is at this prompt's proxy, or is idle and reaches it next."""
        if running:
            return running == [run.prompt_id]
        return bool(pending) and pending[0] == run.prompt_id

    def _is_free(self, worker: WorkerConfig, busy: set[str | None]) -> bool:
        return worker.enabled and worker.id not in busy and self._health.status(worker.id).state.answers

    def _could_ever_run(self, run: RoutedPrompt, master_participates: bool) -> bool:
        if master_participates or self._pools_can_grow():
            return True
        return any(w.enabled and w.id not in run.excluded for w in self._registry.snapshot().workers)

    def _start(self, run: RoutedPrompt, worker: WorkerConfig) -> None:
        run.state, run.participant, run.participant_name = RouteState.RUNNING, worker.id, worker.name
        logger.info("Queued prompt %s runs on %s", run.prompt_id, worker.name)

        def on_progress(progress: ShareProgress) -> None:
            run.progress = progress

        task = asyncio.ensure_future(self._runner.run(run.worker_work(), worker, 0, on_progress))
        self._tasks[run.run_id] = task
        task.add_done_callback(lambda done, run=run, worker=worker: self._settle(run, worker, done))

    def _settle(self, run: RoutedPrompt, worker: WorkerConfig, task: asyncio.Task) -> None:
        self._tasks.pop(run.run_id, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            run.images = task.result()
            self._finish(run, RouteState.DONE)
        else:
            cause = str(error) if isinstance(error, WorkerUnavailable) else f"worker '{worker.name}': unexpected error: {error!r}"
            logger.warning("Queued prompt %s failed on %s (%s); it waits for another participant", run.prompt_id, worker.name, cause)
            run.attempts.append(cause)
            run.excluded.add(worker.id)
            run.state, run.participant, run.participant_name = RouteState.WAITING, None, None
        self._wake.set()

    def _finish(self, run: RoutedPrompt, state: RouteState) -> None:
        run.state = state
        run.finished.set()
        self._wake.set()

    def _require(self, run_id: str) -> RoutedPrompt:
        run = self._runs.get(run_id)
        if run is None:
            raise JobFailed(f"queued prompt {run_id} is unknown (was the master restarted?)")
        return run

    def _forget_old_runs(self) -> None:
        finished = [run for run in self.runs() if run.finished.is_set()]
        for run in finished[KEEP_FINISHED_RUNS:]:
            self._runs.pop(run.run_id, None)
        for run in finished:
            if run.images and self._master_prompt_ended(run.prompt_id):
                run.images = {}  # its proxy will never save them (the master's prompt failed first)
