"""Shares that an earlier run of this master left on its workers: found by client id and cancelled.

A master that dies mid-job (killed, crashed, power cut) leaves its shares queued or running on its
workers. Nobody will fetch their results, yet they hold the worker's GPU until they end. So every
share is queued under a client id that names the master (an id kept in its state folder, the same
across restarts) and the master's run (new at every start). Each time a worker is first seen
answering during a run, the master cancels that worker's prompts carrying its own master id and
another run id. Prompts of other masters sharing the worker, and people's own prompts, carry other
client ids and are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..config.registry import Registry
from ..errors import UnknownWorker, WorkerUnavailable
from .health import HealthMonitor
from .pool import ClientPool

logger = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "distributed"
MASTER_ID_FILE = "master-id"
SWEEP_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ShareOwner:
    """Who queued a share: this master (`master_id`) during this run of it (`run_id`)."""

    master_id: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @classmethod
    def load(cls, state_dir: Path) -> ShareOwner:
        """The master's id from its state folder, created on first use; a new run id."""
        path = state_dir / MASTER_ID_FILE
        try:
            master_id = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            master_id = ""
        if not master_id.isalnum():
            master_id = uuid.uuid4().hex[:12]
            state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(master_id, encoding="utf-8")
        return cls(master_id)

    def client_id(self, share_index: int) -> str:
        """A fresh client id for one share: its websocket and its prompt on the worker."""
        return f"{CLIENT_ID_PREFIX}-{self.master_id}-{self.run_id}-{share_index}-{uuid.uuid4().hex[:8]}"

    def left_behind(self, client_id: str | None) -> bool:
        """Whether a prompt with this client id was queued by an earlier run of this master."""
        mine = f"{CLIENT_ID_PREFIX}-{self.master_id}-"
        return bool(client_id) and client_id.startswith(mine) and not client_id.startswith(f"{mine}{self.run_id}-")


class OrphanSweeper:
    """Cancels, once per worker per run, the shares earlier runs of this master left on it."""

    def __init__(self, owner: ShareOwner, registry: Registry, health: HealthMonitor, clients: ClientPool) -> None:
        self._owner = owner
        self._registry = registry
        self._health = health
        self._clients = clients
        self._swept: set[str] = set()

    async def run(self) -> None:
        """Sweeps each worker the first time it answers; runs until cancelled, whatever a worker answers."""
        while True:
            for worker in self._registry.snapshot().workers:
                if worker.id not in self._swept and self._health.status(worker.id).state.answers:
                    await self.sweep(worker.id)
            await asyncio.sleep(SWEEP_POLL_SECONDS)  # a poll of in-memory state, not synchronisation

    async def sweep(self, worker_id: str) -> int:
        """Cancels the worker's left-behind shares; returns how many. A worker that fails to answer, or
        answers something unusable, is tried again later."""
        try:
            client = self._clients.client(self._registry.worker(worker_id))
        except UnknownWorker:
            return 0  # removed meanwhile
        try:
            items = await client.queue_items()
            left = [item for item in items if self._owner.left_behind(item.client_id)]
            for item in left:
                await client.cancel(item.prompt_id)
        except WorkerUnavailable as error:
            logger.debug("Could not look for left-behind shares on %s: %s", client.name, error)
            return 0
        except Exception:  # an answer no check foresaw must not end the sweeps of every worker
            logger.warning("Could not look for left-behind shares on %s: unexpected answer", client.name, exc_info=True)
            return 0
        self._swept.add(worker_id)
        if left:
            logger.info("Cancelled %d share(s) on worker %s that an earlier run of this master left there: %s",
                        len(left), client.name, ", ".join(item.prompt_id for item in left))
        return len(left)
