"""Local workers: one ComfyUI process per GPU, launched, watched, restarted and ended by the master.

How a worker is started is `command`; how its process is told apart from others is `processes`;
the lease that keeps it from outliving the master is `lease`; its log is `logs`. This module runs
their life cycle, reported through `on_state`:

    launch -> LAUNCHING -> ONLINE (its /system_stats answers)
                        -> ERROR  (it exited during startup, or the readiness deadline passed)
    ONLINE -> unexpected exit -> LAUNCHING again after a backoff delay, or ERROR past the restart limit
    stop   -> OFFLINE (process tree ended: terminate -> wait -> kill, by PID, never by name)

Everything runs on the server loop; calls that block (psutil, Popen, file I/O) go through
asyncio.to_thread. The one exception is the lease refresh, a thread of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ...config.models import WorkerConfig
from ...errors import ConfigError, ProcessError
from ..status import WorkerState
from .arguments import Argument, ArgumentReader
from .command import MasterLayout, WorkerPaths, listen_address, listen_hosts, worker_command, worker_env
from .lease import Lease
from .logs import read_log_tail, rotate_log
from .ports import port_is_free
from .processes import RunningProcess, load_saved, start_process

logger = logging.getLogger(__name__)

StateCallback = Callable[[str, WorkerState, "str | None"], None]
Probe = Callable[[WorkerConfig], Awaitable[bool]]


async def system_stats_answers(worker: WorkerConfig, timeout: float = 2.0) -> bool:
    """Whether the worker's GET /system_stats answers 200; the default readiness probe (stdlib only).
    A locked worker (one with an auth token) is asked with its token."""
    parts = urlsplit(worker.base_url)
    authorization = f"Authorization: Bearer {worker.auth_token}\r\n" if worker.auth_token else ""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write(f"GET /system_stats HTTP/1.0\r\nHost: {parts.netloc}\r\n{authorization}\r\n".encode())
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return status_line.split(b" ")[1:2] == [b"200"]


@dataclass(frozen=True)
class RestartPolicy:
    """Crash restarts: exponential backoff, at most `max_restarts` within `window` seconds."""

    max_restarts: int = 3
    window: float = 300.0
    base_delay: float = 1.0
    max_delay: float = 30.0

    def next_delay(self, restarts: Sequence[float], now: float) -> float | None:
        """Seconds to wait before the next restart, or None when the limit is reached.

        `restarts` are the monotonic times of earlier crash restarts; only those inside the window count.
        """
        recent = sum(1 for at in restarts if now - at < self.window)
        if recent >= self.max_restarts:
            return None
        return min(self.max_delay, self.base_delay * 2**recent)


@dataclass(frozen=True)
class ProcessStatus:
    """What the manager knows about one local worker's process."""

    worker_id: str
    state: WorkerState
    error: str | None = None
    pid: int | None = None
    restarts: int = 0


@dataclass
class _Worker:
    config: WorkerConfig
    paths: WorkerPaths
    state: WorkerState = WorkerState.OFFLINE
    error: str | None = None
    process: RunningProcess | None = None
    supervisor: asyncio.Task | None = None
    restarts: list[float] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        """A process exists, or is about to again (the supervisor is waiting out a restart delay)."""
        return self.process is not None or (self.supervisor is not None and not self.supervisor.done())


def _require_local(worker: WorkerConfig) -> None:
    if worker.type != "local":
        raise ProcessError(f"worker '{worker.name}' is a {worker.type} worker; only local workers are launched by the master")


