"""The lease every local worker's watchdog follows (see launcher.py): the master rewrites it every
few seconds while it lives, so a worker never outlives a master that was killed outright.

    <state_dir>/master.lease.json   {"pid", "updated", "hold"}

A thread rather than a loop task refreshes it, so that the lease stays fresh while the master is
alive even when its loop is busy or not running yet: while ComfyUI imports the remaining custom
nodes at start-up, for instance.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LEASE_FILE = "master.lease.json"


class Lease:
    """Writes the lease and keeps it fresh from a thread, until released."""

    def __init__(self, state_dir: Path, timeout: float) -> None:
        self._state_dir = state_dir
        self.timeout = timeout
        self.path = state_dir / LEASE_FILE
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hold(self) -> None:
        """Writes the lease and starts refreshing it; idempotent. Call it as early as possible in a
        restarted master, so that workers still running from the previous one see a fresh lease
        before their deadline."""
        if self._thread is not None:
            return
        self.write()
        self._thread = threading.Thread(target=self._refresh, name="distributed-lease", daemon=True)
        self._thread.start()

    def stop_refreshing(self) -> None:
        """Ends the refresh thread (blocking, briefly); the workers' deadline runs from the last write."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def write(self, hold: bool = False) -> None:
        """Rewrites the lease atomically. `hold` suspends the workers' deadline (clean exit, workers kept)."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lease = {"pid": os.getpid(), "updated": time.time(), "hold": hold}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(lease), encoding="utf-8")
        try:
            os.replace(temporary, self.path)
        except PermissionError:
            # Windows refuses to replace a file another process has open; the next refresh retries.
            logger.debug("lease %s busy, retrying at the next refresh", self.path)
            temporary.unlink(missing_ok=True)

    def _refresh(self) -> None:
        interval = max(0.2, self.timeout / 5)
        while not self._stop.wait(interval):
            try:
                self.write()
            except OSError as error:
                logger.warning("cannot refresh the worker lease %s: %s", self.path, error)
