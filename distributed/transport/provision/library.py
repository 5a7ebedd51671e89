"""The model files of this instance, by folder kind, with sizes (and sha256 when asked for).

Used on the master (the host's own inventory, and the source of a copy) and on every instance with
this extension (`GET /distributed/models`, which a master reads as that worker's inventory). The
listing follows ComfyUI's own: every file below each folder of a kind whose extension the kind
lists, folders named `.git` skipped, symlinked files and folders followed (they are only read).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .hashes import HashCache
from .paths import REFUSED_KINDS, ModelFolder, ModelFolders, clean_name, disk_free, existing_file

SKIPPED_DIRS = frozenset({".git"})


@dataclass(frozen=True)
class ModelFile:
    """One model file: its kind, its name as ComfyUI lists it (POSIX separators), where it is."""

    kind: str
    name: str
    path: Path
    size: int
    mtime_ns: int

    def as_json(self, sha256: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"folder": self.kind, "name": self.name, "size": self.size, "mtime": self.mtime_ns / 1e9}
        if sha256 is not None:
            body["sha256"] = sha256
        return body


def _walk(folder: ModelFolder) -> list[ModelFile]:
    """Every file ComfyUI would list for one kind; the first folder holding a name wins. Blocking."""
    found: dict[str, ModelFile] = {}
    for base in folder.paths:
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
            for filename in filenames:
                path = Path(dirpath, filename)
                name = path.relative_to(base).as_posix()
                if name in found or not folder.accepts(name) or filename.startswith("."):
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue  # a dangling symlink: ComfyUI skips it when loading too
                found[name] = ModelFile(folder.kind, name, path, stat.st_size, stat.st_mtime_ns)
    return [found[name] for name in sorted(found)]


class ModelLibrary:
    """This instance's model folders, listed and hashed on request.

    The folders are read anew on every use: custom nodes may add folder kinds after this extension
    loaded, and ComfyUI's own list changes with them.
    """

    def __init__(self, folders: Callable[[], ModelFolders], hashes: HashCache) -> None:
        self._folders = folders
        self.hashes = hashes

    @property
    def folders(self) -> ModelFolders:
        return self._folders()

    async def files(self) -> list[ModelFile]:
        """Every model file of every kind except code folders, listed in a thread."""
        return await asyncio.to_thread(self._all_files)

    def _all_files(self) -> list[ModelFile]:
        return [file for folder in self.folders if folder.extensions and folder.kind not in REFUSED_KINDS for file in _walk(folder)]

    async def listing(self, with_files: bool = True, with_sha256: bool = False) -> dict[str, Any]:
        """The body of `GET /distributed/models`: files (with sha256 when asked; known ones always) and
        free space per kind; without files, only the free space (what a master asks before a copy)."""
        files = await self.files() if with_files else []
        free = await asyncio.to_thread(self._free_bytes)
        return {"files": [await self.describe(file, with_sha256) for file in files], "free_bytes": free}

    async def describe(self, file: ModelFile, with_sha256: bool = False) -> dict[str, Any]:
        """One file as listed: its sha256 when asked for (computed if need be) or already known."""
        sha256 = await self.hashes.sha256(file.path) if with_sha256 else self.hashes.known(file.path, file.size, file.mtime_ns)
        return file.as_json(sha256)

    def _free_bytes(self) -> dict[str, int]:
        free: dict[str, int] = {}
        for folder in self.folders:
            if not folder.extensions or not folder.paths or folder.kind in REFUSED_KINDS:
                continue
            try:
                free[folder.kind] = disk_free(folder.paths[0])
            except OSError:
                continue
        return free

    def find(self, kind: str, name: str) -> Path | None:
        """Where this instance keeps a model of this kind and name, or None."""
        folder = self.folders.get(kind)
        if folder is None:
            return None
        return existing_file(folder, clean_name(name))
