"""The master's side of "Copy missing models": files streamed from its model folders to one worker.

One copy per worker at a time, run as a background task on the server loop; its snapshot is
published on every change and a few times a second while bytes flow (speed and time left).

Per file: ask the worker where the upload stands (`remote.upload_status`), send the rest in chunks
of `CHUNK_BYTES` (each a streamed PUT), then ask the worker to check the sha256 and put the file in
place. The master hashes the whole file as it reads it; bytes the worker already holds are read and
hashed here but not sent again. A refused file (a different file of that name, no room, a failed
hash) fails alone and the next is copied; a worker that goes away fails the copy, and pressing
the button again resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ...config.models import WorkerConfig
from ...errors import ModelFileConflict, ModelFileError, WorkerUnavailable
from ...workers.client import WorkerClient
from . import remote
from .hashes import READ_BLOCK, HashCache

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 20
"""Bytes per PUT: a chunk is the unit a broken copy loses at most, and a progress checkpoint."""
PUBLISH_INTERVAL_S = 0.25
SPEED_WINDOW_S = 3.0
RESYNC_TRIES = 2


class CopyState(enum.StrEnum):
    COPYING = "copying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FileState(enum.StrEnum):
    WAITING = "waiting"
    COPYING = "copying"
    VERIFYING = "verifying"
    DONE = "done"
    PRESENT = "present"
    """The worker had an identical file already."""
    FAILED = "failed"


FINISHED_FILE_STATES = (FileState.DONE, FileState.PRESENT)


@dataclass
class CopyFile:
    """One file of a copy: where it comes from on the master, where it goes on the worker."""

    kind: str
    name: str
    source: Path
    size: int
    state: FileState = FileState.WAITING
    done: int = 0
    resumed_from: int | None = None
    """The offset the worker already held when this copy started sending, if any."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"folder": self.kind, "name": self.name, "size": self.size, "state": self.state.value, "done_bytes": self.done,
                "resumed_from": self.resumed_from, "error": self.error}


class ClientSource(Protocol):
    def client(self, worker: WorkerConfig) -> WorkerClient: ...


