"""Every event this extension pushes to the browser, with its payload, in one place.

Events travel over ComfyUI's own websocket (`PromptServer.send_sync`), which is thread-safe, so the
same publisher serves the server loop and ComfyUI's execution thread. Names follow
`distributed.<noun>_<verb>`; payloads are snapshots, not deltas, so a panel that missed one event is
right again after the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], None]

REGISTRY_CHANGED = "distributed.registry_changed"
WORKER_STATUS = "distributed.worker_status"
JOB_UPDATE = "distributed.job_update"
SHARE_REASSIGNED = "distributed.share_reassigned"
WORKER_SKIPPED = "distributed.worker_skipped"
SHARE_COPIED = "distributed.share_copied"
MODEL_COPY = "distributed.model_copy"
POOLS_CHANGED = "distributed.pools_changed"
POOL_ALERT = "distributed.pool_alert"


class Revisions:
    """Numbers snapshots so that a panel keeps the newer of a push and an HTTP answer.

    The two travel on different connections, so either may arrive first. Numbers are the wall clock in
    microseconds, or one more than the last when the clock has not moved past it: a restarted master
    numbers above its predecessor, so a panel that outlived it takes its snapshots.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last


class Events:
    """Publishes events through an injected `send(event, payload)`."""

    def __init__(self, send: Send) -> None:
        self._send = send

    def registry_changed(self, snapshot: dict[str, Any]) -> None:
        self._emit(REGISTRY_CHANGED, snapshot)

    def worker_status(self, worker_id: str, status: dict[str, Any]) -> None:
        self._emit(WORKER_STATUS, {"worker_id": worker_id, "status": status})

    def job_update(self, job_snapshot: dict[str, Any]) -> None:
        self._emit(JOB_UPDATE, job_snapshot)

    def share_reassigned(self, job_id: str, share_index: int, from_worker: str, reason: str) -> None:
        self._emit(SHARE_REASSIGNED, {"job_id": job_id, "share_index": share_index, "from_worker": from_worker, "reason": reason})

    def share_copied(self, job_id: str, share_index: int, to_worker: str, from_worker: str, reason: str) -> None:
        self._emit(SHARE_COPIED, {"job_id": job_id, "share_index": share_index, "to_worker": to_worker,
                                  "from_worker": from_worker, "reason": reason})

    def worker_skipped(self, job_id: str, worker_id: str, reason: str) -> None:
        self._emit(WORKER_SKIPPED, {"job_id": job_id, "worker_id": worker_id, "reason": reason})

    def model_copy(self, copy_snapshot: dict[str, Any]) -> None:
        """A copy of model files to a worker: its files, bytes done, speed and time left."""
        self._emit(MODEL_COPY, copy_snapshot)

    def pools_changed(self, snapshot: dict[str, Any]) -> None:
        self._emit(POOLS_CHANGED, snapshot)

    def pool_alert(self, pool: str, severity: str, summary: str, detail: str) -> None:
        """Something about a pool a user should hear of at once (a toast): severity is error, warn or info."""
        self._emit(POOL_ALERT, {"pool": pool, "severity": severity, "summary": summary, "detail": detail})

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        try:
            self._send(event, payload)
        except Exception:
            logger.exception("Could not publish %s", event)
