"""The order of the statuses the health monitor shows: every published status outranks the ones before.

The panel hears a worker's status twice, pushed over the websocket and in HTTP answers, and the two
may arrive in either order; it keeps the higher `revision`. These tests pin that ordering down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.config.models import RegistryFile, WorkerConfig
from distributed.config.registry import Registry
from distributed.events import Events
from distributed.workers.health import HealthMonitor
from distributed.workers.pool import ClientPool
from distributed.workers.status import WorkerState, WorkerStatus
from tests.harness import free_port, wait_until_async


class _Pushes:
    """Collects what would go over the websocket."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.sent.append((event, payload))

    def statuses(self) -> list[dict[str, Any]]:
        return [payload["status"] for _, payload in self.sent]


@dataclass
class _Setup:
    health: HealthMonitor
    worker: WorkerConfig
    pushes: _Pushes
    registry: Registry
    clients: ClientPool


def _monitor(tmp_path: Path, port: int | None = None, enabled: bool = True) -> _Setup:
    """A monitor over one local worker, by default on a port nobody listens on (checks answer "refused")."""
    worker = WorkerConfig(id="w1", name="Worker 1", type="local", port=port or free_port(), enabled=enabled)
    registry = Registry(tmp_path / "workers.json")

    def add(current: RegistryFile) -> RegistryFile:
        current.workers.append(worker)
        return current

    registry.update(add)
    pushes, clients = _Pushes(), ClientPool()
    return _Setup(HealthMonitor(registry, clients, Events(pushes)), worker, pushes, registry, clients)


async def test_each_published_status_outranks_the_one_before(tmp_path: Path) -> None:
    setup = _monitor(tmp_path)
    health, worker, pushes = setup.health, setup.worker, setup.pushes

    health.set_status(worker.id, WorkerStatus(WorkerState.ONLINE))
    health.set_status(worker.id, WorkerStatus(WorkerState.BUSY, queue_remaining=1))
    health.set_status(worker.id, WorkerStatus(WorkerState.OFFLINE, error="refused"))

    revisions = [status["revision"] for status in pushes.statuses()]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3
    assert health.status(worker.id).revision == revisions[-1]


async def test_an_answer_rendered_before_a_change_is_outranked_by_the_push_of_that_change(tmp_path: Path) -> None:
    setup = _monitor(tmp_path)
    health, worker, pushes = setup.health, setup.worker, setup.pushes
    health.set_status(worker.id, WorkerStatus(WorkerState.ONLINE))
    answer = health.status(worker.id).as_json()

    health.set_status(worker.id, WorkerStatus(WorkerState.OFFLINE, error="stopped"))

    pushed = pushes.statuses()[-1]
    assert pushed["state"] == "offline" and pushed["revision"] > answer["revision"]


async def test_a_recheck_shows_the_worker_as_unknown_at_once_then_as_its_probe_finds_it(tmp_path: Path) -> None:
    setup = _monitor(tmp_path)
    health, worker, pushes = setup.health, setup.worker, setup.pushes
    health.set_status(worker.id, WorkerStatus(WorkerState.ONLINE))
    before = health.status(worker.id)

    check = health.recheck(worker)
    at_once = health.status(worker.id)
    found = await check

    assert at_once.state == WorkerState.UNKNOWN and at_once.revision > before.revision
    assert found.state == WorkerState.OFFLINE
    assert pushes.statuses()[-1]["state"] == "offline"
    assert health.status(worker.id).revision > at_once.revision
    await health.stop()
    await setup.clients.close()


async def test_an_override_change_is_published_under_a_new_revision(tmp_path: Path) -> None:
    setup = _monitor(tmp_path)
    health, worker, pushes = setup.health, setup.worker, setup.pushes
    override: dict[str, WorkerStatus] = {}
    health.set_override(override.get)
    health.set_status(worker.id, WorkerStatus(WorkerState.OFFLINE))
    before = health.status(worker.id)

    override[worker.id] = WorkerStatus(WorkerState.LAUNCHING)
    health.publish(worker.id)

    shown = health.status(worker.id)
    assert shown.state == WorkerState.LAUNCHING and shown.revision > before.revision
    assert pushes.statuses()[-1] == shown.as_json()


async def test_a_restarted_master_numbers_its_statuses_above_its_predecessors(tmp_path: Path) -> None:
    first_setup = _monitor(tmp_path / "first")
    first, worker = first_setup.health, first_setup.worker
    for _ in range(1000):
        first.publish(worker.id)
    last_of_first = first.status(worker.id).revision

    second = _monitor(tmp_path / "second").health
    second.publish(worker.id)

    assert second.status(worker.id).revision > last_of_first


async def test_a_check_started_by_a_job_survives_the_monitor_noticing_the_worker_was_re_enabled(tmp_path: Path) -> None:
    """Re-enabling a worker and queueing at once: the job's check of the worker must not be cancelled
    as stale when the polling loop notices the change, or the job skips the worker as unknown."""
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)  # accepts, never answers
    setup = _monitor(tmp_path, port=silent.sockets[0].getsockname()[1], enabled=False)
    health, worker = setup.health, setup.worker
    polling = asyncio.ensure_future(health.run())
    try:
        await wait_until_async(lambda: health.status(worker.id).state == WorkerState.DISABLED, 10, message="the status to change")
        enabled = worker.model_copy(update={"enabled": True})
        setup.registry.update(lambda current: current.model_copy(update={"workers": [enabled]}))
        check = asyncio.ensure_future(health.check(enabled))

        # the loop noticed
        await wait_until_async(lambda: health.status(worker.id).state == WorkerState.UNKNOWN, 10, message="the status to change")

        assert not check.done(), "the job's check was cancelled"
        check.cancel()
    finally:
        polling.cancel()
        await health.stop()
        await setup.clients.close()
        silent.close()

