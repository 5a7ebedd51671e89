"""The distributed queue (PromptRouter), with an in-memory stand-in for ComfyUI's prompt queue and a
fake share runner: whole prompts go to the first free participant in list order, the master first;
a prompt a worker renders is running in the master's queue and ends in its history as if the master
had rendered it; a failed worker gives the prompt back; delete and interrupt reach the worker."""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distributed.config.registry import Registry
from distributed.errors import WorkerFailed, WorkerLost
from distributed.events import Events
from distributed.jobs.dispatch import Dispatcher
from distributed.jobs.hook import PromptHook
from distributed.jobs.routed import RouteState
from distributed.jobs.router import PromptRouter
from distributed.shares import ShareProgress
from tests.harness import wait_until_async
from tests.unit.queue_fakes import CLIENT, Call, FakeComfyQueue, FakeRunner, Health, whole_prompt


@dataclass
class Rig:
    router: PromptRouter
    queue: FakeComfyQueue
    runner: FakeRunner
    health: Health
    registry_path: Path

    def queue_prompts(self, *prompt_ids: str) -> None:
        """As POST /prompt does: the on-prompt hook registers the prompt, then ComfyUI queues it."""
        for seed, prompt_id in enumerate(prompt_ids):
            self.router.register(prompt_id, ("2",))
            self.queue.put(prompt_id, seed)

    def state(self, prompt_id: str) -> RouteState:
        run = self.router.run(prompt_id)
        assert run is not None
        return run.state

    async def call_on(self, worker_id: str) -> Call:
        return await wait_until_async(lambda: self.runner.on(worker_id), 5, message=f"a run on worker {worker_id}")

    async def settle(self) -> None:
        """Waits for two more passes of the router's loop: whatever it would do now, it did."""
        seen = self.queue.views
        await wait_until_async(lambda: self.queue.views >= seen + 2, 5, message="two passes of the router")


def _write_registry(path: Path, participate: bool, workers: tuple[str, ...]) -> None:
    path.write_text(json.dumps({
        "version": 1, "master": {"participate": participate},
        "workers": [{"id": w, "name": f"Worker {w}", "type": "remote", "host": "127.0.0.1", "port": 9100 + n}
                    for n, w in enumerate(workers)],
    }))


@pytest.fixture
def participate() -> bool:
    return True


@pytest.fixture
async def rig(tmp_path: Path, participate: bool) -> AsyncIterator[Rig]:
    path = tmp_path / "workers.json"
    _write_registry(path, participate, ("a", "b"))
    queue, runner, health = FakeComfyQueue(), FakeRunner(), Health()
    router = PromptRouter(Registry(path), health, runner, queue)
    serving = asyncio.ensure_future(router.serve())
    try:
        yield Rig(router, queue, runner, health, path)
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await router.stop()


# --- who takes which prompt ----------------------------------------------------------------------


async def test_an_idle_master_keeps_the_first_prompt_and_the_next_go_to_the_workers_in_list_order(rig: Rig) -> None:
    rig.queue_prompts("p1", "p2", "p3")

    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)

    assert [call.work.prompt["1"]["inputs"]["seed"] for call in rig.runner.calls] == [1, 2]
    assert [call.worker.id for call in rig.runner.calls] == ["a", "b"]
    assert rig.queue.pending_ids() == ["p1"] and rig.state("p1") == RouteState.WAITING


async def test_the_prompt_the_masters_thread_pops_runs_on_the_master(rig: Rig) -> None:
    rig.queue_prompts("p1")
    queued = rig.queue.pop()

    assert await rig.router.hold("p1", queued) is None
    assert rig.router.run("p1").participant == "master"  # type: ignore[union-attr]
    rig.queue.end_on_master("p1")
    await wait_until_async(lambda: rig.state("p1") == RouteState.DONE, 5)
    assert rig.runner.calls == []


async def test_with_the_master_busy_prompts_go_to_the_workers_in_queue_order_and_the_rest_wait(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1", "p2", "p3")

    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)
    await rig.settle()

    assert [(call.worker.id, call.work.prompt["1"]["inputs"]["seed"]) for call in rig.runner.calls] == [("a", 0), ("b", 1)]
    assert rig.queue.pending_ids() == ["p3"]


