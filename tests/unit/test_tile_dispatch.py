"""A Distributed Upscale's tiles through the real Dispatcher, with a fake share runner, health and clock:
tiles go to whoever frees up first (the master too), come back handed over once, and a tile nobody can
render fails the job naming it and the workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from distributed.errors import JobFailed, WorkerRejected
from distributed.jobs.dispatch import Dispatcher
from distributed.jobs.outcomes import TileOutcome
from distributed.jobs.upscale_plan import TilePlan
from distributed.shares import ShareResult
from tests.harness import wait_until_async
from tests.unit.dispatch_fakes import FakeClock, FakeHealth, FakeRunner, Pushes, RunCall, write_registry
from tests.unit.test_upscale_plan import tile_plan


def make_dispatcher(tmp_path: Path, workers: list[str], participate: bool = True,
                    **settings: object) -> tuple[Dispatcher, FakeRunner, FakeClock]:
    clock, runner = FakeClock(), FakeRunner()
    registry = write_registry(tmp_path / "workers.json", workers, participate, **settings)
    return Dispatcher(registry, FakeHealth(), Pushes().events(), runner, clock=clock, tick_seconds=0.01), runner, clock


def deliver_tiles(call: RunCall, plan: TilePlan) -> None:
    call.start()
    outputs = {key: np.full((1, 72, 80, 3), int(key.removeprefix("tile")) / 255.0, dtype=np.float32) for key in call.work.collector_ids}
    call.result.set_result(ShareResult(outputs, frozenset({"1"})))


async def next_outcome(dispatcher: Dispatcher, job_id: str) -> TileOutcome:
    return await asyncio.wait_for(dispatcher.tile_outcome(job_id), 5)


async def test_workers_and_the_waiting_master_share_the_tiles_and_each_comes_back_once(tmp_path: Path) -> None:
    dispatcher, runner, _ = make_dispatcher(tmp_path, ["a"])
    plan = tile_plan(4)
    job_id = await dispatcher.start_tiles(plan)
    await wait_until_async(lambda: len(runner.calls) == 2, 5, message="worker a's window filled")

    first = await next_outcome(dispatcher, job_id)  # the master waits: it is given a share of its own
    assert first.delivered == () and len(first.render) == 1
    master_share, master_tiles = first.render[0]
    for call in runner.live():
        deliver_tiles(call, plan)
    dispatcher.deliver_tiles(job_id, master_share)

    seen: dict[int, float] = {}
    rendered_here = set(master_tiles)
    while True:
        outcome = await next_outcome(dispatcher, job_id)
        for index, pixels in outcome.delivered:
            assert index not in seen and pixels.shape == (72, 80, 3)
            seen[index] = float(pixels[0, 0, 0]) * 255
        for share_index, indices in outcome.render:
            rendered_here |= set(indices)
            dispatcher.deliver_tiles(job_id, share_index)
        for call in runner.live():
            deliver_tiles(call, plan)
        if outcome.finished:
            break

    assert sorted([*seen, *rendered_here]) == [0, 1, 2, 3] and not set(seen) & rendered_here
    assert all(round(value) == index for index, value in seen.items())  # each tile's own pixels
    snapshot = dispatcher.job(job_id).snapshot()  # type: ignore[union-attr]
    assert snapshot["mode"] == "upscale" and [t["state"] for t in snapshot["tiles"]] == ["done"] * 4
    assert {t["participant"] for t in snapshot["tiles"] if t["tile"] in rendered_here} == {"master"}


async def test_a_tile_no_participant_can_render_fails_the_job_naming_the_tile_and_the_worker(tmp_path: Path) -> None:
    dispatcher, runner, clock = make_dispatcher(tmp_path, ["a"], participate=False, assign_timeout=5)
    job_id = await dispatcher.start_tiles(tile_plan(1))
    await wait_until_async(lambda: runner.live(), 5, message="the tile handed to worker a")
    runner.live()[0].fail(WorkerRejected("Worker a", "lacks model tiny.safetensors"))
    waiting = asyncio.ensure_future(dispatcher.tile_outcome(job_id))
    job = dispatcher.job(job_id)
    assert job is not None
    await wait_until_async(lambda: bool(job.queue.excluded), 5, message="the failure taken in")
    clock.advance(6)

    with pytest.raises(JobFailed) as failed:
        await asyncio.wait_for(waiting, 5)
    assert "frame 0 tile (0, 0)" in str(failed.value) and "Worker a" in str(failed.value) and "tiny.safetensors" in str(failed.value)


async def test_a_failed_worker_is_named_and_its_tile_goes_to_the_master(tmp_path: Path) -> None:
    dispatcher, runner, _ = make_dispatcher(tmp_path, ["a"])
    job_id = await dispatcher.start_tiles(tile_plan(1))
    await wait_until_async(lambda: runner.live(), 5, message="the tile handed to worker a")
    runner.live()[0].fail(WorkerRejected("Worker a", "lacks model tiny.safetensors"))

    outcome = await next_outcome(dispatcher, job_id)
    assert outcome.render == ((0, (0,)),)
    dispatcher.deliver_tiles(job_id, 0)
    assert (await next_outcome(dispatcher, job_id)).finished
    (tile,) = dispatcher.job(job_id).snapshot()["shares"]  # type: ignore[union-attr]
    assert tile["participant"] == "master" and "Worker a" in tile["attempts"][0]


async def test_a_job_whose_last_tile_the_master_rendered_ends_done_not_cancelled(tmp_path: Path) -> None:
    dispatcher, _, _ = make_dispatcher(tmp_path, [])
    job_id = await dispatcher.start_tiles(tile_plan(1))
    outcome = await next_outcome(dispatcher, job_id)
    dispatcher.deliver_tiles(job_id, outcome.render[0][0])
    assert (await dispatcher.tile_outcome(job_id)).finished  # awaited in place: the run loop gets no turn

    await dispatcher.end_tiles(job_id)  # at once, before the run loop had a turn
    job = dispatcher.job(job_id)
    assert job is not None
    await asyncio.wait_for(job.finished.wait(), 5)
    assert job.state.value == "done" and job.error is None
    # The finished job keeps its tile map, not the tiles' pixels.
    assert isinstance(job.plan, TilePlan) and all(tile.image.pixels.size == 0 for tile in job.plan.tiles)
    assert job.snapshot()["tiles"][0]["width"] == 64


async def test_ending_the_node_early_cancels_the_job_and_its_shares(tmp_path: Path) -> None:
    dispatcher, runner, _ = make_dispatcher(tmp_path, ["a"], participate=False)
    job_id = await dispatcher.start_tiles(tile_plan(2))
    await wait_until_async(lambda: len(runner.live()) == 2, 5, message="both tiles on worker a")

    await dispatcher.end_tiles(job_id)

    job = dispatcher.job(job_id)
    assert job is not None and job.state.value == "failed" and "ended before every tile" in (job.error or "")
    await wait_until_async(lambda: all(call.cancelled for call in runner.calls), 5, message="the worker's shares cancelled")
