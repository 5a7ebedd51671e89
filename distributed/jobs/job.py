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

from ..shares import BatchSlice, ShareOutput, ShareProgress
from .plan import Plan
from .scheduler import ShareQueue

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


def _mode(plan: Plan | None) -> str:
    if plan is not None and plan.split:
        return "split"
    return "shares" if plan is not None and plan.shares else "fan-out"


@dataclass
class Job:
    """One prompt's distributed work and, once done, its results."""

    job_id: str
    plan: Plan | None
    prompt_id: str | None = None
    error: str | None = None
    state: JobState = JobState.REGISTERED
    master_renders: bool = False
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
    master_fallback: list[int] = field(default_factory=list)
    """Shares no worker could deliver, rendered by the master itself (the collectors expand their graph)."""
    held_master_parts: dict[str, Any] = field(default_factory=dict)
    """Collector node id -> the master's own share 0 output, held while the fallback shares render.
    Handed in by the execution thread and back to it unchanged; the loop never looks inside."""
    master_share_token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    """Put into the fallback expansion, which no client sees, and asked back with each share it
    delivers: a prompt queued by anyone else cannot hand in a share for this job. Never shown."""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    last_progress_event: float = 0.0

    def remote_share_order(self) -> list[int]:
        return sorted(self.queue.shares)

    def snapshot(self) -> dict[str, Any]:
        """The job as the API and the panel show it."""
        shares = [
            {"index": 0, "participant": MASTER, "state": self.master_state.value, "attempts": [],
             "progress": self.master_progress.as_json() if self.master_progress else None,
             "batch": self.master_batch.as_json() if self.master_batch else None}
        ] if self.master_renders else []
        shares += [
            {"index": s.index, "participant": s.participant, "state": s.state.value, "attempts": list(s.attempts),
             "progress": s.progress.as_json() if s.progress else None, "batch": s.batch.as_json() if s.batch else None}
            for s in sorted(self.queue.shares.values(), key=lambda s: s.index)
        ]
        duration = None if self.started_at is None or self.finished_at is None else round(self.finished_at - self.started_at, 3)
        return {"job_id": self.job_id, "prompt_id": self.prompt_id, "state": self.state.value, "error": self.error,
                "mode": _mode(self.plan), "created_at": self.created_at, "duration_s": duration,
                "collectors": list(self.plan.collector_ids) if self.plan else [], "shares": shares}
