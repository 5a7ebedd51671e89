"""Runs a job: decides who takes part, hands shares out, watches them run and re-runs failures.

The life of a job:
1. `register` (ComfyUI's on-prompt hook, on the server loop): the prompt is planned; nothing is sent.
   In split-batch mode the batch is sliced here, in proportion to the participants' speeds, because
   the master's own slice must be cut into its prompt before ComfyUI queues it.
2. `start` (when the master begins executing the collector): enabled workers that answer are the
   participants. Fan-out: one share each; with `shares` set, that many; the master keeps share 0
   when it participates.
3. `_run`: shares stay on the master until `scheduler.assignments_now` hands them to a participant
   with room in its window (earliest expected finish); `share_runner` runs each one there. A
   participant that fails (offline, rejects the prompt, errors, dies, freezes, sends garbage) gives
   its share back for another participant and is named in a `share_reassigned` event.
4. When every share is in, the collector takes the images; if a share could not be delivered before
   `assign_timeout`, the job fails with an error naming every worker that tried and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .client import ClientPool
from .collect import AudioClip
from .errors import JobFailed, PlanError, WorkerLost, WorkerUnavailable
from .events import Events
from .health import HealthMonitor
from .models import WorkerConfig, WorkerState
from .planner import BatchSlice, Plan, plan, split_batch
from .registry import Registry
from .scheduler import Participant, Share, ShareQueue, assignments_now
from .share_runner import ShareRunner
from .speed import SpeedModel

logger = logging.getLogger(__name__)

MASTER = "master"
PROBE_AT_START_SECONDS = 3.0
PROGRESS_EVENT_INTERVAL = 0.25
KEEP_FINISHED_JOBS = 50
NEVER_STARTED_SECONDS = 24 * 3600
ONLINE_STATES = (WorkerState.ONLINE, WorkerState.BUSY)
MASTER_CHECK_SECONDS = 0.5


@dataclass
class Job:
    """One prompt's distributed work and, once done, its results."""

    job_id: str
    plan: Plan | None
    prompt_id: str | None = None
    error: str | None = None
    state: str = "registered"
    master_renders: bool = False
    master_state: str = "waiting"
    master_batch: BatchSlice | None = None
    """Split mode: the slice cut into the master's own prompt, or None."""
    remote_batches: list[BatchSlice] = field(default_factory=list)
    """Split mode: the slices for workers, in share order."""
    queue: ShareQueue = field(default_factory=lambda: ShareQueue([]))
    results: dict[int, dict[str, np.ndarray | AudioClip]] = field(default_factory=dict)
    expected_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Collector node id -> image size [H, W, C] of the master's own share: what every share must match."""
    master_fallback: list[int] = field(default_factory=list)
    """Shares no worker could deliver, rendered by the master itself (the collectors expand their graph)."""
    master_parts: dict[str, Any] = field(default_factory=dict)
    """Collector node id -> the master's own share 0 output, held while the fallback shares render."""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    last_progress_event: float = 0.0

    def remote_share_order(self) -> list[int]:
        return sorted(self.queue.shares)

    def snapshot(self) -> dict[str, Any]:
        shares = [
            {"index": 0, "participant": MASTER, "state": self.master_state, "attempts": [], "progress": None,
             "batch": _batch_json(self.master_batch)}
        ] if self.master_renders else []
        shares += [
            {"index": s.index, "participant": s.participant, "state": s.state.value, "attempts": list(s.attempts),
             "progress": s.progress, "batch": _batch_json(s.batch)}
            for s in sorted(self.queue.shares.values(), key=lambda s: s.index)
        ]
        mode = "split" if self.plan and self.plan.split else "shares" if self.plan and self.plan.shares else "fan-out"
        duration = None if self.started_at is None or self.finished_at is None else round(self.finished_at - self.started_at, 3)
        return {"job_id": self.job_id, "prompt_id": self.prompt_id, "state": self.state, "error": self.error,
                "mode": mode, "created_at": self.created_at, "duration_s": duration,
                "collectors": list(self.plan.collector_ids) if self.plan else [], "shares": shares}


