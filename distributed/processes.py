"""Local workers: one ComfyUI process per GPU, launched, watched, restarted and ended by the master.

A worker is the master's own ComfyUI (same interpreter, same main.py) started through
worker_launcher.py with its own port, CUDA_VISIBLE_DEVICES and per-worker folders:

    <state_dir>/master.lease.json          the lease every worker's watchdog follows
    <state_dir>/workers/<id>/process.json  pid, create_time, port, command: lets a restarted master adopt it
    <state_dir>/workers/<id>/worker.log    stdout + stderr (worker.log.1 ... after rotation)
    <state_dir>/workers/<id>/{output,input,temp,user}, comfyui.db

The worker shares the master's base directory (models, custom_nodes) and extra model paths, but
gets its own output, input, temp and user folders and database, because ComfyUI wipes its temp
folder at start and exit and keeps per-install state in the user folder and sqlite file.

Lifecycle of one worker, reported through `on_state`:

    launch -> LAUNCHING -> ONLINE (its /system_stats answers)
                        -> ERROR  (it exited during startup, or the readiness deadline passed)
    ONLINE -> unexpected exit -> LAUNCHING again after a backoff delay, or ERROR past the restart limit
    stop   -> OFFLINE (process tree ended: terminate -> wait -> kill, by PID, never by name)

Everything runs on the server loop; calls that block (psutil, Popen, file I/O) go through
asyncio.to_thread. The one exception is the lease refresh, a thread of its own (see `hold_lease`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from .errors import ProcessError
from .models import WorkerConfig, WorkerState

logger = logging.getLogger(__name__)

LAUNCHER_PATH = Path(__file__).resolve().parent / "worker_launcher.py"
WORKER_ID_ENV = "COMFYUI_DISTRIBUTED_WORKER_ID"
"""Set in every local worker's environment, so the extension loaded inside a worker knows it is one."""

DEFAULT_LISTEN = "127.0.0.1"
_MANAGED_FLAGS = ("--port",)

StateCallback = Callable[[str, WorkerState, "str | None"], None]
Probe = Callable[[str], Awaitable[bool]]


# --- pure pieces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterLayout:
    """What a worker takes from the master's own ComfyUI (app.py reads it from folder_paths/args)."""

    main_py: Path
    base_directory: Path
    extra_model_paths_configs: tuple[Path, ...] = ()
    device_args: tuple[str, ...] = ()
    """The master's device flags that workers follow (e.g. --cpu on a machine without a GPU)."""


@dataclass(frozen=True)
class WorkerPaths:
    """The per-worker folder under the manager's state folder."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path, worker_id: str) -> WorkerPaths:
        return cls(state_dir / "workers" / worker_id)

    @property
    def process_file(self) -> Path:
        return self.root / "process.json"

    @property
    def log_file(self) -> Path:
        return self.root / "worker.log"

    @property
    def database(self) -> Path:
        return self.root / "comfyui.db"

    def folders(self) -> tuple[Path, ...]:
        # ComfyUI appends "temp" to --temp-directory itself, so the temp folder is root/temp.
        return tuple(self.root / name for name in ("output", "input", "temp", "user"))


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

    def as_json(self) -> dict:
        return {"worker_id": self.worker_id, "state": self.state.value, "error": self.error, "pid": self.pid, "restarts": self.restarts}


def parse_extra_args(worker: WorkerConfig) -> list[str]:
    """The worker's extra_args as argv words (shell-like quoting, never run through a shell)."""
    try:
        words = shlex.split(worker.extra_args)
    except ValueError as error:
        raise ProcessError(f"worker '{worker.name}': extra_args cannot be parsed: {error}") from None
    for word in words:
        flag = word.split("=", 1)[0]
        if flag in _MANAGED_FLAGS:
            raise ProcessError(f"worker '{worker.name}': set the port in the worker's port field, not {flag} in extra_args")
    return words


