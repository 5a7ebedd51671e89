"""Stand-ins for the distributed queue's unit tests: ComfyUI's prompt queue behind the router's port,
a share runner whose runs the test finishes, and worker health."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distributed.config.models import WorkerConfig
from distributed.jobs.routed import QueuedPrompt, RoutedOutcome
from distributed.shares import ShareProgress, ShareResult, ShareWork
from distributed.workers.status import WorkerState, WorkerStatus

CLIENT = "client-1"


def whole_prompt(seed: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "q"}},
    }


class FakeComfyQueue:
    """An in-memory stand-in for ComfyUI's PromptQueue (pending heap, running items by task id, history)
    and its server's send_sync, seen through the router's port. `pop` and `end_on_master` play
    ComfyUI's execution thread."""

    def __init__(self) -> None:
        self.pending: list[tuple] = []
        self.running: dict[int, tuple] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, dict[str, Any], str | None]] = []
        self.views = 0
        self._numbers = itertools.count()
        self._tasks = itertools.count()
        self._taken: dict[str, int] = {}

    # --- what ComfyUI and its users do ----------------------------------------------------------

    def put(self, prompt_id: str, seed: int = 1) -> None:
        extra = {"client_id": CLIENT, "extra_pnginfo": {"workflow": {"nodes": [seed]}}, "create_time": 1}
        heapq.heappush(self.pending, (next(self._numbers), prompt_id, whole_prompt(seed), extra, ["2"], {"api_key": "secret"}))

    def pop(self) -> QueuedPrompt:
        """The execution thread takes the first pending prompt (PromptQueue.get)."""
        item = heapq.heappop(self.pending)
        self.running[next(self._tasks)] = item
        return QueuedPrompt.of(item[2], item[4], item[3])

    def end_on_master(self, prompt_id: str, success: bool = True) -> None:
        task = next(task for task, item in self.running.items() if item[1] == prompt_id)
        item = self.running.pop(task)
        self.history[prompt_id] = {"prompt": item[:5], "outputs": {}, "status": {"status_str": "success" if success else "error"}}

    def delete(self, prompt_id: str) -> None:
        """POST /queue {"delete": [prompt_id]}."""
        self.pending = [item for item in self.pending if item[1] != prompt_id]
        heapq.heapify(self.pending)

    def running_ids(self) -> list[str]:
        return [item[1] for item in self.running.values()]

    def pending_ids(self) -> list[str]:
        return [item[1] for item in sorted(self.pending)]

    def events_of(self, prompt_id: str) -> list[str]:
        return [event for event, data, _ in self.events if data.get("prompt_id") == prompt_id]

    # --- the router's port ------------------------------------------------------------------------

    def view(self) -> tuple[list[str], list[str]]:
        self.views += 1
        return self.running_ids(), self.pending_ids()

    def take(self, prompt_id: str) -> QueuedPrompt | None:
        item = next((item for item in self.pending if item[1] == prompt_id), None)
        if item is None:
            return None
        self.delete(prompt_id)
        task = next(self._tasks)
        self.running[task] = item
        self._taken[prompt_id] = task
        return QueuedPrompt.of(item[2], item[4], item[3])

    def give_back(self, prompt_id: str) -> None:
        heapq.heappush(self.pending, self.running.pop(self._taken.pop(prompt_id)))

    def task_done(self, prompt_id: str, outcome: RoutedOutcome) -> None:
        item = self.running.pop(self._taken.pop(prompt_id))
        self.history[prompt_id] = {"prompt": item[:5], **outcome.history_result(),
                                   "status": {"status_str": "success" if outcome.success else "error",
                                              "completed": outcome.success, "messages": [list(m) for m in outcome.messages]}}

    def succeeded(self, prompt_id: str) -> bool | None:
        entry = self.history.get(prompt_id)
        return entry["status"]["status_str"] == "success" if entry else None

    def send(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        self.events.append((event, data, client_id))

    async def save(self, node_id: str, images: np.ndarray, queued: QueuedPrompt) -> list[dict[str, str]]:
        prefix = queued.prompt[node_id]["inputs"]["filename_prefix"]
        return [{"filename": f"{prefix}_{n:05}_.png", "subfolder": "", "type": "output"} for n in range(len(images))]


@dataclass
class Call:
    work: ShareWork
    worker: WorkerConfig
    on_progress: Callable[[ShareProgress], None]
    result: asyncio.Future
    cancelled: bool = False

    def deliver(self) -> None:
        self.result.set_result(ShareResult({node_id: np.zeros((1, 8, 8, 3), dtype=np.float32) for node_id in self.work.collector_ids}))

    def fail(self, error: Exception) -> None:
        self.result.set_exception(error)


@dataclass
class FakeRunner:
    calls: list[Call] = field(default_factory=list)

    async def run(self, work: ShareWork, worker: WorkerConfig, share_index: int, on_progress: Callable[[ShareProgress], None]) -> Any:
        call = Call(work, worker, on_progress, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        try:
            return await call.result
        except asyncio.CancelledError:
            call.cancelled = True
            raise

    def on(self, worker_id: str) -> Call | None:
        return next((call for call in reversed(self.calls) if call.worker.id == worker_id), None)


@dataclass
class Health:
    offline: set[str] = field(default_factory=set)

    def status(self, worker_id: str) -> WorkerStatus:
        return WorkerStatus(WorkerState.OFFLINE if worker_id in self.offline else WorkerState.ONLINE)

    async def check(self, worker: WorkerConfig) -> WorkerStatus:
        return self.status(worker.id)

    async def wait_for_change(self, timeout: float) -> None:
        return None
