"""Where a workflow says its model files come from: ComfyUI's `models` metadata.

ComfyUI's frontend reads a list of `{name, url, directory, hash?, hash_type?}` entries in two places
of a saved workflow, and so does this module:

- the workflow's top-level `models` list;
- a node's `properties.models`, of which only the entries whose `name` is one of the node's current
  widget values count (a loader keeps the metadata of files it no longer uses), in the main graph
  and in every subgraph definition (`definitions.subgraphs[].nodes`).

Entries are deduplicated by URL (or hash, without one), as the frontend does. A workflow is
untrusted input (it may come from anywhere), so every entry is checked here: an http(s) URL, a
plain relative name, a directory that is a plain folder name. Entries that fail are returned as
problems, worded for a comment in the set-up script, never used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...errors import ModelPathRefused
from .paths import clean_name

LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}
"""Old folder names ComfyUI still maps to their kinds (its `folder_paths.map_legacy`)."""
_DIRECTORY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
MAX_URL = 2048


@dataclass(frozen=True)
class ModelSource:
    """One model file the workflow says where to download from."""

    name: str
    url: str
    directory: str
    """The folder kind, legacy names mapped ("unet" -> "diffusion_models")."""
    sha256: str | None
    """Lower-case hex, when the entry gives a sha256 (a hash without a type counts when it is one)."""
    other_hash: str | None = None
    """"md5:..."-style, for a hash of another type: named in the script, not checked."""


def model_sources(workflow: Any) -> tuple[list[ModelSource], list[str]]:
    """The workflow's model sources, and a line for each entry that could not be used."""
    if not isinstance(workflow, dict):
        return [], []
    raw: list[tuple[str, Any]] = []
    for where, nodes in _node_lists(workflow):
        for node in nodes:
            raw += [(f"{where} node {node.get('id')}", entry) for entry in _selected_models(node)]
    raw += [("workflow", entry) for entry in _list(workflow.get("models"))]
    sources: list[ModelSource] = []
    problems: list[str] = []
    seen: set[str] = set()
    for where, entry in raw:
        try:
            source = _source(entry)
        except ValueError as error:
            problems.append(f"{where}: models entry {_describe(entry)} not used: {error}")
            continue
        key = source.url or source.sha256 or ""
        if key not in seen:
            seen.add(key)
            sources.append(source)
    return sources, problems


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _node_lists(workflow: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    lists = [("workflow", [n for n in _list(workflow.get("nodes")) if isinstance(n, dict)])]
    definitions = workflow.get("definitions")
    for subgraph in _list(definitions.get("subgraphs")) if isinstance(definitions, dict) else []:
        if isinstance(subgraph, dict):
            name = subgraph.get("name") or subgraph.get("id") or "?"
            lists.append((f"subgraph '{name}'", [n for n in _list(subgraph.get("nodes")) if isinstance(n, dict)]))
    return lists


def _selected_models(node: dict[str, Any]) -> list[Any]:
    """The node's `properties.models` entries for the files its widgets currently name."""
    properties = node.get("properties")
    models = _list(properties.get("models")) if isinstance(properties, dict) else []
    widgets = node.get("widgets_values")
    values = widgets if isinstance(widgets, list) else list(widgets.values()) if isinstance(widgets, dict) else []
    chosen = {value for value in values if isinstance(value, str) and value.strip()}
    return [entry for entry in models if isinstance(entry, dict) and entry.get("name") in chosen]


def _source(entry: Any) -> ModelSource:
    if not isinstance(entry, dict):
        raise ValueError("it is not an object")
    name, url, directory = entry.get("name"), entry.get("url"), entry.get("directory")
    if not all(isinstance(v, str) and v for v in (name, url, directory)):
        raise ValueError("name, url and directory are all required")
    try:
        clean = clean_name(name)
    except ModelPathRefused as refused:
        raise ValueError(str(refused).removeprefix("name: ")) from None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL or any(c in url for c in "\r\n\t \"'`$\\"):
        raise ValueError("the url is not a plain http(s) address")
    if not _DIRECTORY.match(directory):
        raise ValueError(f"directory {directory!r} is not a plain folder name")
    hash_value, hash_type = entry.get("hash"), str(entry.get("hash_type") or "").lower()
    sha256 = other = None
    if isinstance(hash_value, str) and hash_value and _HEX.match(hash_value):
        if hash_type in ("sha256", "") and len(hash_value) == 64:
            sha256 = hash_value.lower()
        else:
            other = f"{hash_type or 'unknown'}:{hash_value.lower()}"
    return ModelSource(clean, url, LEGACY_KINDS.get(directory, directory), sha256, other)


def _describe(entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return repr(name)[:80] if isinstance(name, str) else "(unnamed)"
