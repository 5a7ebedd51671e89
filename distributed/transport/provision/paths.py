"""Where model files live, and the one rule for a model file name that may be written.

ComfyUI keeps models in folder kinds ("checkpoints", "loras", ...), each a list of folders and the
file extensions it lists; `comfy/model_folders.py` reads them from `folder_paths`. A name arriving
from elsewhere (a master, a workflow) is untrusted: it must stay a plain relative path below one
of those folders. `clean_name` refuses traversal, absolute paths, hidden parts and control
characters; `target_path` refuses a path whose folders lead out of the model folder through a
symlink, and a file that is itself a symlink.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ...errors import ModelPathRefused

MAX_NAME_LENGTH = 1024
MAX_PART_LENGTH = 255
REFUSED_KINDS = frozenset({"custom_nodes"})
"""Folder kinds that hold code, not models: a file written there would run at the next start."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ModelFolder:
    """One folder kind of an instance: its folders (new files go to the first) and its extensions."""

    kind: str
    paths: tuple[Path, ...]
    extensions: frozenset[str]
    """Lower-case suffixes with the dot. Empty for kinds that hold no model files of their own
    (`custom_nodes`, `classifiers`): they are neither listed nor written."""

    def accepts(self, name: str) -> bool:
        """Whether ComfyUI would list a file of this name in this folder kind."""
        return PurePosixPath(name).suffix.lower() in self.extensions


class ModelFolders:
    """The model folder kinds of one instance, by kind."""

    def __init__(self, folders: list[ModelFolder]) -> None:
        self._folders = {folder.kind: folder for folder in folders}

    def get(self, kind: str) -> ModelFolder | None:
        return self._folders.get(kind)

    def writable(self, kind: str) -> ModelFolder:
        """The folder kind a received file may go to; ModelPathRefused for code folders and unknown kinds."""
        folder = self._folders.get(kind)
        if folder is None or kind in REFUSED_KINDS or not folder.paths or not folder.extensions:
            raise ModelPathRefused(f"folder: '{kind}' is not a model folder kind of this ComfyUI", field="folder")
        return folder

    def __iter__(self) -> Iterator[ModelFolder]:
        return iter([self._folders[kind] for kind in sorted(self._folders)])


def clean_name(name: str) -> str:
    """A model file name as a plain relative POSIX path ("sdxl/base.safetensors"), or ModelPathRefused.

    Backslashes count as separators (a Windows master spells subfolders with them).
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelPathRefused("name: a model file name is required", field="name")
    if len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise ModelPathRefused("name: too long or holds control characters", field="name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise ModelPathRefused(f"name: {name!r} is an absolute path; only names inside a model folder are accepted", field="name")
    parts = posix.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ModelPathRefused(f"name: {name!r} leaves its model folder or has an empty part", field="name")
        if part.startswith(".") or part.strip() != part or len(part) > MAX_PART_LENGTH:
            raise ModelPathRefused(f"name: {name!r} has a hidden, padded or over-long part", field="name")
    return "/".join(parts)


def posix_name(value: str) -> str:
    """A prompt's file value as a clean POSIX name, or as it was when it cannot be one (it is then
    only ever compared, never written)."""
    try:
        return clean_name(value)
    except ModelPathRefused:
        return value


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `folder` (symlinks resolved too)."""
    real_folder = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(path))
    return real == real_folder or real_folder in real.parents


def target_path(folder: ModelFolder, name: str) -> Path:
    """Where a received file of this (clean) name goes: under the kind's first folder.

    The folder itself may be a symlink (models kept on another disk); a folder below it that leads
    elsewhere through a symlink, or a file that is a symlink, is refused.
    """
    if not folder.accepts(name):
        allowed = ", ".join(sorted(folder.extensions))
        raise ModelPathRefused(f"name: {name!r} is not a {folder.kind} file ({allowed})", field="name")
    base = folder.paths[0]
    target = base.joinpath(*name.split("/"))
    if not inside(target.parent, base):
        raise ModelPathRefused(f"name: {name!r} leads out of the {folder.kind} folder through a symlink", field="name")
    if target.is_symlink():
        raise ModelPathRefused(f"name: {name!r} is a symlink in the {folder.kind} folder; it is never written through", field="name")
    return target


def existing_file(folder: ModelFolder, name: str) -> Path | None:
    """The file of this (clean) name in any folder of the kind, as ComfyUI would find it (a symlinked
    model counts: it is only read), or None."""
    for base in folder.paths:
        candidate = base.joinpath(*name.split("/"))
        if candidate.is_file():
            return candidate
    return None


def disk_free(path: Path) -> int:
    """Free bytes for this process on the disk of `path`, or of its nearest existing parent (a model
    folder may not exist yet)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free