class LocalWorkerManager:
    """Launches and watches the local workers of one master; lives on the server loop.

    The composition root calls `hold_lease()` as early as it can (plain blocking code, no loop needed), then
    `start(local_workers)` on the loop (adopts workers still running from before), `launch`/`stop`/
    `restart` from routes, and `close()` on shutdown. An atexit reaper covers a master that exits
    without running its cleanup (ComfyUI on Ctrl-C).
    """

    def __init__(
        self,
        layout: MasterLayout,
        state_dir: Path,
        arguments: ArgumentReader,
        on_state: StateCallback | None = None,
        stop_on_exit: Callable[[], bool] = lambda: True,
        *,
        probe: Probe = system_stats_answers,
        restart_policy: RestartPolicy = RestartPolicy(),
        ready_timeout: float = 120.0,
        lease_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.5,
        log_max_bytes: int = 5_000_000,
        log_backups: int = 3,
    ) -> None:
        self._layout = layout
        self._state_dir = Path(state_dir)
        self._on_state = on_state
        self._stop_on_exit = stop_on_exit
        self._probe = probe
        self._policy = restart_policy
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self._log_max_bytes = log_max_bytes
        self._log_backups = log_backups
        self._workers: dict[str, _Worker] = {}
        self._lease = Lease(self._state_dir, lease_timeout)
        self._arguments = arguments
        self._closed = False

    @property
    def lease_file(self) -> Path:
        return self._lease.path

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, local_workers: Iterable[WorkerConfig] = ()) -> None:
        """Writes the lease, starts refreshing it, and adopts still-running workers of a previous master.

        A saved process whose worker is gone from `local_workers`, or now has another port, is ended.
        """
        await asyncio.to_thread(self.hold_lease)
        known = {worker.id: worker for worker in local_workers if worker.type == "local"}
        for worker in known.values():
            await self._adopt(self._record(worker))
        folders = await asyncio.to_thread(lambda: sorted((self._state_dir / "workers").glob("*/process.json")))
        for process_file in folders:
            worker_id = process_file.parent.name
            if worker_id not in known:
                await asyncio.to_thread(self._end_saved, process_file, "its worker is no longer in the registry")

    def hold_lease(self) -> None:
        """Writes the lease and keeps it fresh until `close()`; idempotent. Plain blocking code, called
        as early as possible (see `lease.Lease.hold`)."""
        self._lease.hold()
        atexit.register(self._reap_at_exit)

    async def close(self) -> None:
        """Stops supervising. Ends every worker if stop_workers_on_exit, else leaves them on a held lease."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._reap_at_exit)
        await asyncio.to_thread(self._lease.stop_refreshing)
        if self._stop_on_exit():
            for worker_id in list(self._workers):
                await self.stop(worker_id)
        else:
            for record in self._workers.values():
                await self._cancel_supervisor(record)
            await asyncio.to_thread(self._lease.write, True)

    def _reap_at_exit(self) -> None:
        """atexit: the loop is gone, so this is plain blocking code."""
        if self._stop_on_exit():
            for record in self._workers.values():
                if record.process is not None:
                    logger.info("master exiting: stopping local worker '%s'", record.config.name)
                    record.process.end_tree(self._stop_timeout)
                    record.paths.process_file.unlink(missing_ok=True)
        else:
            self._lease.write(hold=True)

    # --- commands --------------------------------------------------------------------------------

    def command(self, worker: WorkerConfig) -> list[str]:
        """The argv `launch` would run for this worker; ProcessError when its extra_args are unclear,
        or when it would listen on the network unlocked."""
        if worker.listen == "network" and not worker.auth_token:
            raise ProcessError(f"worker '{worker.name}' listens on the network but has no auth_token to lock it with: choose "
                               "the network through the panel or the API, which makes one, or set auth_token in workers.json")
        return worker_command(worker, self._read_arguments(worker), self._layout, self._paths(worker.id),
                              self._lease.path, self._lease.timeout)

    def _read_arguments(self, worker: WorkerConfig) -> tuple[Argument, ...]:
        try:
            return self._arguments.read(worker.extra_args, worker.name)
        except ConfigError as error:
            raise ProcessError(str(error)) from None

    def is_running(self, worker_id: str) -> bool:
        """Whether the worker has a process, or is about to again (a restart delay)."""
        record = self._workers.get(worker_id)
        return record is not None and record.running

    def status(self, worker_id: str) -> ProcessStatus:
        record = self._workers.get(worker_id)
        if record is None:
            return ProcessStatus(worker_id, WorkerState.OFFLINE)
        pid = record.process.pid if record.process is not None else None
        return ProcessStatus(worker_id, record.state, record.error, pid, len(record.restarts))

    async def launch(self, worker: WorkerConfig) -> ProcessStatus:
        """Starts the worker and returns at once (LAUNCHING); does nothing if it already runs.

        Raises ProcessError for a non-local worker, unparsable extra_args or a port already in use.
        """
        _require_local(worker)
        command = self.command(worker)
        record = self._record(worker)
        async with record.lock:
            if not record.running:
                record.config = worker
                await self._adopt(record)
            if record.running:
                return self.status(worker.id)
            await self._check_port(worker)
            await asyncio.to_thread(self.hold_lease)
            record.restarts.clear()
            await self._spawn(record, command)
            record.supervisor = asyncio.create_task(self._supervise(record), name=f"distributed-worker-{worker.id}")
        return self.status(worker.id)

    async def stop(self, worker_id: str) -> ProcessStatus:
        """Ends the worker's process tree (terminate -> wait -> kill); nothing to do if it is not running."""
        record = self._workers.get(worker_id)
        if record is None:
            return self.status(worker_id)
        async with record.lock:
            await self._cancel_supervisor(record)
            if record.process is not None:
                logger.info("stopping local worker '%s' (pid %d)", record.config.name, record.process.pid)
                # Stopped on purpose from now on: a share its end cuts short then reads as stopped by
                # the user, not as a worker that closed its websocket.
                self._set(record, WorkerState.OFFLINE, None)
                await asyncio.to_thread(record.process.end_tree, self._stop_timeout)
                record.process = None
            await asyncio.to_thread(record.paths.process_file.unlink, True)
            self._set(record, WorkerState.OFFLINE, None)
        return self.status(worker_id)

    async def restart(self, worker: WorkerConfig) -> ProcessStatus:
        """stop, then launch with the worker's current configuration."""
        await self.stop(worker.id)
        return await self.launch(worker)

    async def log_tail(self, worker_id: str, lines: int = 200) -> list[str]:
        return await asyncio.to_thread(read_log_tail, self._paths(worker_id).log_file, lines)

    # --- internals -------------------------------------------------------------------------------

    def _paths(self, worker_id: str) -> WorkerPaths:
        return WorkerPaths.under(self._state_dir, worker_id)

    def _record(self, worker: WorkerConfig) -> _Worker:
        record = self._workers.get(worker.id)
        if record is None:
            record = self._workers[worker.id] = _Worker(worker, self._paths(worker.id))
        return record

    def _set(self, record: _Worker, state: WorkerState, error: str | None) -> None:
        """The one place a state changes; reports only actual changes."""
        if (record.state, record.error) == (state, error):
            return
        record.state, record.error = state, error
        if error:
            logger.warning("local worker '%s': %s: %s", record.config.name, state.value, error.splitlines()[0])
        else:
            logger.info("local worker '%s': %s", record.config.name, state.value)
        if self._on_state is not None:
            try:
                self._on_state(record.config.id, state, error)
            except Exception:
                logger.exception("on_state callback failed for worker '%s'", record.config.id)

    async def _check_port(self, worker: WorkerConfig) -> None:
        assert worker.port is not None  # guaranteed for local workers by WorkerConfig
        for host in listen_hosts(self._read_arguments(worker), listen_address(worker)):
            if not await asyncio.to_thread(port_is_free, worker.port, host):
                raise ProcessError(f"worker '{worker.name}': port {worker.port} is already in use on {host}")

    async def _fail(self, record: _Worker, reason: str) -> None:
        tail = await self.log_tail(record.config.id, 15)
        record.process = None
        await asyncio.to_thread(record.paths.process_file.unlink, True)
        self._set(record, WorkerState.ERROR, reason + ("; last log lines:\n" + "\n".join(tail) if tail else ""))

    async def _spawn(self, record: _Worker, command: list[str]) -> None:
        self._set(record, WorkerState.LAUNCHING, None)
        spawning = asyncio.ensure_future(asyncio.to_thread(self._start_process, record, command))
        try:
            record.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Stopped while starting: still record the process so that stop() can end it.
            record.process = await spawning
            raise
        logger.info("launched local worker '%s' (pid %d): %s", record.config.name, record.process.pid, shlex.join(command))

    def _start_process(self, record: _Worker, command: list[str]) -> RunningProcess:
        if record.paths.log_file.exists() and record.paths.log_file.stat().st_size > self._log_max_bytes:
            rotate_log(record.paths.log_file, self._log_backups)
        env = worker_env(record.config, dict(os.environ))
        try:
            return start_process(command, self._layout.main_py.parent, env, record.paths, record.config.port)
        except OSError as error:
            raise ProcessError(f"worker '{record.config.name}': cannot start {command[0]}: {error}") from error

    async def _adopt(self, record: _Worker) -> None:
        """Takes over a worker that a previous master launched, if its process still runs unchanged."""
        process = await asyncio.to_thread(self._adoptable, record.paths.process_file, record.config.port)
        if process is None:
            return
        logger.info("adopting local worker '%s' (pid %d), still running from a previous master", record.config.name, process.pid)
        record.process = process
        self._set(record, WorkerState.LAUNCHING, None)
        record.supervisor = asyncio.create_task(self._supervise(record), name=f"distributed-worker-{record.config.id}")

    def _adoptable(self, process_file: Path, port: int | None) -> RunningProcess | None:
        found = load_saved(process_file)
        if found is None:
            return None
        process, saved_port = found
        if saved_port != port:
            logger.info("ending worker process %d (%s): its port changed from %s to %s",
                        process.pid, process_file.parent.name, saved_port, port)
            process.end_tree(self._stop_timeout)
            process_file.unlink(missing_ok=True)
            return None
        return process

    def _end_saved(self, process_file: Path, reason: str) -> None:
        found = load_saved(process_file)
        if found is not None:
            logger.info("ending leftover worker process %d (%s): %s", found[0].pid, process_file.parent.name, reason)
            found[0].end_tree(self._stop_timeout)
        process_file.unlink(missing_ok=True)

    async def _cancel_supervisor(self, record: _Worker) -> None:
        if record.supervisor is not None:
            record.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await record.supervisor
            record.supervisor = None

    async def _supervise(self, record: _Worker) -> None:
        """Readiness, then crash watch and restarts, until stopped or given up."""
        while True:
            if not await self._await_ready(record):
                return
            code = await self._await_exit(record)
            now = time.monotonic()
            delay = self._policy.next_delay(record.restarts, now)
            if delay is None:
                limit = f"{self._policy.max_restarts} restarts within {self._policy.window:g}s"
                await self._fail(record, f"exited unexpectedly (code {code}) after {limit}; not restarting again")
                return
            record.restarts.append(now)
            record.process = None
            self._set(record, WorkerState.LAUNCHING, f"exited unexpectedly (code {code}); restarting in {delay:g}s")
            await asyncio.sleep(delay)  # backoff, not synchronisation
            try:
                await self._check_port(record.config)
                await self._spawn(record, self.command(record.config))
            except ProcessError as error:
                await self._fail(record, f"cannot restart: {error}")
                return

    async def _await_ready(self, record: _Worker) -> bool:
        deadline = time.monotonic() + self._ready_timeout
        assert record.process is not None
        while True:
            code = await asyncio.to_thread(record.process.exit_code)
            if code is not False:
                await self._fail(record, f"exited during startup (code {code})")
                return False
            if await self._probe(record.config):
                self._set(record, WorkerState.ONLINE, None)
                return True
            if time.monotonic() > deadline:
                await asyncio.to_thread(record.process.end_tree, self._stop_timeout)
                await self._fail(record, f"did not answer /system_stats within {self._ready_timeout:g}s")
                return False
            await asyncio.sleep(self._poll_interval)

    async def _await_exit(self, record: _Worker) -> int | None:
        assert record.process is not None
        checks = 0
        while True:
            code = await asyncio.to_thread(record.process.exit_code)
            if code is not False:
                return code
            checks += 1
            if checks % 20 == 0:
                await asyncio.to_thread(self._rotate_if_large, record.paths.log_file)
            await asyncio.sleep(self._poll_interval)

    def _rotate_if_large(self, log_file: Path) -> None:
        with contextlib.suppress(OSError):
            if log_file.stat().st_size > self._log_max_bytes:
                rotate_log(log_file, self._log_backups)
