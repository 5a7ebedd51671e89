"""Which custom node pack provides each node class, and where a worker can get the same version.

ComfyUI records the module a node class came from (`python_module` in `/object_info`, e.g.
"custom_nodes.ComfyUI-Foo"); `comfy/model_folders.py` maps it to the pack's folder on the master.
The pack's own git checkout then says where it came from (its remote) and which version runs here
(the commit), which is all a worker needs: `git clone <remote>` and `git checkout <commit>`.

Git is asked read-only questions (no fetch, nothing written), each with a deadline. What cannot be
told (a pack that is not a git checkout of its own, one without a remote) is returned as a problem;
what should be known (local changes not in the commit, a commit no remote branch holds, credentials
taken out of the remote address) as notes. Both end up as comments in the set-up script.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

GIT_TIMEOUT_S = 10.0
CUSTOM_NODES_MODULE = "custom_nodes."
_FOLDER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+ -]{0,127}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class PackLocator(Protocol):
    """What ComfyUI knows about where node classes come from (comfy/model_folders.py)."""

    def module_of(self, class_type: str) -> str | None:
        """The class's python module ("nodes", "comfy_extras.x", "custom_nodes.Pack"), None if unknown here."""
        ...

    def pack_path(self, module: str) -> Path | None:
        """The folder a "custom_nodes.<name>" module was loaded from."""
        ...


@dataclass(frozen=True)
class NodePack:
    """A custom node pack a workflow needs: its folder name, and the git source of this version."""

    folder: str
    classes: tuple[str, ...]
    remote: str | None = None
    commit: str | None = None
    notes: tuple[str, ...] = ()
    problem: str | None = None
    """Why it cannot be installed by the script; then remote and commit may be None."""

    def as_json(self) -> dict[str, object]:
        return {"folder": self.folder, "classes": list(self.classes), "remote": self.remote, "commit": self.commit,
                "notes": list(self.notes), "problem": self.problem}


async def packs_for(classes: list[str], locator: PackLocator) -> tuple[list[NodePack], list[str]]:
    """The custom node packs providing `classes` (built-in nodes need none), and a line for each class
    the master itself does not know."""
    by_module: dict[str, list[str]] = defaultdict(list)
    unknown: list[str] = []
    for class_type in sorted(set(classes)):
        module = locator.module_of(class_type)
        if module is None:
            unknown.append(f"node class {class_type}: the master does not have it either")
        elif module.startswith(CUSTOM_NODES_MODULE):
            by_module[module].append(class_type)
    packs = await asyncio.gather(*(_pack(module, tuple(names), locator) for module, names in sorted(by_module.items())))
    return list(packs), unknown


async def _pack(module: str, classes: tuple[str, ...], locator: PackLocator) -> NodePack:
    folder = module.removeprefix(CUSTOM_NODES_MODULE)
    path = locator.pack_path(module)
    if path is None or not _FOLDER.match(folder):
        return NodePack(folder, classes, problem="its folder was not found on the master")
    if not path.is_dir():
        return NodePack(folder, classes, problem="it is a single file, not a git checkout; copy it by hand")
    return await asyncio.to_thread(_from_git, folder, classes, path)


def _git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if done.returncode != 0:
        raise GitError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git {args[0]} failed")
    return done.stdout.strip()


class GitError(Exception):
    """Internal: a git question had no answer (not a checkout, no remote, git missing)."""


def _from_git(folder: str, classes: tuple[str, ...], path: Path) -> NodePack:
    """Remote and commit of the checkout at `path` (blocking: runs git)."""
    try:
        top = _git(path, "rev-parse", "--show-toplevel")
        if os.path.realpath(top) != os.path.realpath(path):
            return NodePack(folder, classes, problem="it is not a git checkout of its own (it sits inside another repository)")
        commit = _git(path, "rev-parse", "HEAD")
        remote_name = _remote_name(path)
        if remote_name is None:
            return NodePack(folder, classes, commit=commit, problem="its git checkout has no remote to clone from")
        url, notes = public_remote(_git(path, "remote", "get-url", remote_name))
        if not _git(path, "branch", "-r", "--contains", commit):
            notes.append(f"commit {commit[:12]} is on no branch of {remote_name} that this checkout knows; "
                         "push it, or the worker cannot fetch it")
        if _git(path, "status", "--porcelain", "--untracked-files=no"):
            notes.append(f"the master's copy has local changes that are not in commit {commit[:12]}")
    except (GitError, OSError, subprocess.TimeoutExpired) as error:
        return NodePack(folder, classes, problem=f"git could not describe it ({error})")
    if not _COMMIT.match(commit):
        return NodePack(folder, classes, problem=f"git answered an odd commit id {commit[:50]!r}")
    return NodePack(folder, classes, url, commit, tuple(notes))


def _remote_name(path: Path) -> str | None:
    """The remote the current branch tracks, else "origin", else the first remote."""
    try:
        upstream = _git(path, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
        return upstream.split("/", 1)[0]
    except GitError:
        pass
    remotes = _git(path, "remote").split()
    if not remotes:
        return None
    return "origin" if "origin" in remotes else remotes[0]


def public_remote(url: str) -> tuple[str, list[str]]:
    """The remote address fit for a script another machine runs, and notes about it. A user name
    and password (a token in an https address) never leave the master."""
    notes: list[str] = []
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        notes.append("credentials were taken out of the remote address; the worker needs its own access if it is private")
    elif parts.scheme == "file" or (not parts.scheme and (url.startswith(("/", ".")) or re.match(r"^[A-Za-z]:[\\/]", url))):
        notes.append("the remote is a path on the master; only a machine that sees the same path can clone it")
    elif parts.scheme == "ssh" or re.match(r"^[\w.-]+@[\w.-]+:", url):
        notes.append("the remote is an SSH address; the worker needs a key that may read it")
    return url, notes
