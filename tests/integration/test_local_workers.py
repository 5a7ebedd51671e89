"""Local workers as real ComfyUI processes, launched and watched by LocalWorkerManager.

The manager runs on the test's event loop, as it runs on the master's server loop. A "master" that
must die by SIGKILL is a separate Python process running the manager.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from distributed.config.models import WorkerConfig
from distributed.errors import ProcessError
from distributed.workers.local.arguments import ArgumentReader
from distributed.workers.local.command import MasterLayout
from distributed.workers.local.manager import LocalWorkerManager, RestartPolicy
from distributed.workers.status import WorkerState
from tests.harness import PROJECT_DIR, ComfyInstance, comfyui_python, comfyui_root, free_port, http_json, wait_until_async

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills processes with SIGKILL")

LEASE_TIMEOUT = 4.0
STARTUP = 120.0


class StateLog:
    """Records on_state calls and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, WorkerState, str | None]] = []
        self._changed = asyncio.Event()

    def __call__(self, worker_id: str, state: WorkerState, error: str | None) -> None:
        self.events.append((worker_id, state, error))
        self._changed.set()

    async def reached(self, worker_id: str, state: WorkerState, within: float = STARTUP, after: int = 0) -> str | None:
        """Waits up to `within` seconds for `state` among the events from index `after` on; returns its error text."""
        async with asyncio.timeout(within):
            while True:
                for seen_id, seen_state, error in self.events[after:]:
                    if (seen_id, seen_state) == (worker_id, state):
                        return error
                self._changed.clear()
                await self._changed.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _worker(worker_id: str, extra_args: str = "--cpu", port: int | None = None) -> WorkerConfig:
    return WorkerConfig(id=worker_id, name=f"Worker {worker_id}", type="local", port=port or free_port(), extra_args=extra_args)


@pytest.fixture
def layout(tmp_path: Path) -> MasterLayout:
    """A master base directory holding the test node pack, as a user's ComfyUI holds custom nodes."""
    base = tmp_path / "master"
    ComfyInstance("master", base, with_node_pack=True).prepare()
    return MasterLayout(main_py=comfyui_root() / "main.py", base_directory=base)


@pytest.fixture
def states() -> StateLog:
    return StateLog()


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids a test started outside a manager; whatever is still alive at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def reader(comfy_parser: argparse.ArgumentParser) -> ArgumentReader:
    return ArgumentReader(comfy_parser)


@pytest.fixture
async def manager(layout: MasterLayout, tmp_path: Path, states: StateLog, reader: ArgumentReader) -> AsyncIterator[LocalWorkerManager]:
    manager = LocalWorkerManager(
        layout, tmp_path / "state", reader, states, lease_timeout=LEASE_TIMEOUT, ready_timeout=STARTUP,
        restart_policy=RestartPolicy(max_restarts=2, window=600, base_delay=0.5),
    )
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()


def _worker_log(manager: LocalWorkerManager, worker_id: str) -> str:
    log = Path(manager.lease_file.parent / "workers" / worker_id / "worker.log")
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


async def test_two_cpu_workers_come_online(manager: LocalWorkerManager, states: StateLog) -> None:
    workers = [_worker("one"), _worker("two")]

    launched = [await manager.launch(worker) for worker in workers]
    assert [status.state for status in launched] == [WorkerState.LAUNCHING] * 2
    for worker in workers:
        assert await states.reached(worker.id, WorkerState.ONLINE) is None, _worker_log(manager, worker.id)

    for worker in workers:
        status, stats = await asyncio.to_thread(http_json, "GET", worker.base_url + "/system_stats")
        assert status == 200
        assert any(word.startswith("--output-directory=") for word in stats["system"]["argv"])


async def test_a_worker_loads_the_masters_custom_nodes(manager: LocalWorkerManager, states: StateLog) -> None:
    worker = _worker("nodes")
    await manager.launch(worker)
    await states.reached(worker.id, WorkerState.ONLINE)

    status, info = await asyncio.to_thread(http_json, "GET", worker.base_url + "/object_info/DistTestSeedStamp")

    assert status == 200 and "DistTestSeedStamp" in info


