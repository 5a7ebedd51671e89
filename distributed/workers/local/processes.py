"""A worker's process as the master knows it: by PID and start time, never by name.

A PID can be reused by an unrelated program once the worker ends, so every check compares the start
time too. `process.json` records a launched worker so that a restarted master can adopt it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .command import WorkerPaths


@dataclass
class RunningProcess:
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


def load_saved(process_file: Path) -> tuple[RunningProcess, int | None] | None:
    """The process a process.json names and its port, if it is still that very process.

    A stale file (process gone, PID reused by another program) is removed.
    """
    try:
        saved = json.loads(process_file.read_text(encoding="utf-8"))
        process = RunningProcess(int(saved["pid"]), float(saved["create_time"]))
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


def start_process(command: list[str], cwd: Path, env: dict[str, str], paths: WorkerPaths, port: int | None) -> RunningProcess:
    """Starts a worker with its output appended to its log, and records it in its process.json.

    Blocking (Popen, file I/O): the manager calls it in a thread. Raises OSError when it cannot start.
    """
    for folder in paths.folders():
        folder.mkdir(parents=True, exist_ok=True)
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
        popen = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **options)
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # already gone; the supervisor sees it exit
    saved = {"pid": popen.pid, "create_time": create_time, "port": port, "command": command}
    paths.process_file.write_text(json.dumps(saved), encoding="utf-8")
    return RunningProcess(popen.pid, create_time, popen)
