"""The distributed queue: prompts without a collector run whole on the first free participant.

SwarmUI's multi-backend behaviour, with ComfyUI's own queue and history as the single view. The
on-prompt hook leaves the user's prompt exactly as sent and registers it here (`register`); ComfyUI
validates and queues it as usual. On the server loop the router reads the master's pending prompts
in execution order and hands each registered one to the first free participant, in the order they
are listed, the master first:

- The master takes a prompt when it is free: its execution thread pops the first pending prompt at
  once, and the router leaves that one to it.
- A free worker takes the next: the router moves the prompt from ComfyUI's pending list into its
  running list, as ComfyUI's thread does when it pops one (`ComfyQueue.take`), so `/queue` shows it
  running for as long as the worker renders it. Its images are then saved into the master's folders
  as the prompt's own SaveImage and PreviewImage nodes would save them, and the prompt ends in the
  master's history (`ComfyQueue.task_done`) with its own node ids and real status messages; the
  history's `meta` names the worker.
- A master that does not render (participate off) still pops prompts: its thread waits (`hold`)
  while a worker renders the prompt, then reports it as its executor would.

While a worker renders a prompt, the client that queued it gets what ComfyUI would send: execution
start, `executing` and `progress` as the worker's nodes change, `executed` with the master's files,
execution success. A worker that fails gives the prompt back to the master's queue, at its old
place, where the master or another worker takes it; the failed worker is not asked again for that
prompt. When no participant is left, the prompt ends in error naming each worker and why.

Only prompts whose outputs are all images (SaveImage, PreviewImage) are routed; any other prompt
runs on the master as stock ComfyUI would.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ..config.models import MasterConfig, RegistryFile, WorkerConfig
from ..config.registry import Registry
from ..errors import WorkerUnavailable
from ..shares import ShareProgress
from .contracts import ShareRunning, WorkerAvailability
from .job import MASTER
from .routed import FINISHED, QueuedPrompt, RoutedOutcome, RoutedPrompt, RouteState, now_ms

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
KEEP_FINISHED_RUNS = 100
NEVER_QUEUED_SECONDS = 60.0
"""A registered prompt not in the master's queue after this long was refused by ComfyUI (invalid)."""


