"""The nodes the master adds to a prompt answer only the master: a prompt queued by anyone else that holds
them (with a job id read from the API or the queue) is refused, and nothing it sent is used. No prompt
passes for a distributed one by borrowing its prompt id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distributed.config.registry import Registry
from distributed.errors import JobFailed
from distributed.events import Events
from distributed.jobs.dispatch import Dispatcher
from distributed.jobs.hook import PromptHook
from distributed.jobs.job import MASTER
from distributed.jobs.router import PromptRouter
from distributed.jobs.scheduler import ShareQueue
from distributed.shares import Share
from distributed.workers.status import WorkerState, WorkerStatus
from tests.unit.queue_fakes import FakeComfyQueue

PROMPT = {
    "1": {"class_type": "DistributedSeed", "inputs": {"seed": 41}},
    "2": {"class_type": "SrcLike", "inputs": {"seed": ["1", 0]}},
    "4": {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}},
}
WHOLE = {"1": {"class_type": "SrcLike", "inputs": {}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}


class _Nobody:
    """No worker answers; nothing runs remotely in these tests."""

    def status(self, worker_id: str) -> WorkerStatus:
        return WorkerStatus(WorkerState.OFFLINE)

    async def check(self, worker: object) -> WorkerStatus:
        return WorkerStatus(WorkerState.OFFLINE)

    async def wait_for_change(self, timeout: float) -> None:
        return None


class _NoRunner:
    async def run(self, *args: object) -> dict:
        raise AssertionError("nothing is sent to a worker here")


def _services(tmp_path: Path) -> tuple[Registry, Dispatcher, PromptRouter]:
    registry = Registry(tmp_path / "workers.json")
    dispatcher = Dispatcher(registry, _Nobody(), Events(lambda event, data: None), _NoRunner())
    router = PromptRouter(registry, _Nobody(), _NoRunner(), FakeComfyQueue())
    return registry, dispatcher, router


def _job_left_to_the_master(dispatcher: Dispatcher):
    job = dispatcher.register({key: {**node, "inputs": dict(node["inputs"])} for key, node in PROMPT.items()}, "victim-prompt")
    job.queue = ShareQueue([Share(1)])
    job.queue.claim(job.queue.shares[1], MASTER, now=0.0, expected_seconds=1.0)
    return job


async def test_a_master_share_without_the_jobs_token_is_refused_and_not_used(tmp_path: Path) -> None:
    _, dispatcher, _ = _services(tmp_path)
    job = _job_left_to_the_master(dispatcher)
    forged = np.ones((1, 8, 8, 3), dtype=np.float32)

    with pytest.raises(JobFailed, match="refused"):
        await dispatcher.deliver_from_master(job.job_id, 1, "4", forged, True, "a-guessed-token")

    assert job.results == {}


async def test_the_master_share_of_the_jobs_own_expansion_is_taken(tmp_path: Path) -> None:
    _, dispatcher, _ = _services(tmp_path)
    job = _job_left_to_the_master(dispatcher)
    rendered = np.ones((1, 8, 8, 3), dtype=np.float32)

    outcome = await dispatcher.deliver_from_master(job.job_id, 1, "4", rendered, True, job.master_share_token)

    assert outcome is not None and outcome.parts[0][1] is rendered


def test_the_token_is_never_shown(tmp_path: Path) -> None:
    _, dispatcher, _ = _services(tmp_path)
    job = _job_left_to_the_master(dispatcher)

    assert job.master_share_token not in str(job.snapshot()) and job.master_share_token not in repr(job)


def test_a_prompt_cannot_borrow_the_id_of_a_distributed_prompt(tmp_path: Path) -> None:
    registry, dispatcher, router = _services(tmp_path)
    hook = PromptHook(registry, dispatcher, router, lambda class_type: class_type == "SaveImage")
    router.register("routed-prompt", ("2",))
    dispatcher.register({key: {**node, "inputs": dict(node["inputs"])} for key, node in PROMPT.items()}, "job-prompt")

    borrowed = [hook({"prompt": dict(WHOLE), "prompt_id": taken}) for taken in ("routed-prompt", "job-prompt")]
    own = hook({"prompt": dict(WHOLE), "prompt_id": "my-own-id"})

    assert not {answer["prompt_id"] for answer in borrowed} & {"routed-prompt", "job-prompt"}
    assert own["prompt_id"] == "my-own-id"
