"""ComfyUI's prompt queue as the distributed queue's router uses it (jobs/router.py `ComfyQueue`).

ComfyUI's execution thread pops a prompt from the pending heap into `currently_running` under a new
task id (`PromptQueue.get`), executes it, and ends it with `PromptQueue.task_done`, which writes the
history entry. A prompt a worker renders goes the same way, driven from the server loop: `take`
moves it into the running list exactly as `get` does, so `/queue` and the sidebar show it running;
`task_done` ends it with the history entry the executor would have written; `give_back` returns it
to the pending heap, at its old place, when its worker failed. Every change happens under the
queue's own mutex, so the execution thread never sees a half-moved prompt.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
from typing import Any

import numpy as np

from ..jobs.routed import QueuedPrompt, RoutedOutcome
from . import routed_images


def without_sensitive(item: tuple) -> tuple:
    """A queue item as ComfyUI keeps it in the history: without its sensitive extra data (item[5])."""
    return item[:5] + item[6:]


class ComfyPromptQueue:
    """The master's `PromptServer.prompt_queue`, driven for prompts the router hands to workers."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._taken: dict[str, tuple[int, tuple]] = {}
        """prompt id -> (task id in `currently_running`, the queue item as it was pending)."""

    @property
    def _queue(self) -> Any:
        return self._server.prompt_queue

    def view(self) -> tuple[list[str], list[str]]:
        running, pending = self._queue.get_current_queue_volatile()
        return [item[1] for item in running], [item[1] for item in sorted(pending, key=lambda item: (item[0], item[1]))]

    def take(self, prompt_id: str) -> QueuedPrompt | None:
        queue = self._queue
        with queue.mutex:
            position = next((n for n, item in enumerate(queue.queue) if item[1] == prompt_id), None)
            if position is None:
                return None
            item = queue.queue.pop(position)
            heapq.heapify(queue.queue)
            task_id = queue.task_counter
            queue.task_counter += 1
            queue.currently_running[task_id] = copy.deepcopy(item)
            self._taken[prompt_id] = (task_id, item)
            self._server.queue_updated()
        return QueuedPrompt.of(item[2], item[4], item[3])

    def give_back(self, prompt_id: str) -> None:
        task_id, item = self._taken.pop(prompt_id)
        queue = self._queue
        with queue.mutex:
            queue.currently_running.pop(task_id, None)
            queue.put(item)  # re-entrant mutex; wakes the execution thread if it waits for work

    def task_done(self, prompt_id: str, outcome: RoutedOutcome) -> None:
        import execution  # ComfyUI's module, loaded long before any prompt runs

        task_id, _ = self._taken.pop(prompt_id)
        status = execution.PromptQueue.ExecutionStatus(status_str="success" if outcome.success else "error",
                                                       completed=outcome.success, messages=list(outcome.messages))
        self._queue.task_done(task_id, outcome.history_result(), status=status, process_item=without_sensitive)

    def succeeded(self, prompt_id: str) -> bool | None:
        entry = self._queue.get_history(prompt_id=prompt_id, map_function=lambda entry: entry.get("status"))
        status = entry.get(prompt_id)
        return status.get("status_str") == "success" if isinstance(status, dict) else None

    def send(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        self._server.send_sync(event, data, client_id)

    async def save(self, node_id: str, images: np.ndarray, queued: QueuedPrompt) -> list[dict[str, str]]:
        node = queued.prompt[node_id]
        return await asyncio.to_thread(routed_images.save, node["class_type"], node["inputs"].get("filename_prefix", "ComfyUI"),
                                       images, queued.prompt, queued.extra_pnginfo)
