"""Input files (images, masks, videos, audio) that a share loads from the master's input folder.

A remote worker has its own input folder, so a `LoadImage` naming `cat.png` would fail there. Before a
share is sent, each such file is uploaded through the worker's stock `/upload/image` and the prompt is
rewritten to the name the worker stored it under (ComfyUI renames a different file of the same name).

Each file crosses the network once per worker: uploads are remembered per worker by the file's
SHA-256, and a remembered name is reused as long as the worker still lists it (or it was uploaded
after the worker's object info was read). Hashes are kept per (path, size, mtime), so an unchanged
file is read once per master run. Which inputs name input files is read from the worker's own
`/object_info` (inputs flagged `image_upload`, `video_upload` or `audio_upload`), so custom loaders
that use the same flags are covered.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..graph import Prompt
from ..workers.client import WorkerClient
from .preflight import choices, input_spec, is_upload_input

logger = logging.getLogger(__name__)

INPUT_ANNOTATION = " [input]"
"""ComfyUI's annotated file names: "x.png [input]" is the input folder, "[output]"/"[temp]" others."""
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    """A file this worker already has: the name it stored it under, and when it got it."""

    remote_name: str
    uploaded_at: float


@dataclass(frozen=True)
class LocalFile:
    """A file of the master's input folder, with the hash that identifies it on every worker."""

    path: Path
    relative: str
    size: int
    sha256: str


@dataclass
class _WorkerUploads:
    by_hash: dict[str, Upload] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class MediaUploader:
    """Uploads the master's input files a share needs, once per worker."""

    def __init__(self, input_dir: Path | None) -> None:
        self._input_dir = input_dir.resolve() if input_dir is not None else None
        self._workers: dict[str, _WorkerUploads] = {}
        """worker key -> sha256 -> upload; the key includes the address, so a re-pointed id starts afresh."""
        self._hashes: dict[Path, tuple[tuple[int, int], str]] = {}

    async def prepare(self, prompt: Prompt, object_info: dict[str, Any], info_fetched_at: float, client: WorkerClient) -> Prompt:
        """The prompt with every input-folder file replaced by the worker's name for it."""
        if self._input_dir is None:
            return prompt
        wanted = list(_file_inputs(prompt, object_info))
        if not wanted:
            return prompt
        files = await asyncio.to_thread(self._inspect, {value for _, _, value in wanted})
        prepared = copy.deepcopy(prompt)
        uploads = self._workers.setdefault(client.identity, _WorkerUploads())
        async with uploads.lock:
            for node_id, input_name, value in wanted:
                local = files.get(value)
                if local is None:
                    continue  # not in the master's input folder: left for the worker's own validation
                listed = choices(input_spec(object_info, prepared[node_id]["class_type"], input_name)) or []
                known = uploads.by_hash.get(local.sha256)
                if known is None or (_gone(known, listed) and known.uploaded_at < info_fetched_at):
                    known = Upload(await self._upload(client, local), time.time())
                    uploads.by_hash[local.sha256] = known
                prepared[node_id]["inputs"][input_name] = known.remote_name
        return prepared

    def _inspect(self, values: set[str]) -> dict[str, LocalFile]:
        """The master's file for each value naming one in its input folder. Runs in a thread."""
        found = {}
        for value in values:
            local = self._local_file(value)
            if local is not None:
                found[value] = local
        return found

    def _local_file(self, value: str) -> LocalFile | None:
        assert self._input_dir is not None
        name = value.removesuffix(INPUT_ANNOTATION)
        if name.endswith("]") and " [" in name:
            return None  # "[output]" or "[temp]": not the input folder
        path = (self._input_dir / name).resolve()
        if not path.is_relative_to(self._input_dir) or not path.is_file():
            return None
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        cached = self._hashes.get(path)
        if cached is None or cached[0] != signature:
            cached = (signature, _hash_file(path))
            self._hashes[path] = cached
        return LocalFile(path, path.relative_to(self._input_dir).as_posix(), stat.st_size, cached[1])

    async def _upload(self, client: WorkerClient, local: LocalFile) -> str:
        relative = PurePosixPath(local.relative)
        subfolder = "" if str(relative.parent) == "." else str(relative.parent)
        started = time.monotonic()
        handle = await asyncio.to_thread(local.path.open, "rb")
        try:
            remote_name = await client.upload_input(handle, relative.name, subfolder, local.size)
        finally:
            await asyncio.to_thread(handle.close)
        logger.info("Uploaded input %s to %s as %s (%d bytes, %.1fs)", relative, client.name, remote_name,
                    local.size, time.monotonic() - started)
        return remote_name


def _file_inputs(prompt: Prompt, object_info: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(node id, input name, value) for each input that names a file in an input folder."""
    for node_id, node in prompt.items():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, str) and is_upload_input(input_spec(object_info, node.get("class_type"), name)):
                yield node_id, name, value


def _gone(upload: Upload, listed: list[str]) -> bool:
    """Whether the worker's listing shows the file is no longer there (e.g. a pod that was reset).

    Loaders list only the top of the input folder, so a file in a subfolder cannot be checked and
    is trusted.
    """
    return "/" not in upload.remote_name and upload.remote_name not in listed


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
