"""Each worker's `/object_info`, kept a minute: it is large, and the shares of one job come together.

It says which node classes and model files a worker has (`preflight`) and which input files it
already holds (`media`), and whether it runs this extension (it then lists the sink node).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..workers.client import WorkerClient

OBJECT_INFO_TTL_SECONDS = 60.0


@dataclass(frozen=True)
class ObjectInfo:
    info: dict[str, Any]
    fetched_at: float
    """Wall-clock time the worker answered, compared with upload times by `media`."""


class ObjectInfoCache:
    """Each worker's `/object_info`, kept a minute: it is large, and shares of one job come together."""

    def __init__(self, ttl: float = OBJECT_INFO_TTL_SECONDS) -> None:
        self._ttl = ttl
        self._entries: dict[str, ObjectInfo] = {}
        self._fetches: dict[str, asyncio.Task[ObjectInfo]] = {}

    async def get(self, client: WorkerClient, fresh: bool = False) -> tuple[ObjectInfo, bool]:
        """(object info, whether it came from the cache); one fetch at a time per worker."""
        key = client.identity
        entry = self._entries.get(key)
        if entry is not None and not fresh and time.time() - entry.fetched_at < self._ttl:
            return entry, True
        task = self._fetches.get(key)
        if task is None or task.done():
            task = asyncio.ensure_future(self._fetch(client))
            self._fetches[key] = task
        entry = await asyncio.shield(task)
        self._entries[key] = entry
        return entry, False

    async def _fetch(self, client: WorkerClient) -> ObjectInfo:
        info = await client.object_info()
        return ObjectInfo(info, time.time())