async def test_a_stopped_worker_leaves_no_process(manager: LocalWorkerManager, states: StateLog, tmp_path: Path) -> None:
    worker = _worker("stopped")
    await manager.launch(worker)
    await states.reached(worker.id, WorkerState.ONLINE)
    pid = manager.status(worker.id).pid
    assert pid is not None

    status = await manager.stop(worker.id)

    assert status.state == WorkerState.OFFLINE and status.pid is None
    assert not _alive(pid)
    assert not (tmp_path / "state" / "workers" / worker.id / "process.json").exists()


async def test_a_sigkilled_worker_is_restarted(manager: LocalWorkerManager, states: StateLog) -> None:
    worker = _worker("crashy")
    await manager.launch(worker)
    await states.reached(worker.id, WorkerState.ONLINE)
    first_pid = manager.status(worker.id).pid
    mark = len(states.events)

    os.kill(first_pid, signal.SIGKILL)

    error = await states.reached(worker.id, WorkerState.LAUNCHING, after=mark)
    assert error is not None and "exited unexpectedly" in error
    await states.reached(worker.id, WorkerState.ONLINE, after=mark)
    status = manager.status(worker.id)
    assert status.pid not in (None, first_pid) and status.restarts == 1


async def test_a_worker_crashing_past_the_restart_limit_ends_in_error(
    layout: MasterLayout, tmp_path: Path, states: StateLog, reader: ArgumentReader
) -> None:
    manager = LocalWorkerManager(
        layout, tmp_path / "state", reader, states, lease_timeout=LEASE_TIMEOUT, restart_policy=RestartPolicy(max_restarts=0)
    )
    worker = _worker("fragile")
    try:
        await manager.launch(worker)
        await states.reached(worker.id, WorkerState.ONLINE)
        os.kill(manager.status(worker.id).pid, signal.SIGKILL)

        error = await states.reached(worker.id, WorkerState.ERROR, within=30)
    finally:
        await manager.close()

    assert error is not None and "not restarting again" in error
    assert manager.status(worker.id).pid is None


async def test_a_clean_exit_without_stop_workers_on_exit_leaves_workers_running(
    layout: MasterLayout, tmp_path: Path, states: StateLog, reaper: list[int], reader: ArgumentReader
) -> None:
    keeping = LocalWorkerManager(layout, tmp_path / "state", reader, states, stop_on_exit=lambda: False, lease_timeout=LEASE_TIMEOUT)
    worker = _worker("kept")
    await keeping.launch(worker)
    await states.reached(worker.id, WorkerState.ONLINE)
    pid = keeping.status(worker.id).pid
    reaper.append(pid)

    await keeping.close()
    closed_at = time.monotonic()
    await wait_until_async(lambda: time.monotonic() > closed_at + 2 * LEASE_TIMEOUT or not _alive(pid), 4 * LEASE_TIMEOUT,
                           interval=0.2, message="the lease deadline", blocking=True)

    assert _alive(pid)
    assert json.loads(keeping.lease_file.read_text())["hold"] is True


async def test_a_taken_port_is_reported_before_launch(manager: LocalWorkerManager, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        worker = _worker("blocked", port=sock.getsockname()[1])

        with pytest.raises(ProcessError, match=f"port {worker.port} is already in use"):
            await manager.launch(worker)

    assert manager.status(worker.id).state == WorkerState.OFFLINE
    assert not (tmp_path / "state" / "workers" / worker.id / "worker.log").exists()


async def test_flags_comfyui_refuses_together_end_in_error_with_the_log_lines(manager: LocalWorkerManager, states: StateLog) -> None:
    worker = _worker("badargs", extra_args="--cpu --cache-classic --cache-none")
    await manager.launch(worker)

    error = await states.reached(worker.id, WorkerState.ERROR)

    assert error is not None and "exited during startup" in error
    assert "not allowed with argument --cache-classic" in error
    assert any("not allowed with argument" in line for line in await manager.log_tail(worker.id, 50))


# --- a master in another process --------------------------------------------------------------

MASTER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {project!r})
sys.path.append({comfyui!r})
from comfy.cli_args import parser
from distributed.config.models import WorkerConfig
from distributed.workers.local.arguments import ArgumentReader
from distributed.workers.local.manager import LocalWorkerManager
from distributed.workers.local.command import MasterLayout

