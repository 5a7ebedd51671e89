"""One prompt's distributed work: its plan, its shares, their results, and where it stands.

A Job lives on the server loop and only the loop reads or changes it. ComfyUI's execution thread
never sees one: it gets immutable values (`outcomes`) through the bridge.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..shares import BatchSlice, Share, ShareOutput, ShareProgress
from .plan import Plan
from .scheduler import ShareQueue
from .upscale_plan import TilePlan

MASTER = "master"
"""The participant id of the master itself."""


class JobState(enum.StrEnum):
    REGISTERED = "registered"
    """Planned by the on-prompt hook; nothing sent yet."""
    STARTING = "starting"
    """The master reached the collector; workers are being checked."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class MasterShareState(enum.StrEnum):
    """Where the master's own share 0 stands."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    NONE = "none"
    """The master renders no share of this job (it only orchestrates, or split mode left it none)."""


def _mode(plan: Plan | TilePlan | None) -> str:
    if isinstance(plan, TilePlan):
        return "upscale"
    if plan is not None and plan.split:
        return "split"
    return "shares" if plan is not None and plan.shares else "fan-out"


class Wakeup:
    """Wakes everyone waiting on a job's change at once (the run loop and a waiting collector)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Returns at the next `notify`, or after `timeout` seconds."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


@dataclass
class Job:
    """One prompt's distributed work and, once done, its results."""

    job_id: str
    plan: Plan | TilePlan | None
    """A collector job's plan, or a Distributed Upscale's tiles."""
    prompt_id: str | None = None
    error: str | None = None
    state: JobState = JobState.REGISTERED
    master_renders: bool = False
    """Share 0 is the master's own (rendered in its prompt, first in the batch)."""
    master_takes_part: bool = False
    """The master takes shares too once its own is done (the master participates)."""
    master_state: MasterShareState = MasterShareState.WAITING
    master_batch: BatchSlice | None = None
    """Split mode: the slice cut into the master's own prompt, or None."""
    master_progress: ShareProgress | None = None
    """Where the master's own share stands, from ComfyUI's progress on the master (whoever queued it)."""
    remote_batches: list[BatchSlice] = field(default_factory=list)
    """Split mode: the slices for workers, in share order."""
    queue: ShareQueue = field(default_factory=lambda: ShareQueue([]))
    results: dict[int, dict[str, ShareOutput]] = field(default_factory=dict)
    """Share index -> collector node id -> what that share delivered for it."""
    expected_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Collector node id -> image size [H, W, C] of the master's own share: what every share must match."""
    held_master_parts: dict[str, Any] = field(default_factory=dict)
    """Collector node id -> the master's own share 0 output, held while the master renders other
    shares for that collector. Handed in by the execution thread and back to it unchanged; the loop
    never looks inside."""
    master_idle: bool = False
    """A collector waits on the master's thread with nothing of its own to render: the master can take a share."""
    master_share_token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    """Put into the master's expansions, which no client sees, and asked back with each share they
    deliver: a prompt queued by anyone else cannot hand in a share for this job. Never shown."""
    created_at: float = field(default_factory=time.time)
    registered_at: float = 0.0
    """On the dispatcher's clock."""
    seen_queued: bool = False
    """Its prompt was seen in the master's queue (a registered job whose prompt left it never starts)."""
    started_at: float | None = None
    master_began: float | None = None
    """When the master began rendering share 0 (the job's start, after checking the workers)."""
    finished_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    changed: Wakeup = field(default_factory=Wakeup)
    task: asyncio.Task | None = None
    last_progress_event: float = 0.0

    def remote_share_order(self) -> list[int]:
        return sorted(self.queue.shares)

    def snapshot(self) -> dict[str, Any]:
        """The job as the API and the panel show it."""
        shares = [
            {"index": 0, "participant": MASTER, "state": self.master_state.value, "attempts": [],
             "progress": self.master_progress.as_json() if self.master_progress else None,
             "batch": self.master_batch.as_json() if self.master_batch else None, "copies": []}
        ] if self.master_renders else []
        shares += [_share_view(s) for s in sorted(self.queue.shares.values(), key=lambda s: s.index)]
        duration = None if self.started_at is None or self.finished_at is None else round(self.finished_at - self.started_at, 3)
        view = {"job_id": self.job_id, "prompt_id": self.prompt_id, "state": self.state.value, "error": self.error,
                "mode": _mode(self.plan), "created_at": self.created_at, "duration_s": duration,
                "collectors": list(self.plan.collector_ids) if self.plan else [], "shares": shares}
        if isinstance(self.plan, TilePlan):
            view["tiles"] = self.plan.tile_map(self.queue.shares.values())
        return view


def _share_view(share: Share) -> dict[str, Any]:
    live = share.live_runs()
    progress = live[0].progress if live else None
    return {
        "index": share.index, "participant": share.delivered_by or (live[0].participant if live else None),
        "state": share.state.value, "attempts": list(share.attempts),
        "progress": progress.as_json() if progress else None, "batch": share.batch.as_json() if share.batch else None,
        "copies": [{"participant": run.participant, "state": run.state.value, "reason": run.backup_reason,
                    "progress": run.progress.as_json() if run.progress else None}
                   for run in share.runs if run.backup_reason is not None],
    }
