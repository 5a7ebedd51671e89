"""Pure helpers over ComfyUI's API-format prompt: `{node_id: {"class_type", "inputs"}}`.

Standard library only, so the planner, the transport and their tests never import torch or ComfyUI.
Helpers return new dicts and leave their input alone, except `replace_output_with_literal`, which
rewrites a prompt in place and is only ever given a copy (`subgraph`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

Prompt = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    """True for an input wired to another node's output: `[node_id, output_index]`."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def links(node: dict[str, Any]) -> Iterator[tuple[str, str, int]]:
    """Yields (input_name, source_node_id, source_output) for each wired input of a node."""
    for name, value in node.get("inputs", {}).items():
        if is_link(value):
            yield name, str(value[0]), value[1]


def nodes_of_class(prompt: Prompt, class_type: str) -> list[str]:
    """Ids of the nodes of one class, in a stable order."""
    return sorted((node_id for node_id, node in prompt.items() if node.get("class_type") == class_type), key=id_order)


def ancestors(prompt: Prompt, node_ids: Iterable[str]) -> set[str]:
    """Every node the given nodes depend on, the given nodes excluded unless reachable from another."""
    seen: set[str] = set()
    stack = [source for node_id in node_ids for _, source, _ in links(prompt[node_id])]
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        stack.extend(source for _, source, _ in links(prompt[node_id]))
    return seen


def subgraph(prompt: Prompt, node_ids: Iterable[str]) -> Prompt:
    """A deep copy of the chosen nodes, so rewriting it never touches the user's prompt."""
    return {node_id: copy.deepcopy(prompt[node_id]) for node_id in sorted(node_ids, key=id_order)}


def replace_output_with_literal(prompt: Prompt, source_id: str, output_index: int, literal: Any) -> None:
    """Rewrites, in place on an already copied prompt, every link to one output into a literal."""
    for node in prompt.values():
        inputs = node.get("inputs", {})
        for name, value in list(inputs.items()):
            if is_link(value) and str(value[0]) == source_id and value[1] == output_index:
                inputs[name] = literal


def id_order(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def with_prefix(prompt: Prompt, prefix: str) -> Prompt:
    """A copy with every node id (and every link) prefixed, for expanding a prompt inside a node."""
    renamed: Prompt = {}
    for node_id, node in prompt.items():
        copied = copy.deepcopy(node)
        copied["inputs"] = {
            name: [f"{prefix}{value[0]}", value[1]] if is_link(value) else value for name, value in copied.get("inputs", {}).items()
        }
        renamed[f"{prefix}{node_id}"] = copied
    return renamed
