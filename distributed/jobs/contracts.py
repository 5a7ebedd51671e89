"""What the jobs stage needs from the stages below it, as small protocols.

The dispatcher and the distributed queue depend on these, not on the classes behind them: the
composition root wires in the real share runner (transport/runner.py) and health monitor
(workers/health.py); the unit tests wire in fakes that answer at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..config.models import WorkerConfig
from ..shares import ShareProgress, ShareResult, ShareWork
from ..workers.status import WorkerStatus

Clock = Callable[[], float]
"""Seconds on a monotonic clock (time.monotonic)."""

MasterQueue = Callable[[], tuple[list[str], list[str]]]
"""(running prompt ids, pending prompt ids in execution order) of the master's ComfyUI queue."""


class ShareRunning(Protocol):
    """Runs one share on one worker and returns each collector's output."""

    async def run(
        self, work: ShareWork, worker: WorkerConfig, share_index: int, on_progress: Callable[[ShareProgress], None],
    ) -> ShareResult:
        """Raises WorkerUnavailable (naming the worker and why) when the worker cannot deliver.

        `on_progress` is called first when the worker starts the share (it left the worker's queue),
        then at each node and step, and once with `ran` set when the worker has finished it."""
        ...


class WorkerAvailability(Protocol):
    """Which workers answer now."""

    def status(self, worker_id: str) -> WorkerStatus: ...

    async def check(self, worker: WorkerConfig) -> WorkerStatus:
        """Asks the worker now, and records the answer."""
        ...

    async def wait_for_change(self, timeout: float) -> None:
        """Returns after the next change of any worker's status, or after `timeout` seconds."""
        ...