async def test_a_waiting_prompt_goes_to_the_first_worker_to_free_up(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1", "p2", "p3")
    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5)

    (await rig.call_on("b")).deliver()

    await wait_until_async(lambda: len(rig.runner.calls) == 3, 5)
    assert rig.runner.calls[2].worker.id == "b" and rig.runner.calls[2].work.prompt["1"]["inputs"]["seed"] == 2


# --- a prompt a worker renders, as the master's queue and history show it ------------------------


async def test_a_prompt_on_a_worker_is_running_in_the_masters_queue(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")

    await rig.call_on("a")

    assert rig.queue.running_ids() == ["someone-else", "p1"] and rig.queue.pending_ids() == []


async def test_a_prompt_a_worker_rendered_ends_in_the_history_as_the_master_would_write_it(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    call = await rig.call_on("a")

    call.deliver()
    await wait_until_async(lambda: "p1" in rig.queue.history, 5)

    entry = rig.queue.history["p1"]
    assert entry["prompt"][1:3] == ("p1", whole_prompt(0)) and len(entry["prompt"]) == 5  # the user's prompt, nothing sensitive
    assert entry["outputs"] == {"2": {"images": [{"filename": "q_00000_.png", "subfolder": "", "type": "output"}]}}
    assert entry["meta"]["2"]["display_node"] == "2" and entry["meta"]["2"]["distributed_worker"] == "Worker a"
    messages = entry["status"]["messages"]
    assert [name for name, _ in messages] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["status"]["status_str"] == "success" and messages[0][1]["timestamp"] <= messages[-1][1]["timestamp"]
    assert rig.queue.running_ids() == ["someone-else"]


async def test_the_client_hears_of_a_prompt_on_a_worker_what_comfyui_would_send(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    call = await rig.call_on("a")

    call.on_progress(ShareProgress(0, 1, "1"))
    call.on_progress(ShareProgress(2, 4, "1"))
    call.on_progress(ShareProgress(0, 1, "2"))
    call.deliver()
    await wait_until_async(lambda: "p1" in rig.queue.history, 5)

    assert rig.queue.events_of("p1") == ["execution_start", "execution_cached", "executing", "progress", "executing", "executed",
                                         "execution_success", "executing"]
    sent = [(event, data) for event, data, client in rig.queue.events if client == CLIENT]
    assert len(sent) == len(rig.queue.events)
    assert sent[2][1] == {"node": "1", "display_node": "1", "prompt_id": "p1"}
    assert sent[3][1] == {"value": 2, "max": 4, "prompt_id": "p1", "node": "1"}
    assert sent[5][1]["output"] == rig.queue.history["p1"]["outputs"]["2"] and sent[5][1]["node"] == "2"
    assert sent[-1][1] == {"node": None, "prompt_id": "p1"}


async def test_a_worker_naming_a_node_outside_the_prompt_is_not_relayed(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    call = await rig.call_on("a")

    call.on_progress(ShareProgress(1, 2, "<img src=x>"))

    assert rig.queue.events_of("p1") == ["execution_start", "execution_cached"]


async def test_a_worker_renders_only_the_outputs_comfyui_was_asked_for(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    prompt = {**whole_prompt(5), "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    rig.router.register("p1", ("2", "3"))
    heapq.heappush(rig.queue.pending, (5, "p1", prompt, {"client_id": CLIENT}, ["3"], {}))  # "run selected outputs"

    call = await rig.call_on("a")

    assert call.work.collector_ids == ("3",) and set(call.work.prompt) == {"1", "3"}
    assert call.work.prompt["3"]["class_type"] == "PreviewImage"


# --- failures ------------------------------------------------------------------------------------


async def test_a_prompt_a_worker_fails_goes_back_to_its_place_and_another_worker_takes_it(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    (await rig.call_on("a")).fail(WorkerLost("Worker a", "died"))

    call = await rig.call_on("b")

    assert call.work.prompt["1"]["inputs"]["seed"] == 0
    assert rig.router.run("p1").attempts == ["worker 'Worker a': died"]  # type: ignore[union-attr]
    assert rig.queue.running_ids() == ["someone-else", "p1"]


async def test_a_prompt_every_worker_failed_waits_for_the_master_that_takes_part(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    (await rig.call_on("a")).fail(WorkerLost("Worker a", "died"))
    (await rig.call_on("b")).fail(WorkerFailed("Worker b", "out of memory"))

    await wait_until_async(lambda: rig.queue.pending_ids() == ["p1"], 5)
    rig.queue.end_on_master("someone-else")
    queued = rig.queue.pop()

    assert await rig.router.hold("p1", queued) is None  # the master renders it


@pytest.mark.parametrize("participate", [False])
async def test_a_prompt_no_participant_can_run_ends_in_error_naming_each_worker(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()  # the master's thread is busy elsewhere
    rig.queue_prompts("p1")
    (await rig.call_on("a")).fail(WorkerLost("Worker a", "died"))
    (await rig.call_on("b")).fail(WorkerFailed("Worker b", "out of memory"))

    await wait_until_async(lambda: "p1" in rig.queue.history, 5)

    status = rig.queue.history["p1"]["status"]
    assert status["status_str"] == "error" and [name for name, _ in status["messages"]][-1] == "execution_error"
    error = status["messages"][-1][1]
    assert error["exception_message"] == ("Distributed queue: no participant could run it: worker 'Worker a': died; "
                                          "worker 'Worker b': out of memory")
    assert error["node_id"] == "2" and error["node_type"] == "SaveImage"
    assert rig.queue.events_of("p1")[-2:] == ["execution_error", "executing"]


# --- delete and interrupt ------------------------------------------------------------------------


async def test_a_prompt_deleted_from_the_masters_queue_is_dropped(rig: Rig) -> None:
    rig.health.offline = {"a", "b"}  # nobody free: it waits in the queue
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    await rig.settle()

    rig.queue.delete("p1")

    await wait_until_async(lambda: rig.state("p1") == RouteState.CANCELLED, 5)
    assert rig.runner.calls == [] and "p1" not in rig.queue.history


async def test_interrupting_a_prompt_on_a_worker_stops_it_there_and_ends_it_interrupted(rig: Rig) -> None:
    rig.queue.put("someone-else")
    rig.queue.pop()
    rig.queue_prompts("p1")
    call = await rig.call_on("a")
    call.on_progress(ShareProgress(1, 4, "1"))

    assert rig.router.interrupt("p1") is True

    await wait_until_async(lambda: call.cancelled, 5)
    status = rig.queue.history["p1"]["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
    assert status["messages"][-1][1]["node_id"] == "1"
    assert rig.queue.running_ids() == ["someone-else"]


async def test_an_interrupt_for_a_prompt_no_worker_runs_is_left_to_comfyui(rig: Rig) -> None:
    rig.queue_prompts("p1")
    queued = rig.queue.pop()
    await rig.router.hold("p1", queued)  # the master renders it

    assert rig.router.interrupt("p1") is False and rig.router.interrupt("unknown") is False


# --- a master that does not render --------------------------------------------------------------


@pytest.mark.parametrize("participate", [False])
async def test_a_master_that_does_not_render_holds_the_popped_prompt_while_a_worker_renders_it(rig: Rig) -> None:
    rig.queue_prompts("p1")
    holding = asyncio.ensure_future(rig.router.hold("p1", rig.queue.pop()))
    call = await rig.call_on("a")
    call.on_progress(ShareProgress(0, 1, "1"))

    call.deliver()
    outcome = await asyncio.wait_for(holding, 5)

    assert outcome is not None and outcome.success
    assert outcome.outputs == {"2": {"images": [{"filename": "q_00000_.png", "subfolder": "", "type": "output"}]}}
    assert [name for name, _ in outcome.messages] == ["execution_start", "execution_cached", "execution_success"]
    assert "p1" not in rig.queue.history  # ComfyUI's own prompt worker writes it, from the outcome
    assert rig.queue.events_of("p1") == ["execution_start", "execution_cached", "executing", "executed", "execution_success"]


@pytest.mark.parametrize("participate", [False])
async def test_an_interrupt_of_the_held_prompt_stops_it_on_its_worker(rig: Rig) -> None:
    rig.queue_prompts("p1")
    holding = asyncio.ensure_future(rig.router.hold("p1", rig.queue.pop()))
    call = await rig.call_on("a")

    holding.cancel()  # the bridge cancels it when the thread sees an interrupt
    with pytest.raises(asyncio.CancelledError):
        await holding
    outcome = rig.router.interrupted("p1")

    await wait_until_async(lambda: call.cancelled, 5)
    assert not outcome.success and outcome.messages[-1][0] == "execution_interrupted"
    assert rig.state("p1") == RouteState.INTERRUPTED


@pytest.mark.parametrize("participate", [False])
async def test_a_held_prompt_goes_to_the_master_once_it_takes_part(rig: Rig) -> None:
    rig.health.offline = {"a", "b"}
    rig.queue_prompts("p1")
    holding = asyncio.ensure_future(rig.router.hold("p1", rig.queue.pop()))
    await rig.settle()

    _write_registry(rig.registry_path, True, ("a", "b"))

    assert await asyncio.wait_for(holding, 5) is None
    assert rig.router.run("p1").participant == "master"  # type: ignore[union-attr]


# --- what the on-prompt hook routes ------------------------------------------------------------


def _hook(tmp_path: Path, router: PromptRouter) -> PromptHook:
    registry = Registry(tmp_path / "workers.json")
    registry.update(lambda config: config.model_copy(update={"settings": config.settings.model_copy(update={"distributed_queue": True})}))
    return PromptHook(registry, Dispatcher(registry, Health(), Events(lambda event, data: None), FakeRunner()), router,
                      lambda class_type: class_type in ("SaveImage", "PreviewImage", "DistTestSaveText"))


def test_the_hook_queues_a_routed_prompt_exactly_as_sent(tmp_path: Path) -> None:
    router = PromptRouter(Registry(tmp_path / "workers.json"), Health(), FakeRunner(), FakeComfyQueue())
    body = {"prompt": whole_prompt(3), "client_id": CLIENT, "partial_execution_targets": ["2"]}

    answer = _hook(tmp_path, router)(json.loads(json.dumps(body)))

    assert answer == {**body, "prompt_id": answer["prompt_id"]}
    assert router.run(answer["prompt_id"]).outputs == ("2",)  # type: ignore[union-attr]


def test_a_prompt_whose_outputs_are_not_all_images_saved_as_named_is_not_routed(tmp_path: Path) -> None:
    router = PromptRouter(Registry(tmp_path / "workers.json"), Health(), FakeRunner(), FakeComfyQueue())
    hook = _hook(tmp_path, router)
    text = {**whole_prompt(1), "3": {"class_type": "DistTestSaveText", "inputs": {"text": "x"}}}
    linked_prefix = whole_prompt(2)
    linked_prefix["2"]["inputs"]["filename_prefix"] = ["4", 0]

    answers = [hook({"prompt": prompt}) for prompt in (text, linked_prefix)]

    assert router.runs() == [] and all("prompt_id" not in answer for answer in answers)


def test_a_prompt_with_a_distributed_upscale_runs_on_the_master_which_hands_its_tiles_out(tmp_path: Path) -> None:
    router = PromptRouter(Registry(tmp_path / "workers.json"), Health(), FakeRunner(), FakeComfyQueue())
    prompt = whole_prompt(4)
    prompt["3"] = {"class_type": "DistributedUpscale", "inputs": {"image": ["1", 0]}}
    prompt["2"]["inputs"]["images"] = ["3", 0]

    answer = _hook(tmp_path, router)({"prompt": prompt})

    assert router.runs() == [] and "prompt_id" not in answer



@pytest.mark.parametrize("participate", [False])
async def test_a_global_interrupt_stops_what_workers_render_for_an_orchestrating_master(rig: Rig) -> None:
    rig.queue_prompts("p1", "p2")  # the idle thread takes p1 and waits on its worker; p2 is taken for the other worker
    holding = asyncio.ensure_future(rig.router.hold("p1", rig.queue.pop()))
    await wait_until_async(lambda: len(rig.runner.calls) == 2, 5, message="both prompts on workers")
    taken = next(call for call in rig.runner.calls if call.work.prompt["1"]["inputs"]["seed"] == 1)

    rig.router.interrupt_all()

    await wait_until_async(lambda: taken.cancelled, 5, message="the taken prompt's run to be cancelled")
    assert rig.state("p2") == RouteState.INTERRUPTED and rig.state("p1") == RouteState.RUNNING
    holding.cancel()  # what ComfyUI's own interrupt does to the thread that holds p1
    await asyncio.gather(holding, return_exceptions=True)


async def test_a_global_interrupt_leaves_a_participating_masters_workers_alone(rig: Rig) -> None:
    rig.queue_prompts("p1", "p2")  # the idle master keeps p1; p2 goes to worker a
    call = await rig.call_on("a")

    rig.router.interrupt_all()
    await rig.settle()

    assert not call.cancelled and rig.state("p2") == RouteState.RUNNING
