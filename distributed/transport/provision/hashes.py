"""sha256 of model files, computed off the loop and kept by path, size and modification time.

A checkpoint is gigabytes: hashing it costs seconds of disk reading, so a hash is computed only when
asked for and kept until the file's size or mtime changes. One file is hashed at a time per
instance: two big files hashed at once would only make the disk seek between them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

READ_BLOCK = 4 << 20
MAX_ENTRIES = 50_000


def sha256_of(path: Path, length: int | None = None) -> str:
    """The sha256 of a file (or of its first `length` bytes), read in large blocks. Blocking."""
    digest = hashlib.sha256()
    left = length
    with open(path, "rb") as file:
        while left is None or left > 0:
            block = file.read(READ_BLOCK if left is None else min(READ_BLOCK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


class HashCache:
    """sha256 by (path, size, mtime); entries for changed files are simply never found again."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._one_at_a_time = asyncio.Lock()

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        stat = os.stat(path)
        return os.path.abspath(path), stat.st_size, stat.st_mtime_ns

    def cached(self, path: Path) -> str | None:
        """The hash if it is known for the file as it is now; never reads the file's content."""
        try:
            return self._entries.get(self._key(path))
        except OSError:
            return None

    def known(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """`cached` for a file just listed: its size and mtime are known, so nothing is read at all."""
        return self._entries.get((os.path.abspath(path), size, mtime_ns))

    def remember(self, path: Path, sha256: str) -> None:
        """Records a hash computed elsewhere (a received file was hashed as it arrived)."""
        self._store(self._key(path), sha256)

    async def sha256(self, path: Path) -> str:
        """The file's sha256, from the cache or read in a thread."""
        key = await asyncio.to_thread(self._key, path)
        known = self._entries.get(key)
        if known is not None:
            return known
        async with self._one_at_a_time:
            known = self._entries.get(key)
            if known is None:
                known = await asyncio.to_thread(sha256_of, path)
                self._store(key, known)
        return known

    def _store(self, key: tuple[str, int, int], sha256: str) -> None:
        self._entries[key] = sha256
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
