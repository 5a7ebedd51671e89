"""Runs a job: decides who takes part, hands shares out, watches them run and re-runs failures.

The life of a job:
1. `register` (ComfyUI's on-prompt hook, on the server loop): the prompt is planned; nothing is sent.
   In split-batch mode the batch is sliced here, in proportion to the participants' speeds, because
   the master's own slice must be cut into its prompt before ComfyUI queues it.
2. `start` (when the master begins executing the collector): enabled workers that answer are the
   participants. Fan-out: one share each; with `shares` set, that many; the master keeps share 0
   when it participates.
3. `_run`: shares stay on the master until `scheduler.assignments_now` hands them to a participant
   with room in its window (earliest expected finish); the share runner runs each one there. A
   participant that fails (offline, rejects the prompt, errors, dies, freezes, sends garbage) gives
   its share back for another participant and is named in a `share_reassigned` event.
4. When every share is in, each collector gets its `CollectorOutcome`; if a share could not be
   delivered before `assign_timeout`, the master renders it when it takes part (`fallback`), or the
   job fails with an error naming every worker that tried and why.

Everything here runs on the server loop, and only here is a Job read or changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..config.models import WorkerConfig
from ..config.registry import Registry
from ..errors import JobFailed, PlanError, WorkerLost, WorkerUnavailable
from ..events import Events
from ..shares import Share, ShareOutput, ShareProgress, ShareState
from ..workers.status import WorkerState
from .collect import ordered_parts
from .contracts import Clock, ShareRunning, WorkerAvailability
from .fallback import fallback_graph
from .job import MASTER, Job, JobState, MasterShareState
from .outcomes import CollectorOutcome, JobProgress, MasterFallback, ProgressBoard
from .plan import plan, split_batch
from .scheduler import Participant, ShareQueue, assignments_now
from .sizes import mismatched
from .speed import SpeedModel

logger = logging.getLogger(__name__)

PROBE_AT_START_SECONDS = 3.0
PROGRESS_EVENT_INTERVAL = 0.25
KEEP_FINISHED_JOBS = 50
NEVER_STARTED_SECONDS = 24 * 3600
MASTER_CHECK_SECONDS = 0.5


class Dispatcher:
    """Owns every job of this master."""

    def __init__(
        self,
        registry: Registry,
        health: WorkerAvailability,
        events: Events,
        runner: ShareRunning,
        master_prompt_ended: Callable[[str], bool] = lambda prompt_id: False,
        clock: Clock = time.monotonic,
    ) -> None:
        self._registry = registry
        self._master_prompt_ended = master_prompt_ended
        """True once the master's own prompt is over (in its history): nobody will collect any more."""
        self._health = health
        self._events = events
        self._runner = runner
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self.speeds = SpeedModel()
        self.progress = ProgressBoard()
        self._last_finish: dict[str, float] = {}
        """When each worker last delivered a share: a queued share's own time starts there."""
        self._waiting: dict[str, float] = {}
        """Job id -> since when its shares wait with every participant busy (for elastic pools)."""

    # --- queue: the on-prompt hook --------------------------------------------------------

    def register(self, prompt: dict[str, Any], prompt_id: str | None = None) -> Job:
        """Plans a prompt holding collectors; a planning error is kept and raised by the collector."""
        job_id = uuid.uuid4().hex
        try:
            job = Job(job_id, plan(prompt), prompt_id=prompt_id)
        except PlanError as error:
            job = Job(job_id, None, prompt_id=prompt_id, error=str(error), state=JobState.FAILED)
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
        workers = [w.id for w in config.workers if w.enabled and self._health.status(w.id).state.answers]
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

    def waiting_since(self) -> float | None:
        """Since when (on the clock) a share has waited with every participant busy; None if none waits."""
        return min(self._waiting.values(), default=None)

    def holds_share(self, worker_id: str) -> bool:
        """Whether the worker runs, or has queued, a share of a running job now."""
        return any(job.state == JobState.RUNNING and job.queue.held_by(worker_id) for job in self._jobs.values())

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.created_at, reverse=True)

    # --- plan and dispatch ----------------------------------------------------------------

    async def start(self, job_id: str) -> bool:
        """Starts a job once; returns whether the master renders share 0 itself.

        Cancelled while it checks the workers (the prompt was interrupted), the job ends as failed:
        no job is ever left half started.
        """
        job = self._require(job_id)
        if job.state != JobState.REGISTERED:
            return job.master_renders
        job.state = JobState.STARTING
        job.started_at = self._clock()
        try:
            config = self._registry.snapshot()
            workers = await self._available_workers(job, [w for w in config.workers if w.enabled])
        except asyncio.CancelledError:
            job.error = "interrupted on the master"
            self._finish(job, JobState.FAILED)
            raise
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
        job.master_state = MasterShareState.RUNNING if job.master_renders else MasterShareState.NONE
        job.state = JobState.RUNNING
        if not shares:
            logger.info("Job %s: no worker available, the master renders alone", job_id)
            self._finish(job, JobState.DONE)
            return job.master_renders
        logger.info("Job %s: %d share(s) for %s%s", job_id, len(shares), ", ".join(w.name for w in workers) or "no worker yet",
                    " plus the master" if job.master_renders else "")
        job.task = asyncio.ensure_future(self._run(job))
        self._publish(job)
        return job.master_renders

    def _master_done(self, job: Job) -> None:
        """The master rendered its own share (the collector got its images): learn its speed."""
        if job.plan is None or not job.master_renders or job.started_at is None or job.master_state == MasterShareState.DONE:
            return
        job.master_state = MasterShareState.DONE
        job.master_progress = None
        units = job.master_batch.length if job.master_batch else 1
        self.speeds.observe(job.plan.workflow_key, MASTER, self._clock() - job.started_at, units)
        self._publish(job)

    async def collector_outcome(self, job_id: str, collector_id: str, master_shape: tuple[int, ...] | None = None,
                                master_part: Any = None) -> CollectorOutcome:
        """Waits for every remote share, then gives one collector what it joins; raises JobFailed
        naming who failed and why.

        The master's own share is done when this is called. `master_shape` is the image size of it:
        a delivered share of another size is given back and re-run elsewhere, even if the job had
        already finished. When shares are left to the master, `master_part` (the master's own
        output) is held until the last of them is rendered (`deliver_from_master`).
        """
        job = self._require(job_id)
        self._master_done(job)
        if master_shape is not None:
            job.expected_shapes[collector_id] = master_shape
        if job.state == JobState.DONE and self._reject_mismatched(job):
            job.state = JobState.RUNNING
            job.finished.clear()
            job.task = asyncio.ensure_future(self._run(job))
        try:
            await job.finished.wait()
        except asyncio.CancelledError:
            await self.cancel(job_id, "interrupted on the master")
            raise
        if job.state != JobState.DONE:
            raise JobFailed(job.error or "distributed job failed")
        assert job.plan is not None
        missing = [(index, job.queue.shares[index].batch) for index in job.master_fallback
                   if collector_id not in job.results.get(index, {})]
        if missing:
            job.held_master_parts[collector_id] = master_part
            graph, last = fallback_graph(job.plan, job.job_id, collector_id, missing)
            return CollectorOutcome(job.master_renders, (), fallback=MasterFallback(graph, last))
        return self._joinable(job, collector_id, master_part)

    def _joinable(self, job: Job, collector_id: str, master_part: Any) -> CollectorOutcome:
        participants = {index: share.participant for index, share in job.queue.shares.items()}
        order = job.remote_share_order()
        parts = ordered_parts(collector_id, order, job.results, participants)
        sources = tuple((index, job.queue.shares[index].batch) for index in order)
        return CollectorOutcome(job.master_renders, tuple(parts), sources, job.master_batch, master_part=master_part)

    async def cancel(self, job_id: str, reason: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.finished.is_set():
            return
        job.error = reason
        if job.task is not None:
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        self._finish(job, JobState.FAILED)

    async def _available_workers(self, job: Job, enabled: list[WorkerConfig]) -> list[WorkerConfig]:
        """Enabled workers that answer now; the others are skipped and named."""
        unsure = [w for w in enabled if not self._health.status(w.id).state.answers]
        if unsure:
            checks = [asyncio.ensure_future(self._health.check(w)) for w in unsure]
            try:
                await asyncio.wait(checks, timeout=PROBE_AT_START_SECONDS)
            finally:
                for check in checks:
                    check.cancel()
        available = []
        for worker in enabled:
            status = self._health.status(worker.id)
            if status.state.answers:
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
                now = self._clock()
                for share, worker_id in assignments_now(job.queue.pending(), self._participants(job, list(candidates.values()), now), now):
                    worker = candidates[worker_id]
                    job.queue.claim(share, worker.id, now)
                    task = asyncio.ensure_future(self._runner.run(
                        job.plan.share_work(share.index, share.batch), worker, share.index,
                        lambda progress, job=job, share=share: self._on_progress(job, share, progress),
                    ))
                    running[task] = (share, worker)
                    self._publish(job)
                if job.queue.pending() and all(job.queue.held_by(worker_id) for worker_id in candidates):
                    self._waiting.setdefault(job.job_id, now)
                else:
                    self._waiting.pop(job.job_id, None)
                if running:
                    stuck_since = None
                    done, _ = await asyncio.wait(running, timeout=MASTER_CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        share, worker = running.pop(task)
                        self._settle(job, share, worker, task)
                    self._check_master(job)
                    continue
                stuck_since = stuck_since or self._clock()
                waited = self._clock() - stuck_since
                config = self._registry.snapshot()
                timeout = config.settings.assign_timeout
                if waited >= timeout and config.master.participate:
                    self._hand_to_master(job, timeout)
                    break
                if waited >= timeout:
                    raise JobFailed(self._failure_message(job, timeout))
                await self._health.wait_for_change(min(MASTER_CHECK_SECONDS, timeout - waited))
                self._check_master(job)
            self._finish(job, JobState.DONE)
        except JobFailed as error:
            job.error = str(error)
            logger.error("Job %s failed: %s", job.job_id, error)
            self._finish(job, JobState.FAILED)
        finally:
            self._waiting.pop(job.job_id, None)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def master_progress(self, job_id: str, progress: ShareProgress) -> None:
        """ComfyUI's progress on the master, for the master's own share of a running job."""
        job = self._jobs.get(job_id)
        if job is not None and job.master_state == MasterShareState.RUNNING:
            job.master_progress = progress
            self._publish(job, throttle=True)

    def _on_progress(self, job: Job, share: Share, progress: ShareProgress) -> None:
        if share.state == ShareState.RUNNING:
            share.progress = progress
            self._publish(job, throttle=True)

    def _candidates(self, job: Job) -> list[WorkerConfig]:
        """Enabled, online workers in registry order that this job has not excluded."""
        return [
            w for w in self._registry.snapshot().workers
            if w.enabled and w.id not in job.queue.excluded and self._health.status(w.id).state.answers
        ]

    def _check_master(self, job: Job) -> None:
        """Stops a job whose master prompt ended (interrupted, or failed elsewhere) before collecting."""
        if job.prompt_id is not None and self._master_prompt_ended(job.prompt_id):
            raise JobFailed("the master's prompt ended before its shares were collected (interrupted or failed)")

    def release(self, job_id: str, collector_id: str) -> None:
        """Drops a collector's outputs once it has them, so finished jobs hold no image memory."""
        job = self._jobs.get(job_id)
        if job is not None:
            for outputs in job.results.values():
                outputs.pop(collector_id, None)
            job.held_master_parts.pop(collector_id, None)

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
            if job.plan is not None and collector_id in job.plan.audio_collectors:
                continue  # clips of different lengths are joined by padding: no size to agree on
            sizes = {index: tuple(outputs[collector_id].shape[1:]) for index, outputs in job.results.items() if collector_id in outputs}
            for index, cause in mismatched(sizes, job.expected_shapes.get(collector_id), collector_id).items():
                share = job.queue.shares[index]
                worker = self._registry.snapshot().worker(share.participant or "")
                name = worker.name if worker else share.participant
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
            now = self._clock()
            began = max(share.claimed_at or now, self._last_finish.get(worker.id, 0.0))
            assert job.plan is not None
            self.speeds.observe(job.plan.workflow_key, worker.id, now - began, share.units)
            self._last_finish[worker.id] = now
            job.queue.complete(share)
            logger.info("Job %s: share %d delivered by %s", job.job_id, share.index, worker.name)
        elif isinstance(error, WorkerUnavailable):
            cause = "stopped by the user" if self._health.status(worker.id).state == WorkerState.STOPPED else error.cause
            job.queue.give_back(share, worker.id, f"worker '{worker.name}': {cause}")
            logger.warning("Job %s: share %d failed on %s (%s); it will run elsewhere", job.job_id, share.index, worker.name, cause)
            self._events.share_reassigned(job.job_id, share.index, worker.id, cause)
        else:
            job.queue.give_back(share, worker.id, f"worker '{worker.name}': unexpected error: {error!r}")
            logger.error("Job %s: share %d on %s raised", job.job_id, share.index, worker.name, exc_info=error)
        self._publish(job)

    def _hand_to_master(self, job: Job, timeout: float) -> None:
        """The pending shares no worker could take in `timeout` go to the master, which takes part
        anyway: its collectors render them after their own share, so the prompt still gets every image."""
        now = self._clock()
        for share in job.queue.pending():
            job.queue.claim(share, MASTER, now)
            job.master_fallback.append(share.index)
        logger.warning("Job %s: %s; the master renders them itself", job.job_id, self._failure_message(job, timeout, job.master_fallback))
        self._publish(job)

    async def deliver_from_master(self, job_id: str, index: int, collector_id: str, result: ShareOutput,
                                  last: bool) -> CollectorOutcome | None:
        """A fallback share's output for one collector, rendered on the master; the share is done
        once every collector has its output. After the `last` of a collector's fallback shares, its
        outcome: every part, and the master's own output held meanwhile."""
        job = self._require(job_id)
        outputs = job.results.setdefault(index, {})
        outputs[collector_id] = result
        assert job.plan is not None
        if all(collector_id in outputs for collector_id in job.plan.collector_ids):
            job.queue.complete(job.queue.shares[index])
        self._publish(job)
        if not last:
            return None
        return self._joinable(job, collector_id, job.held_master_parts.pop(collector_id, None))

    def _failure_message(self, job: Job, timeout: float, missing: list[int] | None = None) -> str:
        indices = missing if missing is not None else [s.index for s in job.queue.pending()]
        tried = list(job.queue.excluded.values())
        cause = "; ".join(tried) if tried else "no worker was online"
        return f"share(s) {', '.join(map(str, indices))} could not be delivered within {timeout:.0f}s: {cause}"

    # --- bookkeeping ----------------------------------------------------------------------

    def _finish(self, job: Job, state: JobState) -> None:
        if state == JobState.FAILED:
            job.queue.fail_pending()
        job.state = state
        job.finished_at = self._clock()
        job.finished.set()
        self._publish(job)

    def _publish(self, job: Job, throttle: bool = False) -> None:
        shares = job.queue.shares.values()
        self.progress.publish(job.job_id, JobProgress(sum(1 for s in shares if s.state == ShareState.DONE), len(shares)))
        now = self._clock()
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
            self.progress.drop(job.job_id)
        for job in finished:
            if job.results and job.prompt_id is not None and self._master_prompt_ended(job.prompt_id):
                job.results.clear()  # never collected: the master's prompt failed before its collector ran
                job.held_master_parts.clear()
        stale = time.time() - NEVER_STARTED_SECONDS
        for job in [job for job in self._jobs.values() if job.state == JobState.REGISTERED and job.created_at < stale]:
            self._jobs.pop(job.job_id, None)