async def main():
    layout = MasterLayout(main_py=Path({main_py!r}), base_directory=Path({base!r}))
    manager = LocalWorkerManager(layout, Path({state!r}), ArgumentReader(parser), lease_timeout={lease_timeout!r})
    await manager.start()
    status = await manager.launch(WorkerConfig.model_validate_json({worker!r}))
    Path({pid_file!r}).write_text(json.dumps(status.pid))
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _answers(url: str) -> bool:
    try:
        return http_json("GET", url + "/system_stats", timeout=2)[0] == 200
    except OSError:
        return False


async def _master_with_a_worker(
    tmp_path: Path, layout: MasterLayout, worker: WorkerConfig, reaper: list[int]
) -> tuple[subprocess.Popen, int]:
    """Starts a master process that launches `worker`; returns it and the worker's pid once online."""
    pid_file = tmp_path / "worker.pid"
    script = MASTER_SCRIPT.format(
        project=str(PROJECT_DIR), comfyui=str(comfyui_root()), main_py=str(layout.main_py), base=str(layout.base_directory),
        state=str(tmp_path / "state"),
        lease_timeout=LEASE_TIMEOUT, worker=worker.model_dump_json(), pid_file=str(pid_file),
    )
    master = await asyncio.to_thread(subprocess.Popen, [comfyui_python(), "-c", script], start_new_session=True)
    reaper.append(master.pid)
    await wait_until_async(pid_file.exists, 30, interval=0.2, message="the master to launch its worker", blocking=True)
    worker_pid = json.loads(pid_file.read_text())
    reaper.append(worker_pid)
    await wait_until_async(lambda: not _alive(worker_pid) or _answers(worker.base_url), STARTUP,
                           interval=0.2, message="the worker to answer", blocking=True)
    assert _alive(worker_pid), (tmp_path / "state" / "workers" / worker.id / "worker.log").read_text()
    return master, worker_pid


async def test_a_worker_exits_after_its_master_is_sigkilled(tmp_path: Path, layout: MasterLayout, reaper: list[int]) -> None:
    master, worker_pid = await _master_with_a_worker(tmp_path, layout, _worker("orphan"), reaper)

    master.kill()
    await asyncio.to_thread(master.wait, 10)

    await wait_until_async(lambda: not _alive(worker_pid), LEASE_TIMEOUT + 10,
                           interval=0.2, message="the worker's watchdog to end it", blocking=True)


async def test_a_restarted_master_adopts_its_running_worker(
    tmp_path: Path, layout: MasterLayout, states: StateLog, reaper: list[int], reader: ArgumentReader
) -> None:
    worker = _worker("adopted")
    master, worker_pid = await _master_with_a_worker(tmp_path, layout, worker, reaper)
    master.kill()
    await asyncio.to_thread(master.wait, 10)
    killed_at = time.monotonic()

    successor = LocalWorkerManager(layout, tmp_path / "state", reader, states, lease_timeout=LEASE_TIMEOUT)
    await successor.start([worker])
    try:
        await states.reached(worker.id, WorkerState.ONLINE, within=30)
        assert (await successor.launch(worker)).pid == worker_pid  # no duplicate
        # The lease the killed master left would have expired by now; the successor's keeps it alive.
        old_deadline = killed_at + 2 * LEASE_TIMEOUT
        await wait_until_async(lambda: time.monotonic() > old_deadline or not _alive(worker_pid), 4 * LEASE_TIMEOUT,
                               interval=0.2, message="the old lease deadline", blocking=True)
        assert _alive(worker_pid)
        assert successor.status(worker.id).pid == worker_pid
    finally:
        await successor.close()
    assert not _alive(worker_pid)

