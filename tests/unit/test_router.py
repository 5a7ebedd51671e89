"""The distributed queue (PromptRouter) with a fake share runner: whole prompts go to the first free
participant in list order, the master first, and leave no run behind when the master drops them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from distributed.errors import WorkerLost
from distributed.jobs.router import PromptRouter, RoutedPrompt, RouteState
from distributed.shares import ShareResult
from tests.harness import wait_until_async
from tests.unit.dispatch_fakes import FakeHealth, FakeRunner, write_registry


def _prompt(seed: int) -> dict:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "q"}},
    }


@dataclass
class Queue:
    running: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    history: set[str] = field(default_factory=set)


@dataclass
class RouterRig:
    router: PromptRouter
    runner: FakeRunner
    queue: Queue

    def submit(self, *prompt_ids: str) -> list[str]:
        run_ids = []
        for seed, prompt_id in enumerate(prompt_ids):
            proxy = self.router.submit(_prompt(seed), prompt_id, ("2",))
            run_ids.append(proxy["distributed_queue"]["inputs"]["run_id"])
            self.queue.pending.append(prompt_id)
        return run_ids

    def run(self, prompt_id: str) -> RoutedPrompt:
        return next(run for run in self.router.runs() if run.prompt_id == prompt_id)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[RouterRig]:
    queue, runner = Queue(), FakeRunner()
    registry = write_registry(tmp_path / "workers.json", ["a", "b"])
    router = PromptRouter(registry, FakeHealth(), runner, lambda: (list(queue.running), list(queue.pending)),
                          lambda prompt_id: prompt_id in queue.history)
    serving = asyncio.ensure_future(router.serve())
    try:
        yield RouterRig(router, runner, queue)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await router.stop()


async def test_an_idle_master_keeps_the_first_prompt_and_the_next_go_to_the_workers_in_list_order(rig: RouterRig) -> None:
    rig.submit("p1", "p2", "p3")

    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)

    assert rig.run("p1").state == RouteState.WAITING
    assert (rig.run("p2").participant, rig.run("p3").participant) == ("a", "b")


async def test_with_the_master_busy_prompts_go_to_the_workers_in_queue_order_and_the_rest_wait(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    rig.submit("p1", "p2", "p3")

    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)
    await asyncio.sleep(0.3)

    assert (rig.run("p1").participant, rig.run("p2").participant) == ("a", "b")
    assert rig.run("p3").state == RouteState.WAITING and len(rig.runner.calls) == 2


async def test_a_waiting_prompt_goes_to_the_first_worker_to_free_up(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    rig.submit("p1", "p2", "p3")
    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)

    rig.runner.on("b").result.set_result(_result())  # type: ignore[union-attr]

    await wait_until_async(lambda: rig.run("p3").participant == "b", 5)


async def test_a_prompt_a_worker_fails_waits_for_another_participant(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    rig.submit("p1")
    await wait_until_async(lambda: rig.runner.on("a") is not None, 5)

    rig.runner.on("a").fail(WorkerLost("Worker a", "died"))  # type: ignore[union-attr]

    await wait_until_async(lambda: rig.run("p1").participant == "b", 5)
    assert rig.run("p1").attempts == ["worker 'Worker a': died"]


async def test_a_prompt_deleted_from_the_masters_queue_is_stopped_on_its_worker(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    rig.submit("p1")
    call = await wait_until_async(lambda: rig.runner.on("a"), 5)

    rig.queue.pending.remove("p1")

    await wait_until_async(lambda: call.cancelled, 5)
    assert rig.run("p1").state == RouteState.CANCELLED


async def test_the_proxy_of_an_interrupted_prompt_leaves_no_run_behind(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    (run_id,) = rig.submit("p1")
    call = await wait_until_async(lambda: rig.runner.on("a"), 5)
    waiting = asyncio.ensure_future(rig.router.result(run_id, "p1"))
    await asyncio.sleep(0.05)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert call.cancelled and rig.run("p1").state == RouteState.CANCELLED


async def test_a_worker_result_reaches_the_proxy(rig: RouterRig) -> None:
    rig.queue.running.append("someone-else")
    (run_id,) = rig.submit("p1")
    call = await wait_until_async(lambda: rig.runner.on("a"), 5)
    call.result.set_result(_result())

    result = await asyncio.wait_for(rig.router.result(run_id, "p1"), 5)

    assert result is not None and result.participant_name == "Worker a" and set(result.images) == {"2"}


def _result() -> ShareResult:
    return ShareResult({"2": np.zeros((1, 8, 8, 3), dtype=np.float32)})
