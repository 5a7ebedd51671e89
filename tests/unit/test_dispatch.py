"""The real Dispatcher with a fake share runner, health monitor and clock: who gets which share,
re-runs, timeouts, backup copies, the master as a participant, and interrupts at any point."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from distributed.config.models import RegistryFile
from distributed.config.registry import Registry
from distributed.errors import JobFailed, WorkerLost
from distributed.jobs.dispatch import NEVER_QUEUED_SECONDS, Dispatcher
from distributed.jobs.job import Job, JobState
from distributed.jobs.outcomes import CollectorOutcome
from distributed.workers.status import WorkerState
from tests.harness import wait_until_async
from tests.unit.dispatch_fakes import FakeClock, FakeHealth, FakeRunner, Pushes, shares_prompt, write_registry

SHAPE = (2, 2, 3)


@dataclass
class Rig:
    dispatcher: Dispatcher
    runner: FakeRunner
    health: FakeHealth
    clock: FakeClock
    pushes: Pushes
    registry: Registry
    ended: set[str] = field(default_factory=set)
    queued: list[str] = field(default_factory=list)

    async def started(self, shares: int = 0, prompt_id: str = "p1") -> Job:
        job = self.dispatcher.register(shares_prompt(shares), prompt_id)
        await self.dispatcher.start(job.job_id)
        return job

    def collect(self, job: Job, master_part: object = "mine") -> asyncio.Task[CollectorOutcome]:
        return asyncio.ensure_future(self.dispatcher.collector_outcome(job.job_id, "4", SHAPE, master_part))

    async def calls(self, count: int) -> None:
        await wait_until_async(lambda: len(self.runner.calls) >= count, 5, message=f"{count} share(s) handed out")


def make_rig(tmp_path: Path, workers: list[str], participate: bool = True, **settings: object) -> Rig:
    clock, runner, health, pushes = FakeClock(), FakeRunner(), FakeHealth(), Pushes()
    registry = write_registry(tmp_path / "workers.json", workers, participate, **settings)
    rig = Rig(None, runner, health, clock, pushes, registry)  # type: ignore[arg-type]
    rig.dispatcher = Dispatcher(registry, health, pushes.events(), runner, master_prompt_ended=lambda p: p in rig.ended,
                                clock=clock, master_queue=lambda: ([], list(rig.queued)), tick_seconds=0.01)
    return rig


def labels(outcome: CollectorOutcome) -> list[str]:
    return [label for label, _ in outcome.parts]


# --- assignment ---------------------------------------------------------------------------------


async def test_fan_out_deals_one_share_to_each_worker_and_the_master_keeps_share_0(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"])
    job = await rig.started()
    await rig.calls(2)
    assert sorted(rig.runner.handed()) == [(1, "a"), (2, "b")]

    collecting = rig.collect(job)
    for call in rig.runner.live():
        call.start()
        call.deliver()
    outcome = await asyncio.wait_for(collecting, 5)

    assert outcome.master_renders and outcome.master_part == "mine"
    assert labels(outcome) == ["share 1 (a)", "share 2 (b)"]
    assert job.state == JobState.DONE


async def test_fan_out_gives_every_participant_one_share_whatever_their_speeds(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    key = rig.dispatcher.register(shares_prompt(), "p0").plan.workflow_key  # type: ignore[union-attr]
    for _ in range(3):
        rig.dispatcher.speeds.observe(key, "a", 1.0)
        rig.dispatcher.speeds.observe(key, "b", 10.0)

    await rig.started()
    await rig.calls(2)

    assert sorted(rig.runner.handed()) == [(0, "a"), (1, "b")]


async def test_shares_wait_on_the_master_and_go_to_a_worker_as_its_window_frees(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"], participate=False)
    await rig.started(shares=4)
    await rig.calls(2)
    assert rig.runner.handed() == [(0, "a"), (1, "a")]

    first = rig.runner.on("a", 0)
    assert first is not None
    first.start()
    rig.clock.advance(1.0)
    first.deliver()
    await rig.calls(3)

    assert rig.runner.handed()[2] == (2, "a")


async def test_a_failed_share_runs_again_elsewhere_and_its_worker_gives_back_the_rest(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    job = await rig.started(shares=4)
    await rig.calls(4)
    assert sorted(rig.runner.handed()) == [(0, "a"), (1, "b"), (2, "a"), (3, "b")]
    queued_on_a = rig.runner.on("a", 2)

    rig.runner.on("a", 0).fail(WorkerLost("Worker a", "died"))  # type: ignore[union-attr]
    await wait_until_async(lambda: queued_on_a is not None and queued_on_a.cancelled, 5)
    for _ in range(4):
        call = await wait_until_async(lambda: rig.runner.on("b"), 5)
        call.deliver()
        await wait_until_async(lambda call=call: call.result.done() and job.queue.shares[call.share_index].state == "done", 5)
    collected = await asyncio.wait_for(rig.collect(job), 5)

    assert labels(collected) == [f"share {i} (b)" for i in range(4)]
    assert job.queue.shares[0].attempts == ["worker 'Worker a': died"]
    assert job.queue.shares[2].attempts == []  # given back, not failed
    assert rig.pushes.of("distributed.share_reassigned")[0]["from_worker"] == "a"


async def test_an_orchestrating_master_fails_the_job_naming_the_worker_after_assign_timeout(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"], participate=False, assign_timeout=5)
    job = await rig.started()
    await rig.calls(1)
    collecting = rig.collect(job)

    rig.runner.on("a").fail(WorkerLost("Worker a", "died"))  # type: ignore[union-attr]
    await wait_until_async(lambda: job.queue.shares[0].state == "pending", 5)
    await asyncio.sleep(0.05)
    assert not collecting.done()
    rig.clock.advance(6)

    with pytest.raises(JobFailed, match=r"share\(s\) 0 could not be delivered within 5s: worker 'Worker a': died"):
        await asyncio.wait_for(collecting, 5)
    assert job.state == JobState.FAILED


# --- the master as a participant ----------------------------------------------------------------


async def test_the_master_renders_a_share_no_worker_can_take_once_its_own_is_done(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = await rig.started()
    await rig.calls(1)
    rig.runner.on("a").fail(WorkerLost("Worker a", "lacks node Sampler"))  # type: ignore[union-attr]

    outcome = await asyncio.wait_for(rig.collect(job), 5)
    assert outcome.fallback is not None and outcome.parts == ()
    image = np.zeros((1, *SHAPE), dtype=np.float32)
    delivered = rig.dispatcher.deliver_from_master(job.job_id, 1, "4", image, last=True, token=job.master_share_token)
    joined = await asyncio.wait_for(delivered, 5)

    assert joined is not None and joined.fallback is None and joined.master_part == "mine"
    assert labels(joined) == ["share 1 (master)"]
    share = job.snapshot()["shares"][1]
    assert share["participant"] == "master" and share["state"] == "done" and "lacks node Sampler" in share["attempts"][0]
    await wait_until_async(lambda: job.state == JobState.DONE, 5)


async def test_an_idle_master_takes_a_waiting_share_it_finishes_no_later_than_the_workers(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = await rig.started(shares=4)
    await rig.calls(2)
    rig.runner.on("a", 1).start()  # type: ignore[union-attr]
    rig.clock.advance(1.0)

    outcome = await asyncio.wait_for(rig.collect(job), 5)

    assert outcome.fallback is not None and "distributed.4.3.share" in outcome.fallback.graph
    assert job.queue.shares[3].participant == "master"
    assert sorted(rig.runner.handed()) == [(1, "a"), (2, "a")]


# --- backup copies --------------------------------------------------------------------------------


async def _lagging(rig: Rig) -> Job:
    """Workers a and b each hold one share, their first of the workflow; b delivers in 1 s (loading
    its model: a cold run), a's share keeps running."""
    job = await rig.started(shares=2)
    await rig.calls(2)
    on_a, on_b = rig.runner.on("a", 0), rig.runner.on("b", 1)
    assert on_a is not None and on_b is not None
    on_a.start()
    on_b.start()
    rig.clock.advance(1.0)
    on_b.deliver(cached=())
    await wait_until_async(lambda: job.queue.shares[1].state == "done", 5)
    return job


