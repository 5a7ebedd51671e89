"""Runs one share on one stock worker: open its websocket, queue the prompt, watch, fetch the images.

The websocket is opened with our own client id before the prompt is queued, so no event of the run
can be missed; ComfyUI sends progress only to the client that queued the prompt. Its heartbeat tells
a frozen or cut-off worker from a long-running node. Whatever ends a share early (an error, the job
being cancelled, an interrupt on the master), the prompt is removed from the worker in the background.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import numpy as np

from . import gather
from .client import Message, WorkerClient, describe_execution_error
from .errors import WorkerFailed, WorkerLost, WorkerUnavailable
from .graph import Prompt
from .registry import Registry
from .scheduler import Share

HISTORY_SETTLE_SECONDS = 10.0


class ShareRunner:
    """Runs shares on stock workers; holds the background cancellations it sends."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._cleanups: set[asyncio.Task] = set()
        """Cancellations sent to workers in the background, so a frozen worker never holds up a job."""

    async def run(
        self, prompt: Prompt, collector_ids: tuple[str, ...], share: Share, client: WorkerClient, on_progress: Callable[[], None]
    ) -> dict[str, np.ndarray]:
        """Queues a share's prompt on a stock worker, watches it, and fetches its images per collector."""
        client_id = f"distributed-{share.index}-{uuid.uuid4().hex[:12]}"
        heartbeat = max(1.0, self._registry.snapshot().settings.worker_timeout / 2)
        prompt_id: str | None = None
        try:
            async with client.events(client_id, heartbeat) as messages:
                prompt_id = await client.submit(prompt, client_id)
                try:
                    await self._watch(share, client, messages, prompt_id, on_progress)
                except WorkerLost:
                    if await self._finished_in_history(client, prompt_id) is None:
                        raise
            entry = await self._settled_history(client, prompt_id)
            return await gather.fetch_outputs(client, entry, collector_ids)
        except BaseException:
            if prompt_id is not None:
                cleanup = asyncio.ensure_future(client.cancel(prompt_id))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
            raise

    async def _watch(
        self, share: Share, client: WorkerClient, messages: AsyncIterator[Message], prompt_id: str, on_progress: Callable[[], None]
    ) -> None:
        async for message in messages:
            owner = message.data.get("prompt_id")
            if owner is not None and owner != prompt_id:
                continue
            if message.type == "execution_error":
                raise WorkerFailed(client.name, describe_execution_error(message.data))
            if message.type == "execution_interrupted":
                raise WorkerFailed(client.name, "the run was interrupted on the worker")
            if message.type == "execution_success":
                return
            if message.type == "executing" and owner == prompt_id and message.data.get("node") is None:
                return
            if message.type == "progress":
                share.progress = {"value": message.data.get("value"), "max": message.data.get("max"), "node": message.data.get("node")}
                on_progress()
            elif message.type == "executing" and owner == prompt_id:
                share.progress = {"value": 0, "max": 1, "node": message.data.get("node")}
                on_progress()
        raise WorkerLost(client.name, "websocket ended")

    async def _finished_in_history(self, client: WorkerClient, prompt_id: str) -> dict | None:
        try:
            entry = await client.history(prompt_id)
        except WorkerUnavailable:
            return None
        return entry if entry and entry.get("status", {}).get("completed") is not None else None

    async def _settled_history(self, client: WorkerClient, prompt_id: str) -> dict:
        """The history entry; ComfyUI writes it just after it reports success, so wait briefly."""
        deadline = time.monotonic() + HISTORY_SETTLE_SECONDS
        while True:
            entry = await client.history(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str") == "error" or status.get("completed") is False:
                    messages = [m for m in status.get("messages", []) if isinstance(m, list) and m and m[0] == "execution_error"]
                    cause = describe_execution_error(messages[0][1]) if messages else "the run ended with an error"
                    raise WorkerFailed(client.name, cause)
                return entry
            if time.monotonic() > deadline:
                raise WorkerLost(client.name, f"reported success but its history has no entry for {prompt_id}")
            await asyncio.sleep(0.05)

