"""Model folders in a temporary directory, laid out as ComfyUI's folder_paths lays them out, and the
worker-side model routes served over them by a real aiohttp app."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from distributed.api.access import AccessPolicy
from distributed.api.model_store import add_model_store_routes
from distributed.transport.provision.hashes import HashCache
from distributed.transport.provision.library import ModelLibrary
from distributed.transport.provision.paths import ModelFolder, ModelFolders, disk_free
from distributed.transport.provision.store import ModelStore

PT_EXTENSIONS = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"})


def model_folders(root: Path) -> ModelFolders:
    models = root / "models"
    folders = [
        ModelFolder("checkpoints", (models / "checkpoints",), PT_EXTENSIONS),
        ModelFolder("loras", (models / "loras",), PT_EXTENSIONS),
        ModelFolder("text_encoders", (models / "text_encoders", models / "clip"), PT_EXTENSIONS),
        ModelFolder("custom_nodes", (root / "custom_nodes",), frozenset()),
    ]
    for folder in folders:
        folder.paths[0].mkdir(parents=True, exist_ok=True)
    return ModelFolders(folders)


def model_app(root: Path, policy: AccessPolicy | None = None, free_space: Callable[[Path], int] = disk_free,
              reserve_bytes: int = 0) -> tuple[web.Application, ModelStore]:
    folders = model_folders(root)
    library = ModelLibrary(lambda: folders, HashCache())
    store = ModelStore(library, free_space=free_space, reserve_bytes=reserve_bytes)
    routes = web.RouteTableDef()
    add_model_store_routes(routes, policy or AccessPolicy(), library, store)
    app = web.Application()
    app.add_routes(routes)
    return app, store


def write_random(path: Path, size: int, seed: int = 0) -> str:
    """A file of pseudo-random bytes (incompressible); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    generator = random.Random(seed)
    with open(path, "wb") as file:
        left = size
        while left > 0:
            piece = generator.randbytes(min(left, 1 << 20))
            file.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hidden_files(folder: Path) -> list[str]:
    return sorted(name for _, _, files in os.walk(folder) for name in files if name.startswith("."))


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, hidden ones too, relative and sorted."""
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, files in os.walk(folder) for name in files)