async def test_a_lagging_workers_share_is_copied_to_an_idle_worker_and_the_first_result_wins(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    job = await _lagging(rig)
    rig.clock.advance(3.0)  # a's share: 4 s against the 1 s b took

    copy = await wait_until_async(lambda: rig.runner.on("b", 0), 5)
    reason = job.snapshot()["shares"][0]["copies"][0]
    assert reason == {"participant": "b", "state": "running", "reason": "Worker a is 4x slower than usual", "progress": None}
    assert rig.pushes.of("distributed.share_copied")[0] == {
        "job_id": job.job_id, "share_index": 0, "to_worker": "b", "from_worker": "a", "reason": "Worker a is 4x slower than usual"}
    copy.deliver()
    outcome = await asyncio.wait_for(rig.collect(job), 5)

    assert labels(outcome) == ["share 0 (b)", "share 1 (b)"]
    original = next(call for call in rig.runner.calls if call.worker_id == "a")
    await wait_until_async(lambda: original.cancelled, 5)
    assert job.snapshot()["shares"][0]["copies"][0]["state"] == "won"


async def test_a_copy_finishing_second_is_dropped_and_never_counted_twice(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    job = await _lagging(rig)
    rig.clock.advance(3.0)
    copy = await wait_until_async(lambda: rig.runner.on("b", 0), 5)
    original = rig.runner.on("a", 0)
    assert original is not None

    original.deliver(image=np.full((1, *SHAPE), 0.5, dtype=np.float32))
    copy.deliver(image=np.full((1, *SHAPE), 0.9, dtype=np.float32))  # both in before the loop looks
    outcome = await asyncio.wait_for(rig.collect(job), 5)

    assert labels(outcome) == ["share 0 (a)", "share 1 (b)"]
    assert float(outcome.parts[0][1].max()) == 0.5
    assert job.snapshot()["shares"][0]["copies"][0]["state"] == "cancelled"


async def test_no_copy_is_started_with_backup_tasks_off(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False, backup_tasks=False)
    job = await _lagging(rig)
    rig.clock.advance(10.0)
    await asyncio.sleep(0.1)

    assert rig.runner.on("b") is None and job.snapshot()["shares"][0]["copies"] == []


async def test_a_hung_worker_failing_its_share_while_a_copy_runs_leaves_the_copy_to_deliver(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    job = await _lagging(rig)
    rig.clock.advance(3.0)
    copy = await wait_until_async(lambda: rig.runner.on("b", 0), 5)

    rig.runner.on("a", 0).fail(WorkerLost("Worker a", "showed no progress for 300 s"))  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    assert job.queue.shares[0].state == "running" and len(rig.runner.calls) == 3
    copy.deliver()
    outcome = await asyncio.wait_for(rig.collect(job), 5)

    assert labels(outcome) == ["share 0 (b)", "share 1 (b)"]
    assert "no progress" in job.queue.shares[0].attempts[0]


async def test_a_first_run_is_not_copied_while_no_other_first_run_says_how_long_one_takes(tmp_path: Path) -> None:
    """b ran warm (its model was loaded already); a may be loading its model: no copy yet."""
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    job = await rig.started(shares=2)
    await rig.calls(2)
    rig.runner.on("a", 0).start()  # type: ignore[union-attr]
    rig.runner.on("b", 1).start()  # type: ignore[union-attr]
    rig.clock.advance(1.0)
    rig.runner.on("b", 1).deliver(cached=("2",))  # type: ignore[union-attr]
    await wait_until_async(lambda: job.queue.shares[1].state == "done", 5)

    rig.clock.advance(10.0)
    await asyncio.sleep(0.1)

    assert rig.runner.on("b") is None


async def test_a_later_run_lagging_behind_the_estimate_is_copied(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    first = await rig.started(shares=2, prompt_id="first")
    await rig.calls(2)
    for call in rig.runner.live():
        call.start()
    rig.clock.advance(1.0)
    for call in rig.runner.live():
        call.deliver(cached=())
    await asyncio.wait_for(rig.collect(first), 5)

    job = await rig.started(shares=2, prompt_id="second")
    await rig.calls(4)
    for call in rig.runner.live():
        call.start()
    rig.clock.advance(1.0)
    rig.runner.on("b", 1).deliver()  # type: ignore[union-attr]
    await wait_until_async(lambda: job.queue.shares[1].state == "done", 5)
    rig.clock.advance(2.0)

    await wait_until_async(lambda: rig.runner.on("b", 0), 5)
    assert job.snapshot()["shares"][0]["copies"][0]["reason"] == "Worker a is 3x slower than usual"


async def test_a_worker_turned_slow_gives_back_its_waiting_share_and_has_its_running_one_copied(tmp_path: Path) -> None:
    """Issue 12: a worker that suddenly becomes 5x slower in the middle of a run."""
    rig = make_rig(tmp_path, ["a", "b"], participate=False)
    key = rig.dispatcher.register(shares_prompt(6), "p0").plan.workflow_key  # type: ignore[union-attr]
    for participant in ("a", "b"):
        for _ in range(2):
            rig.dispatcher.speeds.observe(key, participant, 1.0)
    job = await rig.started(shares=6)
    await rig.calls(4)
    for worker, index in (("a", 0), ("b", 1)):
        rig.runner.on(worker, index).start()  # type: ignore[union-attr]  # the second of each waits in its queue
    rig.clock.advance(1.0)
    rig.runner.on("b", 1).deliver()  # type: ignore[union-attr]
    await wait_until_async(lambda: job.queue.shares[1].state == "done", 5)
    rig.clock.advance(4.0)  # a's share 0 now runs 5x longer than its 1 s
    queued_on_a = rig.runner.on("a", 2)
    assert queued_on_a is not None

    await wait_until_async(lambda: queued_on_a.cancelled, 5, message="a's waiting share to be taken back")
    for _ in range(4):  # b runs every other share, the one taken back from a included
        call = await wait_until_async(lambda: next((c for c in rig.runner.live() if c.worker_id == "b"), None), 5)
        call.start()
        rig.clock.advance(1.0)
        call.deliver()
        await wait_until_async(lambda call=call: job.queue.shares[call.share_index].state == "done", 5)

    copy = await wait_until_async(lambda: rig.runner.on("b", 0), 5, message="a copy of a's running share on idle b")
    assert "Worker a is" in job.snapshot()["shares"][0]["copies"][0]["reason"]
    copy.deliver()
    await wait_until_async(lambda: job.queue.shares[0].state == "done", 5)
    assert {index: share.participant for index, share in job.queue.shares.items()} == dict.fromkeys(range(6), "b")


async def test_a_shares_time_is_the_workers_run_without_the_fetch(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"], participate=False)
    job = await rig.started(shares=1)
    await rig.calls(1)
    call = rig.runner.on("a")
    assert call is not None
    call.start()
    rig.clock.advance(2.0)
    call.ran()
    rig.clock.advance(5.0)  # a slow download, or the worker's garbage collection holding its server
    call.deliver()
    await asyncio.wait_for(rig.collect(job), 5)

    assert job.plan is not None and rig.dispatcher.speeds.latest_seconds(job.plan.workflow_key, "a") == 2.0


# --- what the job says ------------------------------------------------------------------------------


async def test_a_job_is_done_only_once_the_masters_own_share_is_done(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = await rig.started()
    await rig.calls(1)
    rig.runner.on("a").deliver()  # type: ignore[union-attr]
    await wait_until_async(lambda: job.queue.is_finished(), 5)
    await asyncio.sleep(0.05)
    assert job.state == JobState.RUNNING

    await asyncio.wait_for(rig.collect(job), 5)
    await wait_until_async(lambda: job.state == JobState.DONE, 5)

    updates = rig.pushes.of("distributed.job_update")
    contradictions = [u for u in updates if u["state"] == "done" and any(s["state"] == "running" for s in u["shares"])]
    assert contradictions == [] and updates[-1]["state"] == "done"


async def test_a_participant_with_a_slow_first_run_gets_one_share_of_every_later_run(tmp_path: Path) -> None:
    """Issue 13.1: three equal participants; b's first run loads its model for 10 s."""
    rig = make_rig(tmp_path, ["a", "b"])
    job = await rig.started(shares=3, prompt_id="cold")
    await rig.calls(2)
    for call in rig.runner.live():
        call.start()
    rig.clock.advance(1.65)
    rig.runner.on("a").deliver(cached=("2",))  # type: ignore[union-attr]  # its model was loaded already
    await wait_until_async(lambda: job.queue.shares[1].state == "done", 5)
    rig.clock.advance(9.1)
    rig.runner.on("b").deliver(cached=())  # type: ignore[union-attr]  # it loaded its model: a cold run
    await wait_until_async(lambda: job.queue.shares[2].state == "done", 5)
    await asyncio.wait_for(rig.collect(job), 5)

    for run in range(3):
        rig.runner.calls.clear()
        job = await rig.started(shares=3, prompt_id=f"warm-{run}")
        await rig.calls(2)
        assert sorted(worker for _, worker in rig.runner.handed()) == ["a", "b"], f"run {run + 2}: {rig.runner.handed()}"
        for call in rig.runner.live():
            call.start()
        rig.clock.advance(1.0)
        for call in rig.runner.live():
            call.deliver()
        await wait_until_async(lambda job=job: job.queue.is_finished(), 5)
        await asyncio.wait_for(rig.collect(job), 5)


async def test_the_start_log_names_only_what_is_decided(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path, ["a", "b"])
    caplog.set_level("INFO", logger="distributed.jobs.dispatch")
    await rig.started(shares=6)
    await rig.started(prompt_id="p2")

    lines = [record.getMessage() for record in caplog.records]
    shares = "share 0 on the master; 5 more share(s) go to whoever frees up first among Worker a, Worker b, the master"
    assert any(shares in line for line in lines)
    assert any("fan-out, share 0 on the master, share 1 to Worker a, share 2 to Worker b" in line for line in lines)


# --- interrupts: no job is ever left behind ---------------------------------------------------------------


async def test_an_interrupt_during_the_start_probe_fails_the_job_and_starts_nothing(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    rig.health.states["a"] = WorkerState.UNKNOWN
    rig.health.gate = asyncio.Event()
    job = rig.dispatcher.register(shares_prompt(), "p1")
    starting = asyncio.ensure_future(rig.dispatcher.start(job.job_id))
    await wait_until_async(lambda: rig.health.checked, 5)

    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting

    assert job.state == JobState.FAILED and job.error == "interrupted on the master"
    assert job.task is None and rig.runner.calls == []


async def test_an_interrupt_while_the_collector_waits_stops_every_share_and_fails_the_job(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"])
    job = await rig.started(shares=5)
    await rig.calls(4)
    collecting = rig.collect(job)
    await asyncio.sleep(0.05)

    collecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collecting

    assert job.state == JobState.FAILED and job.task is not None and job.task.done()
    assert all(call.cancelled for call in rig.runner.calls)
    assert all(share.state == "failed" for share in job.queue.shares.values())


async def test_an_interrupt_while_the_master_waits_after_rendering_a_share_fails_the_job(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"])
    job = await rig.started()
    await rig.calls(2)
    rig.runner.on("a").fail(WorkerLost("Worker a", "died"))  # type: ignore[union-attr]
    assert (await asyncio.wait_for(rig.collect(job), 5)).fallback is not None
    image = np.zeros((1, *SHAPE), dtype=np.float32)
    delivering = asyncio.ensure_future(
        rig.dispatcher.deliver_from_master(job.job_id, 1, "4", image, last=True, token=job.master_share_token))
    await asyncio.sleep(0.05)
    assert not delivering.done()  # share 2 is still on worker b

    delivering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await delivering

    assert job.state == JobState.FAILED
    assert rig.runner.on("b") is None and any(call.cancelled for call in rig.runner.calls if call.worker_id == "b")


async def test_a_master_prompt_that_ends_before_collecting_fails_the_job_and_stops_its_shares(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = await rig.started()
    await rig.calls(1)

    rig.ended.add("p1")

    await wait_until_async(lambda: job.state == JobState.FAILED, 5)
    assert "master's prompt ended" in (job.error or "")
    await wait_until_async(lambda: rig.runner.calls[0].cancelled, 5)


async def test_a_registered_job_whose_prompt_never_reached_the_queue_is_forgotten(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = rig.dispatcher.register(shares_prompt(), "refused")
    rig.dispatcher.sweep()
    assert rig.dispatcher.job(job.job_id) is job

    rig.clock.advance(NEVER_QUEUED_SECONDS + 1)
    rig.dispatcher.sweep()

    assert rig.dispatcher.job(job.job_id) is None


async def test_a_registered_job_whose_prompt_left_the_queue_is_forgotten_at_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    rig.queued.append("deleted")
    job = rig.dispatcher.register(shares_prompt(), "deleted")
    rig.dispatcher.sweep()
    assert rig.dispatcher.job(job.job_id) is job

    rig.queued.clear()
    rig.dispatcher.sweep()

    assert rig.dispatcher.job(job.job_id) is None


async def test_a_registered_job_whose_prompt_failed_before_its_collector_is_forgotten(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a"])
    job = rig.dispatcher.register(shares_prompt(), "failed")
    rig.ended.add("failed")

    rig.dispatcher.sweep()

    assert rig.dispatcher.job(job.job_id) is None


async def test_a_disabled_worker_takes_no_share(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, ["a", "b"], participate=False)

    def disable(config: RegistryFile) -> RegistryFile:
        config.workers[1].enabled = False
        return config

    rig.registry.update(disable)
    await rig.started(shares=2)
    await rig.calls(2)

    assert rig.runner.handed() == [(0, "a"), (1, "a")]
