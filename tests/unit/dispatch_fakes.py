"""Fakes for the jobs stage's protocols (contracts.py): a share runner the test finishes by hand, a
health monitor that answers at once, and a clock the test moves. They drive the real Dispatcher and
PromptRouter in unit tests, with no ComfyUI process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.events import Events
from distributed.shares import ShareProgress, ShareResult, ShareWork
from distributed.workers.status import WorkerState, WorkerStatus


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunCall:
    """One share handed to the fake runner; the test starts, finishes or fails it."""

    worker_id: str
    share_index: int
    work: ShareWork
    on_progress: Callable[[ShareProgress], None]
    result: asyncio.Future[ShareResult]
    cancelled: bool = False

    def start(self) -> None:
        self.on_progress(ShareProgress(0, 1, None))

    def ran(self) -> None:
        """The worker reports the end of the run; its outputs are fetched next."""
        self.on_progress(ShareProgress(1, 1, None, ran=True))

    def deliver(self, collector_id: str = "4", cached: tuple[str, ...] = ("2",), image: np.ndarray | None = None) -> None:
        image = image if image is not None else np.full((1, 2, 2, 3), self.share_index / 255.0, dtype=np.float32)
        self.result.set_result(ShareResult({collector_id: image}, frozenset(cached)))

    def fail(self, error: BaseException) -> None:
        self.result.set_exception(error)


class FakeRunner:
    """A ShareRunning whose runs end when the test says so."""

    def __init__(self) -> None:
        self.calls: list[RunCall] = []

    async def run(self, work: ShareWork, worker: WorkerConfig, share_index: int,
                  on_progress: Callable[[ShareProgress], None]) -> ShareResult:
        call = RunCall(worker.id, share_index, work, on_progress, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        try:
            return await call.result
        except asyncio.CancelledError:
            call.cancelled = True
            raise

    def live(self) -> list[RunCall]:
        return [call for call in self.calls if not call.result.done() and not call.cancelled]

    def on(self, worker_id: str, share_index: int | None = None) -> RunCall | None:
        """The latest live run on a worker (of one share, if given)."""
        found = [c for c in self.live() if c.worker_id == worker_id and share_index in (None, c.share_index)]
        return found[-1] if found else None

    def handed(self) -> list[tuple[int, str]]:
        return [(call.share_index, call.worker_id) for call in self.calls]


class FakeHealth:
    """Every worker answers unless the test says otherwise; `check` may be held by a gate."""

    def __init__(self) -> None:
        self.states: dict[str, WorkerState] = {}
        self.gate: asyncio.Event | None = None
        self.checked: list[str] = []

    def status(self, worker_id: str) -> WorkerStatus:
        return WorkerStatus(self.states.get(worker_id, WorkerState.ONLINE))

    async def check(self, worker: WorkerConfig) -> WorkerStatus:
        self.checked.append(worker.id)
        if self.gate is not None:
            await self.gate.wait()
        return self.status(worker.id)

    async def wait_for_change(self, timeout: float) -> None:
        await asyncio.sleep(timeout)


@dataclass
class Pushes:
    """What would go over the websocket."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.sent.append((event, payload))

    def of(self, event: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.sent if name == event]

    def events(self) -> Events:
        return Events(self)


def write_registry(path: Path, workers: list[str], participate: bool = True, **settings: Any) -> Registry:
    path.write_text(json.dumps({
        "version": 1,
        "master": {"participate": participate},
        "settings": settings,
        "workers": [{"id": w, "name": f"Worker {w}", "type": "remote", "host": "127.0.0.1", "port": 9000 + i}
                    for i, w in enumerate(workers)],
    }))
    return Registry(path)


def shares_prompt(shares: int = 0, seed: int = 100) -> dict[str, Any]:
    """Seed -> sampler <- loader (the same in every share) -> collector "4" -> SaveImage."""
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "Loader", "inputs": {"name": "model"}},
        "3": {"class_type": "Sampler", "inputs": {"seed": ["1", 0], "model": ["2", 0]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0], "shares": shares}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }
