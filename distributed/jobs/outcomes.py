"""What ComfyUI's execution thread gets from a job: immutable values, never the Job itself.

The collectors run on ComfyUI's prompt thread while the job lives on the server loop. The loop
builds these values and hands them over through the bridge (a collector's outcome) or a
`ProgressBoard` (progress, read every tenth of a second); nothing handed over is changed afterwards.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..graph import Prompt
from ..shares import BatchSlice, ShareOutput


@dataclass(frozen=True)
class MasterFallback:
    """Shares the master must render itself for one collector: a graph its node expands into."""

    graph: Prompt
    """A fresh graph, the execution thread's to keep."""
    last_node: str
    """The node of `graph` whose output is the collector's whole batch."""


@dataclass(frozen=True)
class CollectorOutcome:
    """One collector's view of a finished job: its parts in order, or the shares left to the master."""

    master_renders: bool
    """Whether share 0 is the master's own (it then comes first in the batch)."""
    parts: tuple[tuple[str, ShareOutput], ...]
    """(label, output) of every remote share for this collector, in share order."""
    part_shares: tuple[tuple[int, BatchSlice | None], ...] = ()
    """(share index, batch slice) of each of `parts`: where its images come from."""
    master_batch: BatchSlice | None = None
    """Split mode: the slice of the batch the master's own share rendered."""
    fallback: MasterFallback | None = None
    """Set when shares are left to the master: the collector expands into this instead of joining."""
    master_part: Any = None
    """The master's own share 0 output, when it was held during a fallback (see Job.held_master_parts)."""


@dataclass(frozen=True)
class TileOutcome:
    """What the Distributed Upscale node does next: blend tiles that came in, render tiles itself, or finish.

    The delivered arrays are handed over: the loop no longer holds them once this is built.
    """

    delivered: tuple[tuple[int, np.ndarray], ...] = ()
    """(tile index, rendered pixels [h, w, C] at the tile's padded size) of tiles workers delivered."""
    render: tuple[tuple[int, tuple[int, ...]], ...] = ()
    """(share index, its tile indices) of shares the master renders now, then hands in with `deliver_tiles`."""
    finished: bool = False
    """Every tile is in: nothing more will come."""


@dataclass(frozen=True)
class JobProgress:
    """How far a job's shares are, for the collector node's progress bar."""

    done: int
    total: int


class ProgressBoard:
    """The latest JobProgress of each running job: written on the loop, read from the execution thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, JobProgress] = {}

    def publish(self, job_id: str, progress: JobProgress) -> None:
        with self._lock:
            self._latest[job_id] = progress

    def read(self, job_id: str) -> JobProgress | None:
        with self._lock:
            return self._latest.get(job_id)

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._latest.pop(job_id, None)
