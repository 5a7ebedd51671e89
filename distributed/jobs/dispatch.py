"""Runs a job: decides who takes part, hands shares out, watches them run and re-runs failures.

The life of a job:
1. `register` (ComfyUI's on-prompt hook, on the server loop): the prompt is planned; nothing is sent.
   In split-batch mode the batch is sliced here, in proportion to the participants' speeds, because
   the master's own slice must be cut into its prompt before ComfyUI queues it. A registered job
   whose prompt ComfyUI drops (refused by validation, deleted from the queue, ended before its
   collector) is forgotten by `sweep`.
2. `start` (when the master begins executing the collector): enabled workers that answer are the
   participants. Fan-out: one share dealt to each; with `shares` set, that many, to whoever frees
   up first; the master keeps share 0 when it participates.
3. `_run`: shares stay on the master until `scheduler.assignments_now` hands them to a participant
   with room in its window (earliest expected finish); the share runner runs each one there. The
   master itself takes a waiting share once its own is done and its collector waits, if it would
   finish it no later than anyone else: the collector then expands into that share's graph
   (`fallback`). A participant that fails (offline, rejects the prompt, errors, dies, freezes,
   stalls, sends garbage) gives its shares back for another participant and is named in a
   `share_reassigned` event. A worker lagging far behind its speed gets a backup copy of its share
   started on an idle worker (`scheduler.backups_now`); the first copy delivered wins.
4. A tile job (`start_tiles`, a Distributed Upscale executing on the master) runs through the same
   loop: its shares are groups of tiles, its plan a `TilePlan`, and the master's thread takes
   tiles while it waits in `tile_outcome`, as a collector takes shares.
5. The job is done when every share is in and the master's own share is done; each collector gets
   its `CollectorOutcome` as soon as every share has its output. With no participant able to take a
   share for `assign_timeout` and a master that only orchestrates, the job fails with an error
   naming every worker that tried and why.

Everything here runs on the server loop, and only here is a Job read or changed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..config.models import RegistryFile, WorkerConfig
from ..config.registry import Registry
from ..errors import JobFailed, PlanError, WorkerLost, WorkerStalled, WorkerUnavailable
from ..events import Events
from ..shares import RunState, Share, ShareOutput, ShareProgress, ShareResult, ShareRun, ShareState
from ..workers.status import WorkerState
from .collect import ordered_parts
from .contracts import Clock, MasterQueue, ShareRunning, WorkerAvailability
from .fallback import fallback_graph
from .job import MASTER, Job, JobState, MasterShareState
from .outcomes import CollectorOutcome, JobProgress, MasterFallback, ProgressBoard, TileOutcome
from .plan import plan, split_batch
from .scheduler import (
    WINDOW,
    Backup,
    Participant,
    ShareQueue,
    assignments_now,
    backups_now,
    lagging,
    participant_view,
    withdrawals_now,
)
from .sizes import mismatched
from .speed import SpeedModel
from .upscale_plan import TilePlan, group_size, tile_groups

logger = logging.getLogger(__name__)

PROBE_AT_START_SECONDS = 3.0
PROGRESS_EVENT_INTERVAL = 0.25
KEEP_FINISHED_JOBS = 50
NEVER_QUEUED_SECONDS = 60.0
"""A registered job whose prompt never showed in the master's queue this long was refused by ComfyUI."""
TICK_SECONDS = 0.5
"""How often a job is looked at when nothing happens: lagging workers, the master's prompt, timeouts."""
SWEEP_SECONDS = 5.0


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
        master_queue: MasterQueue = lambda: ([], []),
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self._registry = registry
        self._master_prompt_ended = master_prompt_ended
        """True once the master's own prompt is over (in its history): nobody will collect any more."""
        self._master_queue = master_queue
        self._health = health
        self._events = events
        self._runner = runner
        self._clock = clock
        self._tick = tick_seconds
        self._jobs: dict[str, Job] = {}
        self.speeds = SpeedModel(clock)
        self.progress = ProgressBoard()
        self._free_since: dict[str, float] = {}
        """When each participant last delivered a share: a share queued behind it starts there."""
        self._waiting: dict[str, float] = {}
        """Job id -> since when its shares wait with no participant free to take them (for elastic pools)."""

    # --- queue: the on-prompt hook --------------------------------------------------------

    def register(self, prompt: dict[str, Any], prompt_id: str | None = None) -> Job:
        """Plans a prompt holding collectors; a planning error is kept and raised by the collector."""
        job_id = uuid.uuid4().hex
        try:
            job = Job(job_id, plan(prompt), prompt_id=prompt_id)
        except PlanError as error:
            job = Job(job_id, None, prompt_id=prompt_id, error=str(error), state=JobState.FAILED)
            logger.warning("Prompt cannot be distributed: %s", error)
        job.registered_at = self._clock()
        if job.plan is not None and job.plan.split:
            self._slice_batch(job)
        self._jobs[job_id] = job
        self.sweep()
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
        """Since when (on the clock) a share has waited with no participant free to take it; None if none waits."""
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
        job.master_takes_part = config.master.participate
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
            shares = [Share(first + i, intended=worker.id) for i, worker in enumerate(workers)]
        job.queue = ShareQueue(shares)
        job.master_state = MasterShareState.RUNNING if job.master_renders else MasterShareState.NONE
        job.state = JobState.RUNNING
        job.master_began = self._clock()
        self._log_start(job, workers)
        job.task = asyncio.ensure_future(self._run(job))
        self._publish(job)
        return job.master_renders

    def _log_start(self, job: Job, workers: list[WorkerConfig]) -> None:
        """Says what is decided at the start, and no more: who gets which share is logged as it happens."""
        names = {worker.id: worker.name for worker in workers}
        master = "share 0 on the master" if job.master_renders else "the master only collects"
        if not job.queue.shares:
            logger.info("Job %s: no worker available, %s", job.job_id, master)
        elif all(share.intended for share in job.queue.shares.values()):
            dealt = ", ".join(f"share {share.index} to {names[share.intended or '']}" for share in job.queue.shares.values())
            logger.info("Job %s: fan-out, %s, %s", job.job_id, master, dealt)
        else:
            takers = ", ".join([*names.values(), *(["the master"] if job.master_takes_part else [])]) or "nobody yet"
            logger.info("Job %s: %s; %d %sshare(s) go to whoever frees up first among %s",
                        job.job_id, master, len(job.queue.shares), "more " if job.master_renders else "", takers)

    async def collector_outcome(self, job_id: str, collector_id: str, master_shape: tuple[int, ...] | None = None,
                                master_part: Any = None) -> CollectorOutcome:
        """Waits until every share has this collector's output, then gives the collector what it
        joins, or the shares the master takes meanwhile; raises JobFailed naming who failed and why.

        The master's own share is done when this is called. `master_shape` is the image size of it:
        a delivered share of another size is given back and re-run elsewhere, even if the job had
        already finished. `master_part` (the master's own output) is held while the master renders
        other shares for this collector, and handed back with the joinable parts.
        """
        job = self._require(job_id)
        job.held_master_parts[collector_id] = master_part
        if master_shape is not None:
            job.expected_shapes[collector_id] = master_shape
        self._master_done(job)
        if self._reject_mismatched(job):
            self._resume(job)
        return await self._await_collector(job, collector_id)

    async def deliver_from_master(self, job_id: str, index: int, collector_id: str, result: ShareOutput,
                                  last: bool, token: str) -> CollectorOutcome | None:
        """A share the master rendered, for one collector; the share is done once every collector has
        its output. After the `last` share of an expansion, the collector's next outcome: more shares
        for the master, or every part joined with the master's own output held meanwhile. Only the
        job's own expansion knows `token`: a master-share node queued by anyone else is refused."""
        job = self._require(job_id)
        share = job.queue.shares.get(index)
        run = share.run_of(MASTER) if share is not None else None
        if job.state == JobState.FAILED:
            raise JobFailed(job.error or "distributed job failed")
        if not hmac.compare_digest(token.encode(), job.master_share_token.encode()) or share is None or run is None:
            raise JobFailed(f"share {index} of job {job_id} was not handed to the master by this job; its output is refused")
        outputs = job.results.setdefault(index, {})
        outputs[collector_id] = result
        assert job.plan is not None
        if all(collector in outputs for collector in job.plan.collector_ids):
            job.queue.deliver(share, run)
            now = self._clock()
            self.speeds.observe(job.plan.workflow_key, MASTER, now - (run.started_at or run.claimed_at), share.units, warm=True)
            self._free_since[MASTER] = now
            logger.info("Job %s: share %d rendered by the master", job.job_id, index)
        self._publish(job)
        job.changed.notify()
        if not last:
            return None
        return await self._await_collector(job, collector_id)

    async def _await_collector(self, job: Job, collector_id: str) -> CollectorOutcome:
        """The collector's next outcome: shares the master takes meanwhile (an expansion), or, once
        every share has its output, the joinable parts. The master's thread waits here, idle: the
        run loop may hand it a share. Cancelled (an interrupt), the job is cancelled too."""
        assert job.plan is not None
        try:
            while True:
                if job.state == JobState.FAILED:
                    raise JobFailed(job.error or "distributed job failed")
                mine = sorted(index for index, share in job.queue.shares.items()
                              if share.run_of(MASTER) is not None and collector_id not in job.results.get(index, {}))
                if mine:
                    shares = [(i, job.queue.shares[i].batch) for i in mine]
                    graph, last = fallback_graph(job.plan, job.job_id, collector_id, shares, job.master_share_token)
                    return CollectorOutcome(job.master_renders, (), fallback=MasterFallback(graph, last))
                if all(collector_id in job.results.get(index, {}) for index in job.queue.shares):
                    return self._joinable(job, collector_id, job.held_master_parts.pop(collector_id, None))
                await self._wait_idle(job)
        except asyncio.CancelledError:
            await self.cancel(job.job_id, "interrupted on the master")
            raise

    async def _wait_idle(self, job: Job) -> None:
        """The master's thread waits for the job's next change, marked idle meanwhile: the run loop
        may hand it a waiting share (or tile)."""
        job.master_idle = True
        job.changed.notify()
        try:
            await job.changed.wait(self._tick)
        finally:
            job.master_idle = False

    def _joinable(self, job: Job, collector_id: str, master_part: Any) -> CollectorOutcome:
        participants = {index: share.participant for index, share in job.queue.shares.items()}
        order = job.remote_share_order()
        parts = ordered_parts(collector_id, order, job.results, participants)
        sources = tuple((index, job.queue.shares[index].batch) for index in order)
        return CollectorOutcome(job.master_renders, tuple(parts), sources, job.master_batch, master_part=master_part)

    def _master_done(self, job: Job) -> None:
        """The master rendered its own share (a collector got its images): learn its speed."""
        if job.plan is None or job.master_state != MasterShareState.RUNNING:
            return
        job.master_state = MasterShareState.DONE
        job.master_progress = None
        now = self._clock()
        if job.master_began is not None:
            key = job.plan.workflow_key
            units = job.master_batch.length if job.master_batch else 1
            self.speeds.observe(key, MASTER, now - job.master_began, units, warm=self.speeds.has_run(key, MASTER))
        self._free_since[MASTER] = now
        self._publish(job)
        job.changed.notify()

    async def cancel(self, job_id: str, reason: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.finished.is_set():
            return
        job.error = reason
        if job.task is not None:
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)
        self._finish(job, JobState.FAILED)

    async def _probe(self, enabled: list[WorkerConfig]) -> None:
        """Checks, for up to PROBE_AT_START_SECONDS, the enabled workers not known to answer."""
        unsure = [w for w in enabled if not self._health.status(w.id).state.answers]
        if unsure:
            checks = [asyncio.ensure_future(self._health.check(w)) for w in unsure]
            try:
                await asyncio.wait(checks, timeout=PROBE_AT_START_SECONDS)
            finally:
                for check in checks:
                    check.cancel()

    async def _available_workers(self, job: Job, enabled: list[WorkerConfig]) -> list[WorkerConfig]:
        """Enabled workers that answer now; the others are skipped and named."""
        await self._probe(enabled)
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
        """Hands shares to free participants until every share is in and the master's own is done."""
        assert job.plan is not None
        tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]] = {}
        stuck_since: float | None = None
        try:
            while True:
                ended = [task for task in tasks if task.done()]
                for task in ended:
                    share, run, worker = tasks.pop(task)
                    self._settle(job, share, run, worker, task, tasks)
                if job.queue.is_finished() and job.master_state != MasterShareState.RUNNING:
                    break  # before looking at the master's prompt: it ends right after its collectors join
                self._check_master(job)
                config = self._registry.snapshot()
                now = self._clock()
                workers = {worker.id: worker for worker in self._candidates(job, config)}
                lag_limit = config.settings.backup_after
                participants = self._participants(job, workers, now, lag_limit)
                withdrawn = withdrawals_now(job.queue.shares, participants, lag_limit)
                for share, run in withdrawn:
                    self._withdraw(job, share, run, tasks)
                if withdrawn:
                    participants = self._participants(job, workers, now, lag_limit)
                handed = assignments_now(job.queue.pending(), participants, now)
                for share, participant in handed:
                    self._hand_out(job, share, participant, workers.get(participant), participants, tasks)
                if job.queue.pending():
                    self._waiting.setdefault(job.job_id, now)
                else:
                    self._waiting.pop(job.job_id, None)
                copies: list[Backup] = []
                if config.settings.backup_tasks:
                    participants = self._participants(job, workers, now, lag_limit)
                    copies = backups_now(job.queue.shares, participants, now, lag_limit, list(workers))
                    for backup in copies:
                        self._start_backup(job, backup, workers[backup.participant], participants, tasks)
                if job.queue.pending() and not tasks and not job.queue.held_by(MASTER) and not job.master_takes_part:
                    stuck_since = stuck_since if stuck_since is not None else now
                    if now - stuck_since >= config.settings.assign_timeout:
                        raise JobFailed(self._failure_message(job, config.settings.assign_timeout))
                else:
                    stuck_since = None
                if ended or withdrawn or handed or copies:
                    self._publish(job)  # once for everything this pass changed
                await job.changed.wait(self._tick)
            self._finish(job, JobState.DONE)
        except JobFailed as error:
            job.error = str(error)
            logger.error("Job %s failed: %s", job.job_id, error)
            self._finish(job, JobState.FAILED)
        finally:
            self._waiting.pop(job.job_id, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _resume(self, job: Job) -> None:
        """Runs the job again after a delivered share was given back once the job had finished."""
        if job.state == JobState.DONE and job.queue.pending():
            job.state = JobState.RUNNING
            job.finished.clear()
            job.finished_at = None
            job.task = asyncio.ensure_future(self._run(job))
            self._publish(job)

    def _hand_out(self, job: Job, share: Share, participant: str, worker: WorkerConfig | None, participants: list[Participant],
                  tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]], backup_reason: str | None = None) -> None:
        assert job.plan is not None
        now = self._clock()
        speed = next(p.seconds_per_unit for p in participants if p.id == participant)
        run = job.queue.claim(share, participant, now, speed * share.units, backup_reason)
        run.cold = not self.speeds.has_run(job.plan.workflow_key, participant)
        if worker is None:  # the master: its thread waits in a collector and starts on it at once
            run.started_at = now
            logger.info("Job %s: share %d goes to the master", job.job_id, share.index)
            job.changed.notify()
        else:
            logger.debug("Job %s: share %d goes to %s", job.job_id, share.index, worker.name)
            task = asyncio.ensure_future(self._runner.run(
                job.plan.share_work(share.index, share.batch, job.expected_shapes), worker, share.index,
                lambda progress, job=job, run=run: self._on_progress(job, run, progress),
            ))
            task.add_done_callback(lambda _, job=job: job.changed.notify())
            tasks[task] = (share, run, worker)

    def _withdraw(self, job: Job, share: Share, run: ShareRun, tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]]) -> None:
        """Takes a share not yet started back from a lagging participant's queue."""
        job.queue.withdraw(share, run)
        self._cancel_task_of(run, tasks)
        logger.info("Job %s: share %d taken back from %s, which lags behind; it goes to whoever finishes it first",
                    job.job_id, share.index, self._name(run.participant))

    def _start_backup(self, job: Job, backup: Backup, worker: WorkerConfig, participants: list[Participant],
                      tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]]) -> None:
        lag = round(backup.lag, 1)
        reason = f"{self._name(backup.lagging)} is {lag:g}x slower than usual"
        logger.info("Job %s: share %d copied to %s: %s", job.job_id, backup.share.index, worker.name, reason)
        self._hand_out(job, backup.share, worker.id, worker, participants, tasks, backup_reason=reason)
        self._events.share_copied(job.job_id, backup.share.index, worker.id, backup.lagging, reason)

    def master_progress(self, job_id: str, progress: ShareProgress) -> None:
        """ComfyUI's progress on the master, for the master's own share of a running job."""
        job = self._jobs.get(job_id)
        if job is not None and job.master_state == MasterShareState.RUNNING:
            job.master_progress = progress
            self._publish(job, throttle=True)

    def _on_progress(self, job: Job, run: ShareRun, progress: ShareProgress) -> None:
        if run.state != RunState.RUNNING:
            return
        now = self._clock()
        if run.started_at is None:
            run.started_at = now
        if progress.ran:
            run.ran_seconds = now - run.started_at
            return
        run.progress = progress
        self._publish(job, throttle=True)

    def _candidates(self, job: Job, config: RegistryFile) -> list[WorkerConfig]:
        """Enabled, online workers in registry order that this job has not excluded."""
        return [
            w for w in config.workers
            if w.enabled and w.id not in job.queue.excluded and self._health.status(w.id).state.answers
        ]

    def _participants(self, job: Job, workers: dict[str, WorkerConfig], now: float, lag_limit: float) -> list[Participant]:
        """The candidate workers, then the master when its thread is free to take a share or holds one,
        each with its speed and when the shares it holds should be done; one lagging `lag_limit` times
        behind holds one share at most."""
        assert job.plan is not None
        key = job.plan.workflow_key
        ids = list(workers)
        holdings = job.queue.holdings()
        if job.master_takes_part and job.master_state != MasterShareState.RUNNING and (job.master_idle or MASTER in holdings):
            ids.append(MASTER)
        seconds = self.speeds.estimates(key, ids)
        basis = self.speeds.has_basis(key)
        first_run = self.speeds.first_run_seconds(key)
        participants = []
        for participant in ids:
            held = holdings.get(participant, [])
            cold = bool(held) and held[0][1].cold
            participants.append(lagging(participant_view(
                participant, seconds[participant], [(share.index, run, share.units) for share, run in held],
                self._free_since.get(participant, 0.0), now, 1 if participant == MASTER else WINDOW,
                has_basis=first_run is not None if cold else basis, current_seconds_per_unit=first_run if cold else None,
                usual_seconds_per_unit=self.speeds.usual_seconds(key, participant),
                latest_seconds_per_unit=self.speeds.latest_seconds(key, participant),
            ), lag_limit))
        return participants

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

    def _reject_mismatched(self, job: Job) -> bool:
        """Gives back delivered shares whose image size differs from the master's, or, without a share
        on the master, from what most shares delivered (two at least); True if any was given back."""
        rejected = False
        assert job.plan is not None
        delivered = {index for index, share in job.queue.shares.items()
                     if share.state == ShareState.DONE and share.delivered_by not in (None, MASTER)}
        for collector_id in job.plan.collector_ids:
            if collector_id in job.plan.audio_collectors:
                continue  # clips of different lengths are joined by padding: no size to agree on
            sizes = {index: tuple(outputs[collector_id].shape[1:]) for index, outputs in job.results.items()
                     if index in delivered and collector_id in outputs}
            for index, cause in mismatched(sizes, job.expected_shapes.get(collector_id), collector_id).items():
                share = job.queue.shares[index]
                participant = share.delivered_by or ""
                name = self._name(participant)
                logger.warning("Job %s: share %d from %s is the wrong size; it will run elsewhere", job.job_id, index, name)
                job.results.pop(index, None)
                job.queue.reject(share, participant, f"worker '{name}': {cause}")
                self._events.share_reassigned(job.job_id, index, participant, cause)
                delivered.discard(index)
                rejected = True
        return rejected

    def _settle(self, job: Job, share: Share, run: ShareRun, worker: WorkerConfig, task: asyncio.Task,
                tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]]) -> None:
        """Takes in one ended copy: the first delivered wins; a failure gives the participant's shares back."""
        if run.state != RunState.RUNNING:
            return  # a copy stopped earlier: whatever it brought is dropped
        error = task.exception() if not task.cancelled() else WorkerLost(worker.name, "share cancelled")
        assert job.plan is not None
        if error is None:
            result: ShareResult = task.result()
            job.results[share.index] = result.outputs
            now = self._clock()
            others = job.queue.deliver(share, run)
            self._stop(job, share, others, tasks, now)
            began = run.started_at if run.started_at is not None else max(run.claimed_at, self._free_since.get(worker.id, 0.0))
            seconds = run.ran_seconds if run.ran_seconds is not None else now - began
            plan = job.plan
            warm = bool(result.cached_nodes & plan.shared_nodes) if plan.shared_nodes else self.speeds.has_run(plan.workflow_key, worker.id)
            self.speeds.observe(plan.workflow_key, worker.id, seconds, share.units, warm=warm)
            self._free_since[worker.id] = now
            copy = " (its copy came first)" if run.backup_reason else ""
            logger.info("Job %s: share %d delivered by %s, run in %.2f s%s", job.job_id, share.index, worker.name, seconds, copy)
            self._reject_mismatched(job)
        else:
            cause = error.cause if isinstance(error, WorkerUnavailable) else f"unexpected error: {error!r}"
            if self._health.status(worker.id).state == WorkerState.STOPPED:
                cause = "stopped by the user"
            failure = f"worker '{worker.name}': {cause}"
            job.queue.give_back(share, worker.id, failure)
            if isinstance(error, WorkerStalled) and run.started_at is not None and not run.cold:
                # it ran that long without finishing: a hung worker stays lagging for the next jobs
                self.speeds.observe_at_least(job.plan.workflow_key, worker.id, self._clock() - run.started_at, share.units)
            if isinstance(error, WorkerUnavailable):
                logger.warning("Job %s: share %d failed on %s (%s); it will run elsewhere", job.job_id, share.index, worker.name, cause)
            else:
                logger.error("Job %s: share %d on %s raised", job.job_id, share.index, worker.name, exc_info=error)
            self._events.share_reassigned(job.job_id, share.index, worker.id, cause)
            for other_share, other_run in job.queue.held_by(worker.id):
                job.queue.withdraw(other_share, other_run)
                self._cancel_task_of(other_run, tasks)

    def _stop(self, job: Job, share: Share, runs: list[ShareRun], tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]],
              now: float) -> None:
        """Stops the copies that lost the race; a lagging one has shown it takes at least this long
        (unless it was its first run: that says nothing of its warm speed)."""
        assert job.plan is not None
        for run in runs:
            self._cancel_task_of(run, tasks)
            if run.started_at is not None and not run.cold:
                self.speeds.observe_at_least(job.plan.workflow_key, run.participant, now - run.started_at, share.units)
            logger.info("Job %s: share %d stopped on %s: another copy came first", job.job_id, share.index, self._name(run.participant))

    @staticmethod
    def _cancel_task_of(run: ShareRun, tasks: dict[asyncio.Task, tuple[Share, ShareRun, WorkerConfig]]) -> None:
        for task, (_, task_run, _) in tasks.items():
            if task_run is run:
                task.cancel()

    def _failure_message(self, job: Job, timeout: float) -> str:
        pending = job.queue.pending()
        tried = list(job.queue.excluded.values())
        cause = "; ".join(tried) if tried else "no worker was online"
        if isinstance(job.plan, TilePlan):
            return f"{job.plan.describe(pending)} could not be rendered anywhere within {timeout:.0f}s: {cause}"
        indices = [s.index for s in pending]
        return f"share(s) {', '.join(map(str, indices))} could not be delivered within {timeout:.0f}s: {cause}"

    def _name(self, participant: str) -> str:
        if participant == MASTER:
            return "the master"
        worker = self._registry.snapshot().worker(participant)
        return worker.name if worker is not None else participant

    # --- tiles: a Distributed Upscale ---------------------------------------------------------

    async def tile_workers(self) -> int:
        """How many enabled workers answer now (checking the unsure ones): none, and the upscale node
        renders every tile itself without a job."""
        enabled = [w for w in self._registry.snapshot().workers if w.enabled]
        await self._probe(enabled)
        return sum(1 for w in enabled if self._health.status(w.id).state.answers)

    async def start_tiles(self, plan: TilePlan, prompt_id: str | None = None) -> str:
        """Starts a tile job: the tiles, grouped into shares, go to whoever frees up first; the master
        takes some while its thread waits in `tile_outcome` (when it participates)."""
        job = Job(uuid.uuid4().hex, plan, prompt_id=prompt_id, state=JobState.STARTING)
        job.registered_at = job.started_at = self._clock()
        job.seen_queued = True
        self._jobs[job.job_id] = job
        self.sweep()
        try:
            config = self._registry.snapshot()
            workers = await self._available_workers(job, [w for w in config.workers if w.enabled])
        except asyncio.CancelledError:
            job.error = "interrupted on the master"
            self._finish(job, JobState.FAILED)
            raise
        job.master_takes_part = config.master.participate
        job.master_state = MasterShareState.NONE
        participants = [w.id for w in workers] + ([MASTER] if job.master_takes_part else [])
        known = self.speeds.estimates(plan.workflow_key, participants) if self.speeds.has_basis(plan.workflow_key) else {}
        size = group_size(min(known.values(), default=None), len(plan.tiles), len(participants))
        job.queue = ShareQueue([Share(index, batch=group) for index, group in enumerate(tile_groups(len(plan.tiles), size))])
        job.state = JobState.RUNNING
        takers = ", ".join([w.name for w in workers] + (["the master"] if job.master_takes_part else [])) or "nobody"
        logger.info("Job %s: %d tile(s) of upscale node %s in %d share(s) of %d, to whoever frees up first among %s",
                    job.job_id, len(plan.tiles), plan.node_id, len(job.queue.shares), size, takers)
        job.task = asyncio.ensure_future(self._run(job))
        self._publish(job)
        return job.job_id

    async def tile_outcome(self, job_id: str) -> TileOutcome:
        """The upscale node's next step: tiles that came in (handed over), shares for the master to
        render, or the end. The master's thread waits here, idle, so the run loop may hand it a share.
        Cancelled (an interrupt), the job is cancelled too."""
        job = self._require(job_id)
        plan = job.plan
        assert isinstance(plan, TilePlan)
        try:
            while True:
                if job.state == JobState.FAILED:
                    raise JobFailed(job.error or "distributed upscale failed")
                delivered = []
                for index in sorted(job.results):
                    outputs = job.results.pop(index)
                    delivered += [(i, outputs[plan.key(i)][0]) for i in plan.indices(job.queue.shares[index].batch)]
                mine = tuple((share.index, tuple(plan.indices(share.batch))) for share in job.queue.shares.values()
                             if share.state == ShareState.RUNNING and share.run_of(MASTER) is not None)
                finished = job.queue.is_finished()
                if delivered or mine or finished:
                    return TileOutcome(tuple(delivered), mine, finished)
                await self._wait_idle(job)
        except asyncio.CancelledError:
            await self.cancel(job.job_id, "interrupted on the master")
            raise

    def deliver_tiles(self, job_id: str, index: int) -> None:
        """The master rendered (and blended) share `index` itself. A copy that another participant
        delivered first is dropped, so no tile is blended twice."""
        job = self._require(job_id)
        share = job.queue.shares.get(index)
        run = share.run_of(MASTER) if share is not None else None
        if share is None:
            return
        job.results.pop(index, None)  # what a copy elsewhere brought: the master blended its own
        if run is None:
            return
        job.queue.deliver(share, run)
        now = self._clock()
        self.speeds.observe(job.plan.workflow_key, MASTER, now - (run.started_at or run.claimed_at), share.units, warm=True)
        self._free_since[MASTER] = now
        logger.info("Job %s: share %d (%d tile(s)) rendered by the master", job.job_id, index, share.units)
        self._publish(job)
        job.changed.notify()

    async def end_tiles(self, job_id: str) -> None:
        """The upscale node is done with the job (finished, failed or interrupted): a job still
        running is cancelled, and nothing it holds is kept."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        if not job.finished.is_set() and not job.queue.is_finished():
            await self.cancel(job_id, job.error or "the Distributed Upscale node ended before every tile was in")
        job.results.clear()  # every tile in: the run loop, already woken, ends the job as done
        if isinstance(job.plan, TilePlan):
            job.plan = job.plan.without_pixels()  # kept with the finished job for its tile map only

    # --- bookkeeping ----------------------------------------------------------------------

    def _finish(self, job: Job, state: JobState) -> None:
        if state == JobState.FAILED:
            job.queue.fail_pending()
        job.state = state
        job.finished_at = self._clock()
        job.finished.set()
        job.changed.notify()
        self._publish(job)

    def _publish(self, job: Job, throttle: bool = False) -> None:
        """Pushes the job's snapshot; `throttle` (step progress) at most every PROGRESS_EVENT_INTERVAL."""
        now = self._clock()
        if throttle and now - job.last_progress_event < PROGRESS_EVENT_INTERVAL:
            return
        job.last_progress_event = now
        shares = job.queue.shares.values()
        self.progress.publish(job.job_id, JobProgress(sum(1 for s in shares if s.state == ShareState.DONE), len(shares)))
        self._events.job_update(job.snapshot())

    def _require(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobFailed(f"distributed job {job_id} is unknown (was the master restarted?)")
        if job.plan is None:
            raise JobFailed(job.error or "the prompt cannot be distributed")
        return job

    def sweep(self) -> None:
        """Keeps the latest finished jobs for the status route, and forgets the jobs that will never
        start: their prompt was refused by ComfyUI's validation, deleted from the master's queue, or
        ended before reaching its collector."""
        finished = [job for job in self.jobs() if job.finished.is_set()]
        for job in finished[KEEP_FINISHED_JOBS:]:
            self._forget(job)
        for job in finished:
            if job.results and job.prompt_id is not None and self._master_prompt_ended(job.prompt_id):
                job.results.clear()  # never collected: the master's prompt failed before its collector ran
                job.held_master_parts.clear()
        registered = [job for job in self._jobs.values() if job.state == JobState.REGISTERED]
        if not registered:
            return
        running, pending = self._master_queue()
        queued = set(running) | set(pending)
        now = self._clock()
        for job in registered:
            if job.prompt_id in queued:
                job.seen_queued = True
            elif (job.seen_queued or now - job.registered_at > NEVER_QUEUED_SECONDS
                  or (job.prompt_id is not None and self._master_prompt_ended(job.prompt_id))):
                logger.debug("Job %s: its prompt left the master's queue before reaching the collector; forgotten", job.job_id)
                self._forget(job)

    async def sweep_forever(self) -> None:
        """Sweeps every few seconds; runs until cancelled."""
        while True:
            self.sweep()
            await asyncio.sleep(SWEEP_SECONDS)  # a periodic look at the master's queue, not synchronisation

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.job_id, None)
        self.progress.drop(job.job_id)