def _flag_value(words: Sequence[str], flag: str) -> str | None:
    """The value of the last `flag` in `words` ("" when given without one), or None when absent."""
    value = None
    for position, word in enumerate(words):
        if word == flag:
            following = words[position + 1] if position + 1 < len(words) else ""
            value = "" if following.startswith("-") else following
        elif word.startswith(flag + "="):
            value = word.split("=", 1)[1]
    return value


def listen_hosts(worker: WorkerConfig) -> list[str]:
    """The addresses the worker will bind, as ComfyUI reads --listen (bare --listen means all)."""
    value = _flag_value(parse_extra_args(worker), "--listen")
    if value is None:
        return [DEFAULT_LISTEN]
    return [host.strip() for host in (value or "0.0.0.0,::").split(",") if host.strip()]


def worker_command(
    worker: WorkerConfig,
    layout: MasterLayout,
    paths: WorkerPaths,
    lease_file: Path | None,
    lease_timeout: float,
    python: str = sys.executable,
) -> list[str]:
    """The argv of a local worker. The worker's extra_args come last, so its own flags win."""
    extra = parse_extra_args(worker)
    command = [python]
    if sys.flags.no_user_site:
        command.append("-s")  # portable installs run with -s; keep the worker on the same packages
    command.append(str(LAUNCHER_PATH))
    if lease_file is not None:
        command += ["--lease", str(lease_file), "--lease-timeout", f"{lease_timeout:g}"]
    command += ["--", str(layout.main_py), "--port", str(worker.port)]
    if _flag_value(extra, "--listen") is None:
        command += ["--listen", DEFAULT_LISTEN]
    command += [
        "--disable-auto-launch",
        "--base-directory", str(layout.base_directory),
        "--output-directory", str(paths.root / "output"),
        "--input-directory", str(paths.root / "input"),
        "--temp-directory", str(paths.root),
        "--user-directory", str(paths.root / "user"),
        "--database-url", f"sqlite:///{paths.database.as_posix()}",
    ]
    if layout.extra_model_paths_configs:
        command += ["--extra-model-paths-config", *(str(path) for path in layout.extra_model_paths_configs)]
    return command + list(layout.device_args) + extra


