"""A pool's start and stop commands: argument lists run without a shell, with deadlines, and the last
lines of their output kept for the report of a failure.

The start command prints one JSON line once its member has an address:

    {"url": "https://pod-8188.proxy.example", "token": "...", "headers": {"X-Key": "..."}}

`token` and `headers` are optional. Lines before it (progress, curl's chatter) are ignored. After
that line the command may exit or keep running (a script that runs the member in the foreground);
its output is then still read, so it never blocks on a full pipe, and the last lines are kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Mapping
from typing import Any

import psutil

from ...errors import ProcessError
from ..local.command import WORKER_ID_ENV
from ..local.processes import RunningProcess
from ..lock import WORKER_TOKEN_ENV

logger = logging.getLogger(__name__)

MEMBER_ID_ENV = "DISTRIBUTED_MEMBER_ID"
POOL_ENV = "DISTRIBUTED_POOL"
LINES_KEPT = 40
LINE_CHARS_KEPT = 2000
LINE_LIMIT = 256 * 1024
"""Longest output line read whole; longer ones are cut into pieces (an address line is far shorter)."""
END_TIMEOUT = 10.0


class CommandFailed(ProcessError):
    """Raised when a pool command fails: it could not run, exited badly, or ran past its deadline.

    `output` holds the last lines it printed, for the panel's "last start failure".
    """

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def member_argv(template: list[str], member_id: str, pool: str) -> list[str]:
    """The command for one member: `{member_id}` and `{pool}` replaced in every argument."""
    return [argument.replace("{member_id}", member_id).replace("{pool}", pool) for argument in template]


def member_env(base: Mapping[str, str], member_id: str, pool: str) -> dict[str, str]:
    """The master's environment plus the member's id and pool. A ComfyUI the command starts here, with
    this extension, then acts as a worker (never as a second master running the same pools), and is
    not locked with a token of the master's own that nobody would send it."""
    env = {name: value for name, value in base.items() if name != WORKER_TOKEN_ENV}
    return {**env, MEMBER_ID_ENV: member_id, POOL_ENV: pool, WORKER_ID_ENV: member_id}


class OutputTail:
    """The last lines of one output stream, each cut to a readable length."""

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=LINES_KEPT)

    def add(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        self._lines.append(line if len(line) <= LINE_CHARS_KEPT else line[:LINE_CHARS_KEPT] + " …")

    def text(self) -> str:
        return "\n".join(self._lines)


def address_from(line: str) -> dict[str, Any] | None:
    """The JSON object an output line holds, or None for any other line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class CommandRun:
    """One run of a pool command: its process and the last lines it printed (stdout and stderr apart)."""

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.argv = argv
        self._env = dict(env)
        self._process: asyncio.subprocess.Process | None = None
        self.running: RunningProcess | None = None
        """The process by PID and start time, for ending it (and what it started) later."""
        self.stdout = OutputTail()
        self.stderr = OutputTail()
        self._readers: list[asyncio.Task] = []

    def output(self) -> str:
        parts = [f"{name}:\n{tail.text()}" for name, tail in (("stdout", self.stdout), ("stderr", self.stderr)) if tail.text()]
        return "\n".join(parts) or "(no output)"

    async def spawn(self) -> None:
        """Starts the command in its own session (a Ctrl-C in the master's terminal is the master's alone)."""
        options: dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env,
                limit=LINE_LIMIT, **options,
            )
        except OSError as error:
            raise CommandFailed(f"cannot run {self.argv[0]}: {error}") from None
        try:
            create_time = await asyncio.to_thread(lambda: psutil.Process(self._process.pid).create_time())
        except psutil.Error:
            create_time = 0.0  # already gone; its exit code tells the rest
        self.running = RunningProcess(self._process.pid, create_time)
        assert self._process.stderr is not None
        self._readers.append(asyncio.ensure_future(self._drain(self._process.stderr, self.stderr)))

    async def address(self, timeout: float) -> dict[str, Any]:
        """Reads stdout until the first JSON object line and returns it; then keeps reading in the
        background. CommandFailed when the command exits first or prints nothing within `timeout`."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await _read_line(stdout)
                    if not raw:
                        code = await self._process.wait()
                        await self._settle_readers()
                        if code:
                            raise CommandFailed(f"exited with code {code} before printing its address", self.output())
                        raise CommandFailed("exited without printing its address (one JSON line with a url)", self.output())
                    found = address_from(raw.decode("utf-8", errors="replace"))
                    if found is None:
                        self.stdout.add(raw)
                        continue
                    self.stdout.add(b"(the address line; not repeated here, it may hold a token)")
                    self._readers.append(asyncio.ensure_future(self._drain(stdout, self.stdout)))
                    return found
        except TimeoutError:
            raise CommandFailed(f"printed no address within {timeout:g}s", self.output()) from None

    async def finish(self, timeout: float) -> None:
        """Waits for the command to exit; CommandFailed on a non-zero code or past `timeout` (it is ended)."""
        assert self._process is not None and self._process.stdout is not None
        self._readers.append(asyncio.ensure_future(self._drain(self._process.stdout, self.stdout)))
        try:
            async with asyncio.timeout(timeout):
                code = await self._process.wait()
                await self._settle_readers()
        except TimeoutError:
            await self.end()
            raise CommandFailed(f"did not finish within {timeout:g}s", self.output()) from None
        if code:
            raise CommandFailed(f"exited with code {code}", self.output())

    async def end(self) -> None:
        """Ends the command and everything it started that still runs (terminate, wait, kill)."""
        if self.running is not None and self._process is not None and self._process.returncode is None:
            await asyncio.to_thread(self.running.end_tree, END_TIMEOUT)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(self._process.wait(), END_TIMEOUT)
        await self._settle_readers()

    async def _settle_readers(self) -> None:
        """Lets the readers take the last output of an exited command, then stops them."""
        pending = [task for task in self._readers if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()

    @staticmethod
    async def _drain(stream: asyncio.StreamReader, tail: OutputTail) -> None:
        while raw := await _read_line(stream):
            tail.add(raw)


async def _read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line, or a LINE_LIMIT piece of an overlong one; b"" at the end of the stream."""
    try:
        return await stream.readline()
    except ValueError:  # the line is longer than the stream's limit: take what fits
        return await stream.read(LINE_LIMIT)