class ComfyQueue(Protocol):
    """The master's ComfyUI prompt queue and server, as the router needs them (comfy/prompt_queue.py)."""

    def view(self) -> tuple[list[str], list[str]]:
        """(running prompt ids, pending prompt ids in execution order)."""
        ...

    def take(self, prompt_id: str) -> QueuedPrompt | None:
        """Moves a pending prompt into the running list, as ComfyUI's thread does when it pops one;
        None when it is not pending (any more)."""
        ...

    def give_back(self, prompt_id: str) -> None:
        """Moves a taken prompt from the running list back into the pending list, at its old place."""
        ...

    def task_done(self, prompt_id: str, outcome: RoutedOutcome) -> None:
        """Ends a taken prompt: its history entry, as ComfyUI's thread writes one after executing."""
        ...

    def succeeded(self, prompt_id: str) -> bool | None:
        """Whether the prompt's history entry says success; None when there is none."""
        ...

    def send(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        """One event to the client that queued a prompt; None sends it to every client."""
        ...

    async def save(self, node_id: str, images: np.ndarray, queued: QueuedPrompt) -> list[dict[str, str]]:
        """Saves one output node's images as that node would on the master; returns its file references."""
        ...


class PromptRouter:
    """Hands the master's queued whole prompts to the first free listed participant."""

    def __init__(self, registry: Registry, health: WorkerAvailability, runner: ShareRunning, queue: ComfyQueue,
                 pools_can_grow: Callable[[], bool] = lambda: False) -> None:
        self._registry = registry
        self._pools_can_grow = pools_can_grow
        """Whether an elastic pool may still start a worker: a prompt nobody can run now then waits for it."""
        self._waiting_since: float | None = None
        self._health = health
        self._runner = runner
        self._queue = queue
        self._runs: dict[str, RoutedPrompt] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()

    # --- the on-prompt hook and the API -------------------------------------------------------

    def register(self, prompt_id: str, outputs: tuple[str, ...]) -> None:
        """A prompt about to be queued on the master, whose image outputs are `outputs`, is routed."""
        self._runs[prompt_id] = RoutedPrompt(prompt_id, outputs)
        self._forget_old_runs()
        self._wake.set()

    def knows_prompt(self, prompt_id: str) -> bool:
        return prompt_id in self._runs

    def runs(self) -> list[RoutedPrompt]:
        """Newest first."""
        return sorted(self._runs.values(), key=lambda run: run.registered_at, reverse=True)

    def run(self, prompt_id: str) -> RoutedPrompt | None:
        return self._runs.get(prompt_id)

    def waiting_since(self) -> float | None:
        """Since when (time.monotonic) a prompt has waited with every participant busy; None if none waits."""
        return self._waiting_since

    def holds_share(self, worker_id: str) -> bool:
        """Whether the worker runs a whole prompt of the distributed queue now."""
        return any(run.state == RouteState.RUNNING and run.participant == worker_id for run in self._runs.values())

    # --- ComfyUI's execution thread, through the bridge ----------------------------------------

    async def hold(self, prompt_id: str, queued: QueuedPrompt) -> RoutedOutcome | None:
        """ComfyUI's execution thread popped `prompt_id`. None: the master renders it (it is not routed,
        or the master takes part). Otherwise waits while a worker renders it and returns how it ended,
        for the thread to report as its executor would. Cancelled (the thread was interrupted), it
        stops the prompt on its worker."""
        run = self._runs.get(prompt_id)
        if run is None or run.state != RouteState.WAITING:
            return run.outcome if run is not None else None
        run.queued, run.seen = queued, True
        if self._master().participate:
            self._on_master(run)
            return None
        run.held = True
        self._begin(run)
        self._wake.set()
        try:
            while not run.finished.is_set():
                if run.state == RouteState.WAITING and self._master().participate:
                    run.held = False
                    self._on_master(run)
                    return None
                await _nap(run.finished)
        except asyncio.CancelledError:
            self._interrupt(run)
            raise
        return run.outcome

    def interrupted(self, prompt_id: str) -> RoutedOutcome:
        """The thread holding `prompt_id` was interrupted: the prompt is stopped; how it ended."""
        run = self._runs.get(prompt_id)
        if run is None:
            return RoutedOutcome(False, ())
        self._interrupt(run)
        return run.outcome or RoutedOutcome(False, tuple(run.messages))

    # --- POST /interrupt ---------------------------------------------------------------------------

    def interrupt(self, prompt_id: str) -> bool:
        """Stops a prompt the router gave a worker; False when no worker runs it for the router (then
        it is ComfyUI's to interrupt, if its thread runs it)."""
        run = self._runs.get(prompt_id)
        if run is None or not run.taken or run.state in FINISHED:
            return False
        logger.info("Queued prompt %s: interrupted while %s renders it", prompt_id, run.participant_name)
        self._interrupt(run)
        return True

    def interrupt_all(self) -> None:
        """A global interrupt (no prompt id) on a master that only orchestrates: what runs for it runs
        on workers, so every prompt the router gave a worker stops. A master that takes part keeps
        ComfyUI's meaning: the global interrupt stops what its own thread runs, and nothing else."""
        if self._master().participate:
            return
        for run in list(self._runs.values()):
            if run.taken and run.state not in FINISHED:
                logger.info("Queued prompt %s: interrupted (global) while %s renders it", run.prompt_id, run.participant_name)
                self._interrupt(run)

    # --- the loop -------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Hands waiting prompts to free participants, in the master's queue order, until cancelled."""
        while True:
            self._wake.clear()
            self._assign()
            await _nap(self._wake)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _assign(self) -> None:
        running, pending = self._queue.view()
        self._follow(running, pending)
        config = self._registry.snapshot()
        taken = {run.prompt_id for run in self._runs.values() if run.taken}
        # An idle execution thread pops the first waiting prompt at once, as in plain ComfyUI; it holds
        # it while a worker renders it when the master only orchestrates. Leaving that prompt to the
        # thread keeps one actor per prompt: a later prompt stays in the waiting list, deletable.
        thread_idle = all(prompt_id in taken for prompt_id in running)
        order = {prompt_id: position for position, prompt_id in enumerate(pending)}
        waiting = [run for run in self._runs.values() if run.state == RouteState.WAITING]
        held = [run for run in waiting if run.held]
        queued = sorted((run for run in waiting if not run.held and run.prompt_id in order), key=lambda run: order[run.prompt_id])
        busy = {run.participant for run in self._runs.values() if run.state == RouteState.RUNNING}
        left_waiting = False
        for run in held + queued:
            if not run.held and thread_idle and order[run.prompt_id] == 0:
                continue  # the master's thread pops it at once
            worker = next((w for w in config.workers if self._is_free(w, busy) and w.id not in run.excluded), None)
            if worker is None:
                if not self._could_ever_run(run, config):
                    self._give_up(run)
                left_waiting = left_waiting or run.state == RouteState.WAITING
                continue
            if not run.held and not self._take(run):
                continue  # the master's thread popped it meanwhile
            busy.add(worker.id)
            self._start(run, worker)
        self._waiting_since = (self._waiting_since or time.monotonic()) if left_waiting else None

    def _follow(self, running: list[str], pending: list[str]) -> None:
        """Notes which registered prompts are in the master's queue, and ends those that left it."""
        present = set(running) | set(pending)
        for run in list(self._runs.values()):
            if run.state in FINISHED or run.taken or run.held:
                continue
            if run.prompt_id in present:
                run.seen = True
            elif run.state == RouteState.RUNNING:  # the master rendered it and its thread ended it
                succeeded = self._queue.succeeded(run.prompt_id)
                run.error = "failed on the master (see its history)" if succeeded is False else None
                self._finish(run, RouteState.FAILED if succeeded is False else RouteState.DONE, None)
            elif run.seen:
                run.error = "deleted from the master's queue"
                logger.info("Queued prompt %s was deleted from the master's queue", run.prompt_id)
                self._finish(run, RouteState.CANCELLED, None)
            elif time.monotonic() - run.registered_at > NEVER_QUEUED_SECONDS:
                del self._runs[run.prompt_id]  # ComfyUI refused the prompt: it never was queued

    def _take(self, run: RoutedPrompt) -> bool:
        queued = self._queue.take(run.prompt_id)
        if queued is None:
            return False
        run.queued, run.taken, run.seen = queued, True, True
        return True

    def _master(self) -> MasterConfig:
        return self._registry.snapshot().master

    def _is_free(self, worker: WorkerConfig, busy: set[str | None]) -> bool:
        return worker.enabled and worker.id not in busy and self._health.status(worker.id).state.answers

    def _could_ever_run(self, run: RoutedPrompt, config: RegistryFile) -> bool:
        return config.master.participate or self._pools_can_grow() or any(w.enabled and w.id not in run.excluded for w in config.workers)

    def _on_master(self, run: RoutedPrompt) -> None:
        run.state, run.participant, run.participant_name = RouteState.RUNNING, MASTER, MASTER
        run.started_at = run.started_at or now_ms()
        logger.info("Queued prompt %s runs on the master", run.prompt_id)

    def _begin(self, run: RoutedPrompt) -> None:
        """The prompt left the master's pending list: the client hears that it started, once."""
        if run.started_at is not None:
            return
        run.started_at = now_ms()
        self._send(run, "execution_start", run.record("execution_start", {"prompt_id": run.prompt_id}))
        # Nothing of it comes from the master's cache: its executor never saw it.
        self._send(run, "execution_cached", run.record("execution_cached", {"nodes": [], "prompt_id": run.prompt_id}))

    def _start(self, run: RoutedPrompt, worker: WorkerConfig) -> None:
        run.state, run.participant, run.participant_name = RouteState.RUNNING, worker.id, worker.name
        run.node, run.step, run.executed, run.progress = None, (0, 1), [], None
        logger.info("Queued prompt %s runs on %s", run.prompt_id, worker.name)
        self._begin(run)
        task = asyncio.ensure_future(self._render(run, worker))
        self._tasks[run.prompt_id] = task
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task) -> None:
        """A run's task ended; the prompt may already be on another worker, under a newer task."""
        for prompt_id, current in list(self._tasks.items()):
            if current is task:
                del self._tasks[prompt_id]

    async def _render(self, run: RoutedPrompt, worker: WorkerConfig) -> None:
        def on_progress(progress: ShareProgress) -> None:
            if run.participant == worker.id and run.state == RouteState.RUNNING:
                self._relay(run, progress)

        work = run.worker_work()
        try:
            images = (await self._runner.run(work, worker, 0, on_progress)).outputs
        except asyncio.CancelledError:
            raise
        except Exception as error:  # whatever a worker did, the prompt goes on elsewhere
            self._worker_failed(run, worker, error)
            return
        try:
            outputs, meta = {}, {}
            for node_id in work.collector_ids:
                files = await self._queue.save(node_id, images[node_id], run.queued)  # type: ignore[arg-type]
                outputs[node_id] = {"images": files}
                meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id,
                                 "distributed_worker": worker.name}
                self._send(run, "executed", {"node": node_id, "display_node": node_id, "output": outputs[node_id],
                                             "prompt_id": run.prompt_id})
        except Exception as error:  # a prompt whose images cannot be saved fails; it never hangs
            logger.exception("Queued prompt %s: saving what %s rendered failed", run.prompt_id, worker.name)
            self._fail(run, f"{worker.name} rendered it, but saving its images on the master failed: {error}")
            return
        run.executed.extend(node_id for node_id in work.collector_ids if node_id not in run.executed)
        self._send(run, "execution_success", run.record("execution_success", {"prompt_id": run.prompt_id}))
        logger.info("Queued prompt %s: rendered by %s", run.prompt_id, worker.name)
        self._finish(run, RouteState.DONE, RoutedOutcome(True, tuple(run.messages), outputs, meta))

    def _relay(self, run: RoutedPrompt, progress: ShareProgress) -> None:
        """The worker's progress, as ComfyUI would tell the client: `executing` when the node changes,
        `progress` when its steps move. Only nodes of the prompt itself are named (the worker is not
        trusted to name anything else)."""
        run.progress = progress
        node = progress.node
        if node is None or run.queued is None or node not in run.queued.prompt:
            return
        if node != run.node:
            if run.node is not None and run.node not in run.executed:
                run.executed.append(run.node)
            run.node, run.step = node, (0, 1)
            self._send(run, "executing", {"node": node, "display_node": node, "prompt_id": run.prompt_id})
        step = (progress.value, progress.max)
        if step != run.step:
            run.step = step
            self._send(run, "progress", {"value": progress.value, "max": progress.max, "prompt_id": run.prompt_id, "node": node})

    def _worker_failed(self, run: RoutedPrompt, worker: WorkerConfig, error: Exception) -> None:
        cause = str(error) if isinstance(error, WorkerUnavailable) else f"worker '{worker.name}': unexpected error: {error!r}"
        run.attempts.append(cause)
        run.excluded.add(worker.id)
        run.progress = None
        if not self._could_ever_run(run, self._registry.snapshot()):
            self._give_up(run)
            return
        logger.warning("Queued prompt %s failed on %s (%s); it goes back to the master's queue", run.prompt_id, worker.name, cause)
        run.state, run.participant, run.participant_name = RouteState.WAITING, None, None
        if run.taken:
            self._queue.give_back(run.prompt_id)
            run.taken, run.queued = False, None
        self._wake.set()

    def _give_up(self, run: RoutedPrompt) -> None:
        """No participant is left for the prompt: it ends in error, naming each worker and why."""
        if not run.held and not run.taken and not self._take(run):
            return  # the master's thread popped it meanwhile: it ends there, through `hold`
        self._begin(run)
        self._fail(run, "no participant could run it: " + "; ".join(run.attempts or ["no worker is enabled"]))

    def _fail(self, run: RoutedPrompt, message: str) -> None:
        run.error = message
        node = run.last_node()
        logger.warning("Queued prompt %s failed: %s", run.prompt_id, message)
        data = run.record("execution_error", {
            "prompt_id": run.prompt_id, "node_id": node, "node_type": run.node_type(node), "executed": list(run.executed),
            "exception_message": f"Distributed queue: {message}", "exception_type": "JobFailed", "traceback": [],
            "current_inputs": {}, "current_outputs": [],
        })
        self._send(run, "execution_error", data)
        self._finish(run, RouteState.FAILED, RoutedOutcome(False, tuple(run.messages)))

    def _interrupt(self, run: RoutedPrompt) -> None:
        if run.state in FINISHED:
            return
        task = self._tasks.pop(run.prompt_id, None)
        if task is not None:
            task.cancel()  # the runner takes the prompt off the worker
        node = run.last_node()
        data = run.record("execution_interrupted", {"prompt_id": run.prompt_id, "node_id": node, "node_type": run.node_type(node),
                                                    "executed": list(run.executed)})
        self._send(run, "execution_interrupted", data, to_everyone=run.client_id is None)
        run.error = "interrupted"
        self._finish(run, RouteState.INTERRUPTED, RoutedOutcome(False, tuple(run.messages)))

    def _finish(self, run: RoutedPrompt, state: RouteState, outcome: RoutedOutcome | None) -> None:
        run.state, run.outcome, run.finished_at = state, outcome, now_ms()
        run.finished.set()
        if run.taken and outcome is not None:
            run.taken = False
            self._queue.task_done(run.prompt_id, outcome)
            self._send(run, "executing", {"node": None, "prompt_id": run.prompt_id})
        run.queued = None  # the prompt and its workflow live on in ComfyUI's history, not here too
        self._wake.set()

    def _send(self, run: RoutedPrompt, event: str, data: dict[str, Any], to_everyone: bool = False) -> None:
        """As ComfyUI's executor sends: to the client that queued the prompt; without one, nothing
        (or, `to_everyone`, to every client)."""
        if run.client_id is not None or to_everyone:
            self._queue.send(event, data, run.client_id)

    def _forget_old_runs(self) -> None:
        finished = [run for run in self.runs() if run.state in FINISHED]
        for run in finished[KEEP_FINISHED_RUNS:]:
            self._runs.pop(run.prompt_id, None)


async def _nap(event: asyncio.Event) -> None:
    """Until `event` is set, or TICK_SECONDS at most. (Not `wait_for`: in Python 3.11 it can swallow a
    cancellation that arrives just as the event is set, and the loop around it would never stop.)"""
    try:
        async with asyncio.timeout(TICK_SECONDS):
            await event.wait()
    except TimeoutError:
        pass