@dataclass
class ModelCopy:
    """One worker's copy: its files, its state, and how fast it goes."""

    worker_id: str
    worker_name: str
    files: list[CopyFile]
    limit_bytes_per_s: float | None = None
    state: CopyState = CopyState.COPYING
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _pace_origin: tuple[float, int] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def done_bytes(self) -> int:
        return sum(f.size if f.state in FINISHED_FILE_STATES else f.done for f in self.files)

    def sample(self, now: float) -> None:
        """Notes the bytes done now, for the speed over the last few seconds."""
        self._samples.append((now, self.sent_bytes()))
        while len(self._samples) > 2 and now - self._samples[0][0] > SPEED_WINDOW_S:
            self._samples.popleft()

    def seconds_ahead(self, now: float) -> float:
        """How far the copy is ahead of its speed limit (0 without a limit): the time to wait."""
        if not self.limit_bytes_per_s:
            return 0.0
        if self._pace_origin is None:
            self._pace_origin = (now, self.sent_bytes())
        started, sent_then = self._pace_origin
        return max((self.sent_bytes() - sent_then) / self.limit_bytes_per_s - (now - started), 0.0)

    def sent_bytes(self) -> int:
        """Bytes actually sent by this copy (what the worker held before does not count as speed)."""
        return sum(max(f.done - (f.resumed_from or 0), 0) for f in self.files if f.state != FileState.PRESENT)

    def bytes_per_s(self) -> float | None:
        if self.state != CopyState.COPYING or len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 and b1 > b0 else None

    def snapshot(self) -> dict[str, Any]:
        speed = self.bytes_per_s()
        left = self.total_bytes - self.done_bytes
        return {
            "worker_id": self.worker_id,
            "worker_name": self.worker_name,
            "state": self.state.value,
            "error": self.error,
            "files": [f.as_json() for f in self.files],
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "bytes_per_s": speed,
            "seconds_left": left / speed if speed else None,
            "limit_bytes_per_s": self.limit_bytes_per_s,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class _Resync(Exception):
    """Internal: the worker holds another length of the partial than this copy expected."""


class ModelCopier:
    """Runs at most one copy per worker, publishing each copy's snapshot through `publish`."""

    def __init__(self, clients: ClientSource, hashes: HashCache, publish: Callable[[dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = clients
        self._hashes = hashes
        self._publish = publish
        self._clock = clock
        self._copies: dict[str, ModelCopy] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._published_at: dict[str, float] = {}

    def copies(self) -> list[ModelCopy]:
        return list(self._copies.values())

    def get(self, worker_id: str) -> ModelCopy | None:
        return self._copies.get(worker_id)

    def start(self, worker: WorkerConfig, files: list[CopyFile], limit_bytes_per_s: float | None = None) -> ModelCopy:
        """Starts copying `files` to the worker; ModelFileConflict while a copy to it runs."""
        running = self._tasks.get(worker.id)
        if running is not None and not running.done():
            raise ModelFileConflict(f"a copy to worker '{worker.name}' is running already; wait for it or cancel it")
        copy = ModelCopy(worker.id, worker.name, files, limit_bytes_per_s)
        self._copies[worker.id] = copy
        self._tasks[worker.id] = asyncio.ensure_future(self._run(worker, copy))
        self._emit(copy, force=True)
        return copy

    async def cancel(self, worker_id: str) -> ModelCopy | None:
        """Stops a running copy; what the worker received stays there for a later resume."""
        task = self._tasks.get(worker_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        copy = self._copies.get(worker_id)
        if copy is not None and copy.state == CopyState.COPYING:  # cancelled before it began
            self._cancelled(copy)
        return copy

    async def close(self) -> None:
        for worker_id in list(self._tasks):
            await self.cancel(worker_id)

    # --- one copy -------------------------------------------------------------------------------

    async def _run(self, worker: WorkerConfig, copy: ModelCopy) -> None:
        client = self._clients.client(worker)
        try:
            for file in copy.files:
                try:
                    await self._copy_file(client, copy, file)
                except (ModelFileError, OSError) as error:  # OSError: the master's own file went away
                    file.state, file.error = FileState.FAILED, str(error)
                    logger.warning("Copy of %s/%s to %s failed: %s", file.kind, file.name, worker.name, error)
                self._emit(copy, force=True)
            failed = [f for f in copy.files if f.state == FileState.FAILED]
            copy.state = CopyState.FAILED if failed else CopyState.DONE
            if failed:
                copy.error = f"{len(copy.files) - len(failed)} of {len(copy.files)} files copied; " + "; ".join(
                    f"{f.name}: {f.error}" for f in failed)
        except WorkerUnavailable as error:
            copy.state, copy.error = CopyState.FAILED, f"{error} (copy again to resume where it stopped)"
            for file in copy.files:
                if file.state not in (*FINISHED_FILE_STATES, FileState.FAILED):
                    file.state, file.error = FileState.FAILED, str(error)
            logger.warning("Copy of models to %s broke off: %s", worker.name, error)
        except asyncio.CancelledError:
            self._cancelled(copy)
            raise
        except Exception as error:  # a bug: the copy still ends, in a state the panel shows
            logger.exception("Copy of models to %s failed", worker.name)
            copy.state, copy.error = CopyState.FAILED, f"the copy stopped on an unexpected error: {error}"
        copy.finished_at = time.time()
        self._emit(copy, force=True)

    def _cancelled(self, copy: ModelCopy) -> None:
        copy.state, copy.error = CopyState.CANCELLED, "cancelled; copy again to resume where it stopped"
        copy.finished_at = time.time()
        self._emit(copy, force=True)

    async def _copy_file(self, client: WorkerClient, copy: ModelCopy, file: CopyFile) -> None:
        stat = await asyncio.to_thread(os.stat, file.source)
        if stat.st_size != file.size:
            raise ModelFileError(f"{file.name} changed on the master since the copy was planned")
        params = remote.upload_params(file.kind, file.name, file.size, version_key(file, stat.st_mtime_ns))
        for _ in range(RESYNC_TRIES):
            where = await self._where(client, params, file)
            if where is None:
                file.state, file.done = FileState.PRESENT, file.size
                return
            try:
                digest = await self._send(client, copy, file, params, where)
                break
            except _Resync:
                continue
        else:
            raise ModelFileConflict(f"{file.name} is being written by someone else on worker '{client.name}'")
        if (await asyncio.to_thread(os.stat, file.source)).st_mtime_ns != stat.st_mtime_ns:
            raise ModelFileError(f"{file.name} changed on the master during the copy; copy again")
        file.state = FileState.VERIFYING
        self._emit(copy, force=True)
        await remote.finish(client, params, digest)
        self._hashes.remember(file.source, digest)
        file.state, file.done = FileState.DONE, file.size

    async def _where(self, client: WorkerClient, params: dict[str, str], file: CopyFile) -> int | None:
        """The offset to send from, or None when the worker has an identical file."""
        known = self._hashes.cached(file.source)
        status = await remote.upload_status(client, {**params, "sha256": known} if known else params)
        if status.get("state") == "exists":  # same name and size: identical only if the hashes agree
            status = await remote.upload_status(client, {**params, "sha256": await self._hashes.sha256(file.source)})
        if status.get("state") == "present":
            return None
        offset = status.get("offset")
        if not isinstance(offset, int) or not 0 <= offset <= file.size:
            raise ModelFileError(f"worker '{client.name}' answered an impossible offset for {file.name}")
        return offset

    async def _send(self, client: WorkerClient, copy: ModelCopy, file: CopyFile, params: dict[str, str], offset: int) -> str:
        """Sends the file from `offset` in chunks; returns the sha256 of the whole file."""
        file.state = FileState.COPYING
        file.done = offset
        file.resumed_from = offset or None
        copy.sample(self._clock())
        self._emit(copy, force=True)
        known = self._hashes.cached(file.source)  # sent to another worker before: no need to hash it again
        digest = None if known else hashlib.sha256()
        with open(file.source, "rb") as source:  # noqa: ASYNC230 - reads happen in threads below
            if digest is not None and offset:
                await asyncio.to_thread(_hash_prefix, source, digest, offset)
            elif offset:
                source.seek(offset)
            position = offset
            while position < file.size:
                end = min(position + CHUNK_BYTES, file.size)
                body = self._blocks(source, digest, end - position, copy, file)
                held = await remote.send_chunk(client, params, position, body)
                if held != end:
                    raise _Resync
                position = file.done = end
                self._emit(copy)
        return digest.hexdigest() if digest is not None else str(known)

    async def _blocks(self, source: BinaryIO, digest: Any, length: int, copy: ModelCopy, file: CopyFile) -> AsyncIterator[bytes]:
        """A chunk's body, at most at the copy's speed limit. Three things overlap: the next block is
        read (a thread), this one hashed (another thread, in order) and sent (the loop)."""
        left = length
        pending = asyncio.ensure_future(asyncio.to_thread(source.read, min(READ_BLOCK, left)))
        hashing: asyncio.Future[None] | None = None
        try:
            while left > 0:
                block = await pending
                if not block:
                    raise ModelFileError(f"{file.name} became shorter on the master during the copy")
                left -= len(block)
                if left > 0:
                    pending = asyncio.ensure_future(asyncio.to_thread(source.read, min(READ_BLOCK, left)))
                if digest is not None:
                    if hashing is not None:
                        await hashing
                    hashing = asyncio.ensure_future(asyncio.to_thread(digest.update, block))
                yield block
                file.done += len(block)
                now = self._clock()
                copy.sample(now)
                ahead = copy.seconds_ahead(now)
                if ahead > 0:  # a speed limit keeps a shared uplink usable
                    await asyncio.sleep(ahead)
                self._emit(copy)
            if hashing is not None:
                await hashing
        finally:
            # A request that broke off stops pulling blocks: let the read in flight end before the file closes.
            await asyncio.gather(pending, *([hashing] if hashing else []), return_exceptions=True)

    def _emit(self, copy: ModelCopy, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._published_at.get(copy.worker_id, 0.0) < PUBLISH_INTERVAL_S:
            return
        self._published_at[copy.worker_id] = now
        self._publish(copy.snapshot())


def version_key(file: CopyFile, mtime_ns: int) -> str:
    """Names this version of the source: a partial on the worker is continued only by the same one."""
    return hashlib.sha256(f"{file.kind}/{file.name}:{file.size}:{mtime_ns}".encode()).hexdigest()[:32]


def _hash_prefix(source: BinaryIO, digest: Any, length: int) -> None:
    """Hashes the first `length` bytes (those the worker holds already) without sending them."""
    left = length
    while left > 0:
        block = source.read(min(READ_BLOCK, left))
        if not block:
            raise ModelFileError("the source file became shorter during the copy")
        digest.update(block)
        left -= len(block)
