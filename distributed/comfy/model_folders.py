"""This instance's model folders and node packs, as ComfyUI knows them, and the model routes.

Every instance with this extension, master or worker, serves its own model folders
(`api/model_store.py`): a master lists what another instance has and copies to it through them. The
master also needs to know which custom node pack each node class came from, for set-up scripts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folder_paths

from ..api.access import AccessPolicy
from ..api.model_store import add_model_store_routes
from ..transport.provision.hashes import HashCache
from ..transport.provision.library import ModelLibrary
from ..transport.provision.node_packs import CUSTOM_NODES_MODULE
from ..transport.provision.paths import ModelFolder, ModelFolders
from ..transport.provision.store import ModelStore


def read_model_folders() -> ModelFolders:
    """ComfyUI's folder kinds now (custom nodes and extra_model_paths.yaml may have added some)."""
    return ModelFolders([
        ModelFolder(kind, tuple(Path(path) for path in paths), frozenset(ext.lower() for ext in extensions if ext.startswith(".")))
        for kind, (paths, extensions) in folder_paths.folder_names_and_paths.items()
    ])


class ComfyPacks:
    """Where ComfyUI loaded each node class from (its `RELATIVE_PYTHON_MODULE`, the `python_module`
    of /object_info) and the folder of each custom node pack."""

    def module_of(self, class_type: str) -> str | None:
        node_class = _comfy_nodes().NODE_CLASS_MAPPINGS.get(class_type)
        if node_class is None:
            return None
        return str(getattr(node_class, "RELATIVE_PYTHON_MODULE", "nodes"))

    def pack_path(self, module: str) -> Path | None:
        name = module.removeprefix(CUSTOM_NODES_MODULE)
        loaded = _comfy_nodes().LOADED_MODULE_DIRS.get(name)
        if loaded:
            return Path(loaded)
        for folder in folder_paths.get_folder_paths("custom_nodes"):
            candidate = Path(folder, name)
            if candidate.exists():
                return candidate
        return None


def _comfy_nodes() -> Any:
    """ComfyUI's `nodes` module (this package has a `nodes` module of its own)."""
    return sys.modules["nodes"]


@dataclass(frozen=True)
class LocalModels:
    """This instance's model library and its node packs, for the master's services."""

    library: ModelLibrary
    packs: ComfyPacks


def install(server: Any, environ: Mapping[str, str] = os.environ) -> LocalModels:
    """Adds the model routes to ComfyUI's PromptServer (before it adds its route table), guarded by
    the access policy this instance's environment sets for routes a master uses on it."""
    library = ModelLibrary(read_model_folders, HashCache())
    policy = AccessPolicy.for_worker_routes(environ)
    add_model_store_routes(server.routes, policy, library, ModelStore(library))
    return LocalModels(library, ComfyPacks())