def worker_env(worker: WorkerConfig, base_env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: the master's, plus its GPU and an unbuffered log."""
    env = dict(base_env)
    env["PYTHONUNBUFFERED"] = "1"
    env[WORKER_ID_ENV] = worker.id
    if worker.cuda_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(worker.cuda_device)
        # NVML (gpus.py) numbers devices by PCI bus; make CUDA use the same numbering.
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env


def port_is_free(port: int, host: str = DEFAULT_LISTEN) -> bool:
    """Whether a server could bind `host:port` now (binds and releases a socket; blocking but short)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            # As aiohttp does: a port left in TIME_WAIT by a worker that just stopped is still usable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def system_stats_answers(base_url: str, timeout: float = 2.0) -> bool:
    """Whether GET /system_stats answers 200; the default readiness probe (stdlib only)."""
    parts = urlsplit(base_url)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            try:
                writer.write(f"GET /system_stats HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return status_line.split(b" ")[1:2] == [b"200"]


def read_log_tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file, reading only its end."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            block = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                log.seek(size)
                data = log.read(step) + data
                block *= 2
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def rotate_log(path: Path, backups: int) -> None:
    """Copies the log to .1 (shifting older ones) and empties it in place.

    Copy-then-truncate because the worker keeps writing to its open file: it was opened for
    appending, so its next write lands at the new end.
    """
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as log:
        log.truncate(0)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class _Process:
    """A running worker process: launched by this master (popen set) or adopted from an earlier one."""

    pid: int
    create_time: float
    popen: subprocess.Popen | None = None

    def is_this(self, process: psutil.Process) -> bool:
        # A PID can be reused by an unrelated process; the start time tells them apart.
        return abs(process.create_time() - self.create_time) < 0.01

    def exit_code(self) -> int | bool | None:
        """False while running; the exit code (None if unknown, for adopted ones) once it ended."""
        if self.popen is not None:
            code = self.popen.poll()
            return False if code is None else code
        try:
            process = psutil.Process(self.pid)
            if self.is_this(process) and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
        return None

    def end_tree(self, timeout: float) -> None:
        """terminate -> wait -> kill, for the worker and every process it started."""
        try:
            root = psutil.Process(self.pid)
            if not self.is_this(root):
                return
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(family, timeout=timeout)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=timeout)
        if self.popen is not None:
            self.popen.poll()  # reap it, so no zombie is left behind


def _load_saved(process_file: Path) -> tuple[_Process, int | None] | None:
    """The process a process.json names and its port, if it is still that very process.

    A stale file (process gone, PID reused by another program) is removed.
    """
    try:
        saved = json.loads(process_file.read_text(encoding="utf-8"))
        process = _Process(int(saved["pid"]), float(saved["create_time"]))
        live = psutil.Process(process.pid)
        same = process.is_this(live) and live.status() != psutil.STATUS_ZOMBIE
        with contextlib.suppress(psutil.AccessDenied):
            same = same and live.cmdline() == saved["command"]
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        same = False
    if not same:
        process_file.unlink(missing_ok=True)
        return None
    return process, saved.get("port")


@dataclass
class _Worker:
    config: WorkerConfig
    paths: WorkerPaths
    state: WorkerState = WorkerState.OFFLINE
    error: str | None = None
    process: _Process | None = None
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

    app.py calls `hold_lease()` as early as it can (plain blocking code, no loop needed), then
    `start(local_workers)` on the loop (adopts workers still running from before), `launch`/`stop`/
    `restart` from routes, and `close()` on shutdown. An atexit reaper covers a master that exits
    without running its cleanup (ComfyUI on Ctrl-C).
    """

    def __init__(
        self,
        layout: MasterLayout,
        state_dir: Path,
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
        self._lease_timeout = lease_timeout
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self._log_max_bytes = log_max_bytes
        self._log_backups = log_backups
        self._workers: dict[str, _Worker] = {}
        self._lease_thread: threading.Thread | None = None
        self._lease_stop = threading.Event()
        self._closed = False

    @property
    def lease_file(self) -> Path:
        return self._state_dir / "master.lease.json"

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
        """Writes the lease and keeps refreshing it from a thread, until `close()`; idempotent.

        A thread rather than a loop task, so that the lease stays fresh while the master is alive
        even when its loop is busy or not running yet: while ComfyUI imports the remaining custom
        nodes at start-up, for instance. Call it as early as possible in a restarted master, so that
        workers still running from the previous one see a fresh lease before their deadline.
        """
        if self._lease_thread is not None:
            return
        self.write_lease()
        self._lease_thread = threading.Thread(target=self._refresh_lease, name="distributed-lease", daemon=True)
        self._lease_thread.start()
        atexit.register(self._reap_at_exit)

    async def close(self) -> None:
        """Stops supervising. Ends every worker if stop_workers_on_exit, else leaves them on a held lease."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._reap_at_exit)
        self._lease_stop.set()
        if self._lease_thread is not None:
            await asyncio.to_thread(self._lease_thread.join)
        if self._stop_on_exit():
            for worker_id in list(self._workers):
                await self.stop(worker_id)
        else:
            for record in self._workers.values():
                await self._cancel_supervisor(record)
            await asyncio.to_thread(self.write_lease, True)

    def _reap_at_exit(self) -> None:
        """atexit: the loop is gone, so this is plain blocking code."""
        if self._stop_on_exit():
            for record in self._workers.values():
                if record.process is not None:
                    logger.info("master exiting: stopping local worker '%s'", record.config.name)
                    record.process.end_tree(self._stop_timeout)
                    record.paths.process_file.unlink(missing_ok=True)
        else:
            self.write_lease(hold=True)

    def write_lease(self, hold: bool = False) -> None:
        """Rewrites the lease atomically. `hold` suspends the workers' deadline (clean exit, workers kept)."""
        self._state_dir.mkdir(parents=True, exist_ok=True)
        lease = {"pid": os.getpid(), "updated": time.time(), "hold": hold}
        temporary = self.lease_file.with_name(f"{self.lease_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(lease), encoding="utf-8")
        try:
            os.replace(temporary, self.lease_file)
        except PermissionError:
            # Windows refuses to replace a file another process has open; the next refresh retries.
            logger.debug("lease %s busy, retrying at the next refresh", self.lease_file)
            temporary.unlink(missing_ok=True)

    def _refresh_lease(self) -> None:
        interval = max(0.2, self._lease_timeout / 5)
        while not self._lease_stop.wait(interval):
            try:
                self.write_lease()
            except OSError as error:
                logger.warning("cannot refresh the worker lease %s: %s", self.lease_file, error)

    # --- commands --------------------------------------------------------------------------------

    def command(self, worker: WorkerConfig) -> list[str]:
        """The argv `launch` would run for this worker."""
        return worker_command(worker, self._layout, self._paths(worker.id), self.lease_file, self._lease_timeout)

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
        for host in listen_hosts(worker):
            if not await asyncio.to_thread(port_is_free, worker.port, host):
                raise ProcessError(f"worker '{worker.name}': port {worker.port} is already in use on {host}")

    async def _fail(self, record: _Worker, reason: str) -> None:
        tail = await self.log_tail(record.config.id, 15)
        record.process = None
        await asyncio.to_thread(record.paths.process_file.unlink, True)
        self._set(record, WorkerState.ERROR, reason + ("; last log lines:\n" + "\n".join(tail) if tail else ""))

    async def _spawn(self, record: _Worker, command: list[str]) -> None:
        self._set(record, WorkerState.LAUNCHING, None)
        spawning = asyncio.ensure_future(asyncio.to_thread(self._start_process, record.config, record.paths, command))
        try:
            record.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Stopped while starting: still record the process so that stop() can end it.
            record.process = await spawning
            raise
        logger.info("launched local worker '%s' (pid %d): %s", record.config.name, record.process.pid, shlex.join(command))

    def _start_process(self, worker: WorkerConfig, paths: WorkerPaths, command: list[str]) -> _Process:
        for folder in paths.folders():
            folder.mkdir(parents=True, exist_ok=True)
        if paths.log_file.exists() and paths.log_file.stat().st_size > self._log_max_bytes:
            rotate_log(paths.log_file, self._log_backups)
        options: dict = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            # Its own session: a Ctrl-C in the master's terminal reaches the master only, which then
            # decides (stop_workers_on_exit) what happens to its workers.
            options["start_new_session"] = True
        with paths.log_file.open("ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} launching: {shlex.join(command)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    command, cwd=self._layout.main_py.parent, env=worker_env(worker, dict(os.environ)),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **options,
                )
            except OSError as error:
                raise ProcessError(f"worker '{worker.name}': cannot start {command[0]}: {error}") from error
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # already gone; the supervisor sees it exit
        saved = {"pid": popen.pid, "create_time": create_time, "port": worker.port, "command": command}
        paths.process_file.write_text(json.dumps(saved), encoding="utf-8")
        return _Process(popen.pid, create_time, popen)

    async def _adopt(self, record: _Worker) -> None:
        """Takes over a worker that a previous master launched, if its process still runs unchanged."""
        process = await asyncio.to_thread(self._adoptable, record.paths.process_file, record.config.port)
        if process is None:
            return
        logger.info("adopting local worker '%s' (pid %d), still running from a previous master", record.config.name, process.pid)
        record.process = process
        self._set(record, WorkerState.LAUNCHING, None)
        record.supervisor = asyncio.create_task(self._supervise(record), name=f"distributed-worker-{record.config.id}")

    def _adoptable(self, process_file: Path, port: int | None) -> _Process | None:
        found = _load_saved(process_file)
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
        found = _load_saved(process_file)
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
            if await self._probe(record.config.base_url):
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
