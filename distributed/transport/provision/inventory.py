"""Which worker has which model files and nodes, and what each lacks for one prompt.

- A stock worker's model files are the file-like values of the choice inputs in its `/object_info`
  (the loaders list their folders), each with the inputs that list it.
- A worker that runs this extension, and the master itself, list their model folders with sizes
  (`library`), and sha256 when asked for.
- What a worker lacks for a prompt is the preflight's answer (`preflight.review`), the same rule
  that decides before a share is sent; each missing file is matched to a folder kind (from the
  workflow's metadata, else the master's own folders) so it can be copied or downloaded.

Workers are asked side by side; one that does not answer gets its error in its row.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...config.models import WorkerConfig
from ...errors import DistributedError, ModelPathRefused
from ...graph import Prompt
from ...workers.client import WorkerClient
from ..object_info import ObjectInfoCache
from ..preflight import choices, input_spec, looks_like_file, review
from . import remote
from .library import ModelFile, ModelLibrary
from .paths import posix_name
from .sender import CopyFile
from .workflow import ModelSource


class ClientSource(Protocol):
    def client(self, worker: WorkerConfig) -> WorkerClient: ...


def listed_files(object_info: dict[str, Any]) -> dict[str, list[str]]:
    """File-like choice values of an object info -> the inputs ("Class.input") that list each."""
    files: dict[str, list[str]] = defaultdict(list)
    for class_type, node in object_info.items():
        inputs = (node or {}).get("input") or {} if isinstance(node, dict) else {}
        for section in ("required", "optional"):
            for input_name in (inputs.get(section) or {}) if isinstance(inputs, dict) else {}:
                for value in choices(input_spec(object_info, class_type, input_name)) or []:
                    if looks_like_file(value):
                        files[value].append(f"{class_type}.{input_name}")
    return dict(sorted(files.items()))


@dataclass(frozen=True)
class MissingModel:
    """A model file the prompt names that a worker does not offer."""

    name: str
    kind: str | None
    """Its folder kind: from the workflow's metadata, else where the master keeps it; None if neither says."""
    node_id: str
    class_type: str
    input_name: str
    size: int | None
    """Its size on the master, when the master has it (then it can be copied)."""
    url: str | None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "folder": self.kind, "node_id": self.node_id, "class_type": self.class_type,
                "input": self.input_name, "size": self.size, "on_master": self.size is not None, "url": self.url}


@dataclass
class WorkerNeeds:
    """What one worker lacks to run a prompt (or why that is not known)."""

    worker: WorkerConfig
    extension: bool | None = None
    """Whether it runs this extension (can receive files); None when it did not answer."""
    failure: DistributedError | None = None
    """Why it could not be asked (it is offline, refused the token, is not ComfyUI)."""
    missing_nodes: list[str] = field(default_factory=list)
    missing_models: list[MissingModel] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    """Choice values it does not offer that are not files (a sampler, a mode)."""
    free_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return str(self.failure) if self.failure is not None else None

    @property
    def ready(self) -> bool:
        return self.failure is None and not (self.missing_nodes or self.missing_models or self.other)

    def as_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker.id, "name": self.worker.name, "enabled": self.worker.enabled, "extension": self.extension,
            "ready": self.ready, "error": self.error, "missing_nodes": self.missing_nodes,
            "missing_models": [m.as_json() for m in self.missing_models], "other": self.other,
            "copyable_bytes": sum(m.size or 0 for m in self.missing_models if self.extension and m.kind),
            "free_bytes": self.free_bytes,
        }


