"""The receiving end of "Copy missing models": files written into this instance's model folders.

A master sends a file in chunks (`receive`), each appended to a hidden partial file beside the
target (`.<name>.<key>.part`); `finish` checks the whole against the sha256 the master sends and
puts it in place. The `key` names the version of the source file (the master derives it from its
size and mtime), so a copy that broke off resumes at the partial's length (`status`) and a partial
of another version is never continued.

The rules that make this safe to expose:

- Names and folder kinds pass `paths` (no traversal, absolute paths, code folders or symlinks out),
  and the partial is opened without following a symlink.
- Free space is checked before each chunk (with a spare margin); a disk that fills up anyway
  (ENOSPC) loses the partial, not the worker.
- A file of the same name is never overwritten: an identical one counts as present, a different one
  is a conflict, and the final step links the partial in place, which fails if a file appeared.
- A file that fails its hash is deleted. A partial is never listed by ComfyUI (hidden, `.part`).
- One upload per target at a time; a second is refused, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError, ModelFileConflict, ModelHashMismatch, ModelPathRefused, NoSpaceForModel
from .hashes import sha256_of
from .library import ModelLibrary
from .paths import ModelFolder, clean_name, disk_free, existing_file, inside, target_path

logger = logging.getLogger(__name__)

WRITE_BLOCK = 4 << 20
"""Bytes gathered before one write (and hash update) in a thread."""
RESERVE_BYTES = 64 << 20
"""Free space a copy leaves on the worker's disk, so ComfyUI can still write its outputs."""
KEY_PATTERN = re.compile(r"^[0-9a-f]{16,64}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
PARTIAL_SUFFIX = ".part"
MAX_HASHERS = 64
NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_BINARY = getattr(os, "O_BINARY", 0)


def megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


@dataclass(frozen=True)
class Upload:
    """One file being received, as named by a request: folder kind, clean name, size, source version."""

    kind: str
    name: str
    size: int
    key: str

    @classmethod
    def parse(cls, kind: str | None, name: str | None, size: str | None, key: str | None) -> Upload:
        """From request parameters; ConfigError or ModelPathRefused names the bad one."""
        if not kind:
            raise ModelPathRefused("folder: a model folder kind is required", field="folder")
        clean = clean_name(name or "")
        try:
            total = int(size or "")
        except ValueError:
            raise ConfigError("size: the file's size in bytes is required", field="size") from None
        if total < 0:
            raise ConfigError("size: must not be negative", field="size")
        if not key or not KEY_PATTERN.match(key):
            raise ConfigError("key: 16 to 64 lower-case hex digits naming the source file's version", field="key")
        return cls(kind, clean, total, key)


@dataclass
class _Digest:
    """The running sha256 of a partial, as far as it was written by this process."""

    hasher: Any
    offset: int


class ModelStore:
    """Receives model files into this instance's model folders (see the module docstring)."""

    def __init__(self, library: ModelLibrary, free_space: Callable[[Path], int] = disk_free,
                 reserve_bytes: int = RESERVE_BYTES) -> None:
        self._library = library
        self._free_space = free_space
        self._reserve = reserve_bytes
        self._busy: set[Path] = set()
        self._digests: OrderedDict[Path, _Digest] = OrderedDict()

    # --- the three steps ----------------------------------------------------------------------

    async def status(self, upload: Upload, sha256: str | None = None) -> dict[str, Any]:
        """Where an upload stands: "present" (an identical file is there), "exists" (a file of that
        name and size is there; send `sha256` to compare), or "absent"/"partial" with the offset to
        send from. A different file of the name is ModelFileConflict; no room is NoSpaceForModel."""
        folder, target = self._locate(upload)
        present = await self._present(folder, upload, sha256)
        if present is not None:
            return present
        partial = self._partial(target, upload.key)
        offset = _length(partial)
        if offset > upload.size:
            offset = 0
        free = self._check_space(target, upload, offset)
        return {"state": "partial" if offset else "absent", "offset": offset, "free_bytes": free}

    async def receive(self, upload: Upload, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Appends the chunks at `offset` of the partial; returns the partial's new length."""
        folder, target = self._locate(upload)
        with self._claim(target, upload):
            if existing_file(folder, upload.name) is not None:
                raise ModelFileConflict(f"a file named {upload.name} exists in {upload.kind} on this worker; it is never overwritten")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not inside(target.parent, folder.paths[0]):
                raise ModelPathRefused(f"name: {upload.name!r} leads out of the {upload.kind} folder through a symlink", field="name")
            partial = self._partial(target, upload.key)
            self._drop_other_versions(target, partial)
            self._check_space(target, upload, offset)
            fd = _open_partial(partial)
            try:
                length = os.fstat(fd).st_size
                if offset == 0 and length:  # the sender starts over
                    os.ftruncate(fd, 0)
                    length = 0
                if offset != length:
                    raise ModelFileConflict(f"the partial {upload.name} holds {length} bytes, not {offset}; resume from {length}")
                os.lseek(fd, offset, os.SEEK_SET)
                digest = self._digest_for(partial, offset)
                return await self._write(fd, partial, upload, offset, chunks, digest)
            finally:
                os.close(fd)

    async def finish(self, upload: Upload, sha256: str) -> dict[str, Any]:
        """Checks the complete partial against `sha256` and puts it in place without overwriting."""
        if not SHA256_PATTERN.match(sha256 or ""):
            raise ConfigError("sha256: 64 lower-case hex digits are required", field="sha256")
        folder, target = self._locate(upload)
        with self._claim(target, upload):
            partial = self._partial(target, upload.key)
            if upload.size == 0 and _length(partial) == 0:  # nothing to send, so no chunk made the partial
                target.parent.mkdir(parents=True, exist_ok=True)
                os.close(_open_partial(partial))
            length = _length(partial)
            if length != upload.size:
                raise ModelFileConflict(f"the partial {upload.name} holds {length} of {upload.size} bytes; send the rest first")
            digest = self._digests.pop(partial, None)
            if digest is not None and digest.offset == upload.size:
                received = digest.hasher.hexdigest()
            else:
                received = await asyncio.to_thread(sha256_of, partial)
            if received != sha256:
                _discard(partial)
                logger.warning("Received %s/%s failed its sha256 check; deleted", upload.kind, upload.name)
                raise ModelHashMismatch(
                    f"{upload.name} failed its sha256 check (expected {sha256[:12]}…, received {received[:12]}…); "
                    "the received file was deleted"
                )
            await asyncio.to_thread(_fsync, partial)
            await self._put_in_place(folder, upload, partial, target, received)
            self._library.hashes.remember(target, received)
        logger.info("Received model %s/%s (%s)", upload.kind, upload.name, megabytes(upload.size))
        return {"state": "present", "folder": upload.kind, "name": upload.name, "size": upload.size, "sha256": received}

    # --- helpers ------------------------------------------------------------------------------

    def _locate(self, upload: Upload) -> tuple[ModelFolder, Path]:
        folder = self._library.folders.writable(upload.kind)
        return folder, target_path(folder, upload.name)

    @staticmethod
    def _partial(target: Path, key: str) -> Path:
        return target.with_name(f".{target.name}.{key}{PARTIAL_SUFFIX}")

    async def _present(self, folder: ModelFolder, upload: Upload, sha256: str | None) -> dict[str, Any] | None:
        existing = existing_file(folder, upload.name)
        if existing is None:
            return None
        size = existing.stat().st_size
        if size == upload.size and sha256 is None:
            return {"state": "exists", "size": size}
        if size == upload.size and await self._library.hashes.sha256(existing) == sha256:
            return {"state": "present", "size": size, "sha256": sha256}
        raise ModelFileConflict(
            f"a different file named {upload.name} exists in {upload.kind} on this worker ({megabytes(size)}); it is never overwritten"
        )

    def _check_space(self, target: Path, upload: Upload, offset: int) -> int:
        free = self._free_space(target.parent)
        needed = upload.size - offset
        if needed + self._reserve > free:
            raise NoSpaceForModel(
                f"not enough free space for {upload.name} in {upload.kind}: {megabytes(needed)} needed, "
                f"{megabytes(free)} free (a copy leaves {megabytes(self._reserve)} spare)"
            )
        return free

    def _claim(self, target: Path, upload: Upload) -> _Claim:
        if target in self._busy:
            raise ModelFileConflict(f"{upload.name} is being received already")
        return _Claim(self._busy, target)

    def _drop_other_versions(self, target: Path, keep: Path) -> None:
        """Partials of another version of the source would never be finished: they only take room."""
        for stale in target.parent.glob(f".{glob_escape(target.name)}.*{PARTIAL_SUFFIX}"):
            if stale != keep and not stale.is_symlink():
                stale.unlink(missing_ok=True)
                self._digests.pop(stale, None)

    def _digest_for(self, partial: Path, offset: int) -> _Digest | None:
        """The running hash when it covers exactly the bytes before `offset`; else the file is hashed
        from disk at the end (after a restart of this worker, say)."""
        digest = self._digests.get(partial)
        if offset == 0:
            digest = _Digest(hashlib.sha256(), 0)
        elif digest is None or digest.offset != offset:
            self._digests.pop(partial, None)
            return None
        self._digests[partial] = digest
        self._digests.move_to_end(partial)
        while len(self._digests) > MAX_HASHERS:
            self._digests.popitem(last=False)
        return digest

    async def _write(self, fd: int, partial: Path, upload: Upload, offset: int, chunks: AsyncIterator[bytes],
                     digest: _Digest | None) -> int:
        """Writes as the bytes arrive: a block is written and hashed (two threads, side by side) while
        the next one is read from the socket."""
        position = offset
        buffer = bytearray()
        landing = _Landing(fd, digest)
        try:
            async for piece in chunks:
                if position + len(buffer) + len(piece) > upload.size:
                    raise ConfigError(f"size: more bytes arrived than the {upload.size} declared", field="size")
                buffer += piece
                if len(buffer) >= WRITE_BLOCK:
                    block, buffer = bytes(buffer), bytearray()
                    await landing.add(block)
                    position += len(block)
            if buffer:
                await landing.add(bytes(buffer))
            await landing.settle()
        except OSError as error:
            if error.errno not in NO_SPACE_ERRNOS:
                raise
            _discard(partial)
            self._digests.pop(partial, None)
            raise NoSpaceForModel(
                f"the disk filled up while receiving {upload.name} in {upload.kind}; the partial file was deleted"
            ) from None
        finally:
            with contextlib.suppress(Exception):  # the request broke off: let the block in flight land, keep what was written
                await landing.settle()
        return os.fstat(fd).st_size

    async def _put_in_place(self, folder: ModelFolder, upload: Upload, partial: Path, target: Path, sha256: str) -> None:
        try:
            await asyncio.to_thread(_link_without_overwrite, partial, target)
        except FileExistsError:
            existing = existing_file(folder, upload.name)
            same = existing is not None and await self._library.hashes.sha256(existing) == sha256
            _discard(partial)
            if not same:
                raise ModelFileConflict(
                    f"a different file named {upload.name} appeared in {upload.kind} on this worker; it was not overwritten"
                ) from None


class _Landing:
    """The block being written and hashed; the running hash counts only blocks that were both."""

    def __init__(self, fd: int, digest: _Digest | None) -> None:
        self._fd = fd
        self._digest = digest
        self._pending: list[asyncio.Future[Any]] = []
        self._size = 0

    async def add(self, block: bytes) -> None:
        await self.settle()
        self._size = len(block)
        self._pending = [asyncio.ensure_future(asyncio.to_thread(_write_all, self._fd, block))]
        if self._digest is not None:
            self._pending.append(asyncio.ensure_future(asyncio.to_thread(self._digest.hasher.update, block)))

    async def settle(self) -> None:
        """Waits for the block in flight; raises what its write raised."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if self._digest is not None:
            # A block hashed but not written would make the hash lie about the file: never reuse it.
            self._digest.offset = -1 if failures else self._digest.offset + self._size
        if failures:
            raise failures[0]


class _Claim:
    """Marks a target busy for the duration of a `with` block."""

    def __init__(self, busy: set[Path], target: Path) -> None:
        self._busy = busy
        self._target = target

    def __enter__(self) -> None:
        self._busy.add(self._target)

    def __exit__(self, *exc_info: object) -> None:
        self._busy.discard(self._target)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _length(path: Path) -> int:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(mode):
        raise ModelPathRefused(f"name: the partial {path.name} is not a plain file", field="name")
    return path.stat().st_size


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _open_partial(partial: Path) -> int:
    try:
        return os.open(partial, os.O_WRONLY | os.O_CREAT | O_NOFOLLOW | O_BINARY, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ModelPathRefused(f"name: the partial {partial.name} is a symlink", field="name") from None
        raise


def _write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | O_BINARY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_without_overwrite(partial: Path, target: Path) -> None:
    """Puts the partial in place; FileExistsError if a file of the name exists, whatever the filesystem."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (some network and FAT filesystems): rename, which on Windows refuses an
        # existing target by itself; elsewhere the check leaves a window of microseconds.
        if os.name != "nt" and os.path.lexists(target):
            raise FileExistsError(target) from None
        os.rename(partial, target)
        return
    os.unlink(partial)