def _majority(sizes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The size more than half of the shares delivered, if two or more agree on it."""
    for size in set(sizes):
        count = sizes.count(size)
        if count >= 2 and count * 2 > len(sizes):
            return size
    return None


def _size_text(size: tuple[int, ...]) -> str:
    height, width, *channels = size
    return f"{width}x{height}" + (f"x{channels[0]}" if channels else "")


def _batch_json(batch: BatchSlice | None) -> dict[str, int] | None:
    return None if batch is None else {"start": batch.start, "length": batch.length}


class Dispatcher:
    """Owns every job of this master."""

    def __init__(
        self,
        registry: Registry,
        health: HealthMonitor,
        clients: ClientPool,
        events: Events,
        runner: ShareRunner,
        master_prompt_ended: Callable[[str], bool] = lambda prompt_id: False,
    ) -> None:
        self._registry = registry
        self._master_prompt_ended = master_prompt_ended
        """True once the master's own prompt is over (in its history): nobody will collect any more."""
        self._health = health
        self._clients = clients
        self._events = events
        self._jobs: dict[str, Job] = {}
        self._runner = runner
        self.speeds = SpeedModel()
        self._last_finish: dict[str, float] = {}
        """When each worker last delivered a share: a queued share's own time starts there."""

    # --- queue: the on-prompt hook --------------------------------------------------------

    def register(self, prompt: dict[str, Any], prompt_id: str | None = None) -> Job:
        """Plans a prompt holding collectors; a planning error is kept and raised by the collector."""
        job_id = uuid.uuid4().hex
        try:
            job = Job(job_id, plan(prompt), prompt_id=prompt_id)
        except PlanError as error:
            job = Job(job_id, None, prompt_id=prompt_id, error=str(error), state="failed")
            logger.warning("Prompt cannot be distributed: %s", error)
        if job.plan is not None and job.plan.split:
            self._slice_batch(job)
        self._jobs[job_id] = job
        self._forget_old_jobs()
        return job

    def _slice_batch(self, job: Job) -> None:
        """Cuts the batch between the master (if it participates) and the workers online now."""
        assert job.plan is not None
        config = self._registry.snapshot()
        workers = [w.id for w in config.workers if w.enabled and self._health.status(w.id).state in ONLINE_STATES]
        participants = ([MASTER] if config.master.participate else []) + workers
        if not workers:
            return  # nobody to split with: the master renders the whole batch as usual
        seconds = self.speeds.estimates(job.plan.workflow_key, participants)
        slices = split_batch(job.plan.batch_size, [1.0 / seconds[p] for p in participants])
        if config.master.participate:
            job.master_batch, slices = slices[0], slices[1:]
        job.remote_batches = [batch for batch in slices if batch is not None]

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)

    # --- plan and dispatch ----------------------------------------------------------------

    async def start(self, job_id: str) -> bool:
        """Starts a job once; returns whether the master renders share 0 itself."""
        job = self._require(job_id)
        if job.state != "registered":
            return job.master_renders
        job.state = "starting"
        job.started_at = time.monotonic()
        config = self._registry.snapshot()
        workers = await self._available_workers(job, [w for w in config.workers if w.enabled])
        assert job.plan is not None
        if job.plan.split and (job.master_batch or job.remote_batches):
            job.master_renders = job.master_batch is not None
            first = 1 if job.master_renders else 0
            shares = [Share(first + i, batch=batch) for i, batch in enumerate(job.remote_batches)]
        elif job.plan.shares:
            job.master_renders = config.master.participate
            first = 1 if job.master_renders else 0
            shares = [Share(index) for index in range(first, job.plan.shares)]
        else:
            job.master_renders = config.master.participate or not workers
            first = 1 if job.master_renders else 0
            shares = [Share(first + i) for i in range(len(workers))]
        job.queue = ShareQueue(shares)
        job.master_state = "running" if job.master_renders else "none"
        job.state = "running"
        if not shares:
            logger.info("Job %s: no worker available, the master renders alone", job_id)
            self._finish(job, "done")
            return job.master_renders
        logger.info("Job %s: %d share(s) for %s%s", job_id, len(shares), ", ".join(w.name for w in workers) or "no worker yet",
                    " plus the master" if job.master_renders else "")
        job.task = asyncio.ensure_future(self._run(job))
        self._publish(job)
        return job.master_renders

    def master_done(self, job_id: str) -> None:
        """The master rendered its own share (the collector got its images): learn its speed."""
        job = self._jobs.get(job_id)
        if job is None or job.plan is None or not job.master_renders or job.started_at is None or job.master_state == "done":
            return
        job.master_state = "done"
        units = job.master_batch.length if job.master_batch else 1
        self.speeds.observe(job.plan.workflow_key, MASTER, time.monotonic() - job.started_at, units)
        self._publish(job)

    async def results(self, job_id: str, master_shapes: dict[str, tuple[int, ...]] | None = None) -> Job:
        """Waits for every remote share; raises JobFailed naming who failed and why.

        `master_shapes` are the image sizes of the master's own share: a delivered share of another size
        is given back and re-run elsewhere, even if the job had already finished.
        """
        job = self._require(job_id)
        job.expected_shapes.update(master_shapes or {})
        if job.state == "done" and self._reject_mismatched(job):
            job.state = "running"
            job.finished.clear()
            job.task = asyncio.ensure_future(self._run(job))
        try:
            await job.finished.wait()
        except asyncio.CancelledError:
            await self.cancel(job_id, "interrupted on the master")
            raise
        if job.state != "done":
            raise JobFailed(job.error or "distributed job failed")
        return job

    async def cancel(self, job_id: str, reason: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.finished.is_set():
            return
        job.error = reason
        if job.task is not None:
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        self._finish(job, "failed")

    async def _available_workers(self, job: Job, enabled: list[WorkerConfig]) -> list[WorkerConfig]:
        """Enabled workers that answer now; the others are skipped and named."""
        unsure = [w for w in enabled if self._health.status(w.id).state not in ONLINE_STATES]
        if unsure:
            await asyncio.wait([asyncio.ensure_future(self._health.check(w)) for w in unsure], timeout=PROBE_AT_START_SECONDS)
        available = []
        for worker in enabled:
            status = self._health.status(worker.id)
            if status.state in ONLINE_STATES:
                available.append(worker)
                continue
            reason = status.error or f"worker is {status.state.value}"
            logger.warning("Job %s: skipping worker %s (%s)", job.job_id, worker.name, reason)
            self._events.worker_skipped(job.job_id, worker.id, reason)
        return available

    async def _run(self, job: Job) -> None:
        """Hands pending shares to free participants until all are in or nobody can take them."""
        assert job.plan is not None
        running: dict[asyncio.Task, tuple[Share, WorkerConfig]] = {}
        stuck_since: float | None = None
        try:
            while True:
                if job.queue.is_finished(but_for=MASTER) and not self._reject_mismatched(job):
                    break  # every share in (or left to the master), and each of the right size
                candidates = {worker.id: worker for worker in self._candidates(job)}
                now = time.monotonic()
                for share, worker_id in assignments_now(job.queue.pending(), self._participants(job, list(candidates.values()), now), now):
                    worker = candidates[worker_id]
                    job.queue.claim(share, worker.id, now)
                    task = asyncio.ensure_future(self._runner.run(
                        job.plan.share_prompt(share.index, share.batch), job.plan.collector_ids, share, self._clients.client(worker),
                        lambda job=job: self._publish(job, throttle=True), precisions=job.plan.precisions,
                    ))
                    running[task] = (share, worker)
                    self._publish(job)
                if running:
                    stuck_since = None
                    done, _ = await asyncio.wait(running, timeout=MASTER_CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        share, worker = running.pop(task)
                        self._settle(job, share, worker, task)
                    self._check_master(job)
                    continue
                stuck_since = stuck_since or time.monotonic()
                waited = time.monotonic() - stuck_since
                config = self._registry.snapshot()
                timeout = config.settings.assign_timeout
                if waited >= timeout and config.master.participate:
                    self._hand_to_master(job, timeout)
                    break
                if waited >= timeout:
                    raise JobFailed(self._failure_message(job, timeout))
                await self._health.wait_for_change(min(MASTER_CHECK_SECONDS, timeout - waited))
                self._check_master(job)
            self._finish(job, "done")
        except JobFailed as error:
            job.error = str(error)
            logger.error("Job %s failed: %s", job.job_id, error)
            self._finish(job, "failed")
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _candidates(self, job: Job) -> list[WorkerConfig]:
        """Enabled, online workers in registry order that this job has not excluded."""
        return [
            w for w in self._registry.snapshot().workers
            if w.enabled and w.id not in job.queue.excluded and self._health.status(w.id).state in ONLINE_STATES
        ]

    def _check_master(self, job: Job) -> None:
        """Stops a job whose master prompt ended (interrupted, or failed elsewhere) before collecting."""
        if job.prompt_id is not None and self._master_prompt_ended(job.prompt_id):
            raise JobFailed("the master's prompt ended before its shares were collected (interrupted or failed)")

    def release(self, job_id: str, collector_id: str) -> None:
        """Drops a collector's images once it has them, so finished jobs hold no image memory."""
        job = self._jobs.get(job_id)
        if job is not None:
            for outputs in job.results.values():
                outputs.pop(collector_id, None)

    def _participants(self, job: Job, workers: list[WorkerConfig], now: float) -> list[Participant]:
        """Each candidate worker's speed and when the shares it holds should be done."""
        assert job.plan is not None
        seconds = self.speeds.estimates(job.plan.workflow_key, [w.id for w in workers])
        participants = []
        for worker in workers:
            held = job.queue.held_by(worker.id)
            busy_until = now
            if held:
                first_start = max(held[0].claimed_at or now, self._last_finish.get(worker.id, 0.0))
                busy_until = max(now, first_start + seconds[worker.id] * held[0].units)
                busy_until += sum(seconds[worker.id] * share.units for share in held[1:])
            participants.append(Participant(worker.id, seconds[worker.id], busy_until, len(held)))
        return participants

    def _reject_mismatched(self, job: Job) -> bool:
        """Gives back delivered shares whose image size differs from the master's, or, without a share
        on the master, from what most shares delivered (two at least); True if any was given back."""
        rejected = False
        for collector_id in job.plan.collector_ids if job.plan else ():
            if collector_id in job.plan.audio_collectors:
                continue  # clips of different lengths are joined by padding: no size to agree on
            sizes = {index: tuple(outputs[collector_id].shape[1:]) for index, outputs in job.results.items() if collector_id in outputs}
            expected = job.expected_shapes.get(collector_id) or _majority(list(sizes.values()))
            for index, size in sizes.items():
                if expected is None or size == expected:
                    continue
                share = job.queue.shares[index]
                worker = self._registry.snapshot().worker(share.participant or "")
                name = worker.name if worker else share.participant
                cause = f"returned images of {_size_text(size)} for collector node {collector_id}; the others are {_size_text(expected)}"
                logger.warning("Job %s: share %d from %s is the wrong size; it will run elsewhere", job.job_id, index, name)
                job.results.pop(index, None)
                job.queue.give_back(share, share.participant or "", f"worker '{name}': {cause}")
                self._events.share_reassigned(job.job_id, index, share.participant or "", cause)
                rejected = True
        return rejected

    def _settle(self, job: Job, share: Share, worker: WorkerConfig, task: asyncio.Task) -> None:
        error = task.exception() if not task.cancelled() else WorkerLost(worker.name, "share cancelled")
        if error is None:
            job.results[share.index] = task.result()
            now = time.monotonic()
            began = max(share.claimed_at or now, self._last_finish.get(worker.id, 0.0))
            assert job.plan is not None
            self.speeds.observe(job.plan.workflow_key, worker.id, now - began, share.units)
            self._last_finish[worker.id] = now
            job.queue.complete(share)
            logger.info("Job %s: share %d delivered by %s", job.job_id, share.index, worker.name)
        elif isinstance(error, WorkerUnavailable):
            job.queue.give_back(share, worker.id, str(error))
            logger.warning("Job %s: share %d failed on %s (%s); it will run elsewhere", job.job_id, share.index, worker.name, error.cause)
            self._events.share_reassigned(job.job_id, share.index, worker.id, error.cause)
        else:
            job.queue.give_back(share, worker.id, f"worker '{worker.name}': unexpected error: {error!r}")
            logger.error("Job %s: share %d on %s raised", job.job_id, share.index, worker.name, exc_info=error)
        self._publish(job)

    def _hand_to_master(self, job: Job, timeout: float) -> None:
        """The pending shares no worker could take in `timeout` go to the master, which takes part
        anyway: its collectors render them after their own share, so the prompt still gets every image."""
        now = time.monotonic()
        for share in job.queue.pending():
            job.queue.claim(share, MASTER, now)
            job.master_fallback.append(share.index)
        logger.warning("Job %s: %s; the master renders them itself", job.job_id, self._failure_message(job, timeout, job.master_fallback))
        self._publish(job)

    async def deliver_from_master(self, job_id: str, index: int, collector_id: str, result: np.ndarray | AudioClip) -> None:
        """A fallback share's output for one collector, rendered on the master; the share is done
        once every collector has its output."""
        job = self._require(job_id)
        outputs = job.results.setdefault(index, {})
        outputs[collector_id] = result
        assert job.plan is not None
        if all(collector_id in outputs for collector_id in job.plan.collector_ids):
            job.queue.complete(job.queue.shares[index])
        self._publish(job)

    def _failure_message(self, job: Job, timeout: float, missing: list[int] | None = None) -> str:
        indices = missing if missing is not None else [s.index for s in job.queue.pending()]
        tried = list(job.queue.excluded.values())
        cause = "; ".join(tried) if tried else "no worker was online"
        return f"share(s) {', '.join(map(str, indices))} could not be delivered within {timeout:.0f}s: {cause}"

    # --- bookkeeping ----------------------------------------------------------------------

    def _finish(self, job: Job, state: str) -> None:
        if state == "failed":
            job.queue.fail_pending()
        job.state = state
        job.finished_at = time.monotonic()
        job.finished.set()
        self._publish(job)

    def _publish(self, job: Job, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - job.last_progress_event < PROGRESS_EVENT_INTERVAL:
            return
        job.last_progress_event = now
        self._events.job_update(job.snapshot())

    def _require(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobFailed(f"distributed job {job_id} is unknown (was the master restarted?)")
        if job.plan is None:
            raise JobFailed(job.error or "the prompt cannot be distributed")
        return job

    def _forget_old_jobs(self) -> None:
        """Keeps the latest finished jobs for the status route, and drops jobs never started
        (their prompt was refused by the master's validation, or cancelled while queued)."""
        finished = [job for job in self.jobs() if job.finished.is_set()]
        for job in finished[KEEP_FINISHED_JOBS:]:
            self._jobs.pop(job.job_id, None)
        for job in finished:
            if job.results and job.prompt_id is not None and self._master_prompt_ended(job.prompt_id):
                job.results.clear()  # never collected: the master's prompt failed before its collector ran
        stale = time.time() - NEVER_STARTED_SECONDS
        for job in [job for job in self._jobs.values() if job.state == "registered" and job.created_at < stale]:
            self._jobs.pop(job.job_id, None)