class Inventory:
    """Asks workers what they have; compares it with what a prompt needs."""

    def __init__(self, clients: ClientSource, library: ModelLibrary, object_infos: ObjectInfoCache | None = None) -> None:
        self._clients = clients
        self._library = library
        self._object_infos = object_infos or ObjectInfoCache()

    # --- what each worker has ---------------------------------------------------------------------

    async def snapshot(self, workers: list[WorkerConfig], with_sha256: bool = False) -> dict[str, Any]:
        """GET /distributed/inventory: the master's model files and each worker's."""
        master_files = await self._library.files()
        rows = await asyncio.gather(*(self._worker_inventory(worker, with_sha256) for worker in workers))
        master = [await self._library.describe(file, with_sha256) for file in master_files]
        return {"master": {"models": master}, "workers": list(rows)}

    async def _worker_inventory(self, worker: WorkerConfig, with_sha256: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"worker_id": worker.id, "name": worker.name, "enabled": worker.enabled, "extension": None,
                               "node_classes": None, "models": [], "free_bytes": {}, "error": None}
        client = self._clients.client(worker)
        try:
            info, _ = await self._object_infos.get(client, fresh=True)
            row["node_classes"] = len(info.info)
            listing = await remote.listing(client, with_sha256=with_sha256)
        except DistributedError as error:
            row["error"] = str(error)
            return row
        row["extension"] = listing is not None
        if listing is not None:
            row["models"] = listing["files"]
            row["free_bytes"] = listing.get("free_bytes") or {}
        else:
            row["models"] = [{"name": name, "folder": None, "size": None, "listed_by": inputs}
                             for name, inputs in listed_files(info.info).items()]
        return row

    # --- what each worker lacks for a prompt ------------------------------------------------------

    async def needs(self, workers: list[WorkerConfig], prompt: Prompt, sources: list[ModelSource]) -> list[WorkerNeeds]:
        master_files = await self._library.files()
        return list(await asyncio.gather(*(self.needs_of(worker, prompt, sources, master_files) for worker in workers)))

    async def needs_of(self, worker: WorkerConfig, prompt: Prompt, sources: list[ModelSource],
                       master_files: list[ModelFile] | None = None) -> WorkerNeeds:
        """What `worker` lacks to run `prompt` (the prompt as workers get it)."""
        if master_files is None:
            master_files = await self._library.files()
        needs = WorkerNeeds(worker)
        client = self._clients.client(worker)
        try:
            info, _ = await self._object_infos.get(client, fresh=True)
            listing = await remote.listing(client, with_files=False)
        except DistributedError as error:
            needs.failure = error
            return needs
        needs.extension = listing is not None
        needs.free_bytes = (listing or {}).get("free_bytes") or {}
        result = review(prompt, info.info)
        needs.missing_nodes = list(result.missing_classes)
        by_name = {source.name: source for source in sources}
        for missing in result.missing_values:
            if not missing.is_file:
                needs.other.append(f"{missing.input_name}={missing.value!r} ({missing.class_type}, node {missing.node_id})")
                continue
            name = posix_name(missing.value)
            source = by_name.get(name)
            kind, size = _where_on_master(name, source, master_files,
                                          choices(input_spec(info.info, missing.class_type, missing.input_name)) or [])
            needs.missing_models.append(MissingModel(name, kind, missing.node_id, missing.class_type, missing.input_name, size,
                                                     source.url if source else None))
        return needs

    def copy_files(self, needs: WorkerNeeds) -> tuple[list[CopyFile], list[str]]:
        """The master's files for what a worker lacks, and a line for each that cannot be copied."""
        files: list[CopyFile] = []
        skipped: list[str] = []
        seen: set[tuple[str, str]] = set()
        for model in needs.missing_models:
            kind = model.kind
            try:
                path = self._library.find(kind, model.name) if kind else None
            except ModelPathRefused:  # a prompt value no model folder could hold
                path = None
            if kind is None or path is None or model.size is None:
                skipped.append(f"{model.name}: not in the master's model folders")
                continue
            if (kind, model.name) not in seen:
                seen.add((kind, model.name))
                files.append(CopyFile(kind, model.name, path, model.size))
        return files, skipped


def _where_on_master(name: str, source: ModelSource | None, master_files: list[ModelFile],
                     worker_choices: list[str]) -> tuple[str | None, int | None]:
    """(folder kind, size on the master) of a file the prompt names.

    The workflow's metadata says the kind when it has an entry; otherwise the kind on the master that
    holds the name. Should several hold it, the one whose other files the worker's input also lists.
    """
    holding = [f for f in master_files if f.name == name]
    if source is not None:
        on_master = next((f for f in holding if f.kind == source.directory), None)
        return source.directory, on_master.size if on_master else None
    if not holding:
        return None, None
    if len(holding) > 1:
        listed = set(worker_choices)
        overlap = {f.kind: sum(1 for other in master_files if other.kind == f.kind and other.name in listed) for f in holding}
        holding.sort(key=lambda f: -overlap[f.kind])
    return holding[0].kind, holding[0].size
