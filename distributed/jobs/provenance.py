"""Which share made which image of a collected batch, and the prompt that renders that image alone.

A collected batch mixes shares: image k of a fan-out run was rendered with seed + k, or with item k
of a Distributed Value, or (split batch) is image k of the single-instance batch. Saved with the
master's own prompt, every image would claim share 0's settings, and dragging image 3 into ComfyUI
would render image 1 again. So each image gets its own copy of the prompt (API format) and of the
workflow (the frontend's format), changed so that, queued on one GPU, it renders that image:

- every Distributed Seed holds the share's seed;
- every Distributed Value holds only the share's item;
- in split-batch mode, a LatentFromBatch after each empty latent picks the image's own index;
- the collector neither distributes nor splits (shares 0, split off), so the copy renders alone.

Pure: dicts in, new dicts out; the inputs are never changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..graph import Prompt
from ..shares import BatchSlice
from .plan import (
    COLLECTOR_INPUTS,
    EMPTY_LATENT_CLASSES,
    JOB_INPUT,
    SEED_CLASS,
    SHARES_INPUT,
    SLICE_CLASS,
    SPLIT_INPUT,
    share_seed,
    slice_latents,
)
from .values import VALUE_CLASS, value_list

SLICE_SUFFIX = ".slice"
"""The hook's LatentFromBatch after an empty latent is that latent's id plus this (plan.slice_latents)."""


@dataclass(frozen=True)
class ImageOrigin:
    """Where one image of a collected batch came from."""

    share_index: int
    batch_index: int | None = None
    """Split mode: the image's index in the single-instance batch."""


def image_origins(parts: Iterable[tuple[int, int, BatchSlice | None]]) -> tuple[ImageOrigin, ...]:
    """One origin per image, in batch order, from (share index, image count, batch slice) per part."""
    origins: list[ImageOrigin] = []
    for share_index, count, batch in parts:
        origins += [ImageOrigin(share_index, batch.start + position if batch else None) for position in range(count)]
    return tuple(origins)


def prompt_for(prompt: Prompt, origin: ImageOrigin) -> Prompt:
    """The master's prompt, as ComfyUI ran it, changed to render this one image on one GPU."""
    variant = copy.deepcopy(prompt)
    for node in variant.values():
        inputs = node.setdefault("inputs", {})
        kind = node.get("class_type")
        if kind == SEED_CLASS and origin.batch_index is None and _is_number(inputs.get("seed")):
            inputs["seed"] = share_seed(inputs["seed"], origin.share_index)
        elif kind == VALUE_CLASS:
            inputs["values"] = _item_text(inputs, origin)
        elif kind in COLLECTOR_INPUTS:
            inputs.pop(JOB_INPUT, None)
            if SHARES_INPUT in inputs:
                inputs[SHARES_INPUT] = 0
            if SPLIT_INPUT in inputs:
                inputs[SPLIT_INPUT] = False
    if origin.batch_index is not None:
        _pick_from_batch(variant, origin.batch_index)
    return variant


def workflow_for(workflow: Any, prompt: Prompt, origin: ImageOrigin) -> Any:
    """The frontend's workflow (extra_pnginfo["workflow"]) changed as `prompt_for` changes the prompt.

    Nodes are matched by id. Nodes inside subgraphs are left as they are: their ids in the prompt are
    paths ("5:3"), and the workflow only holds the subgraph's definition.
    """
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return workflow
    variant = copy.deepcopy(workflow)
    by_id = {str(node.get("id")): node for node in variant["nodes"] if isinstance(node, dict)}
    for node_id, node in prompt.items():
        shown = by_id.get(node_id)
        widgets = shown.get("widgets_values") if shown else None
        if not isinstance(widgets, list) or not widgets:
            continue
        kind = node.get("class_type")
        inputs = node.get("inputs", {})
        if kind == SEED_CLASS and origin.batch_index is None and _is_number(widgets[0]) and _is_number(inputs.get("seed")):
            widgets[0] = share_seed(inputs["seed"], origin.share_index)
        elif kind == VALUE_CLASS:
            widgets[0] = _item_text(inputs, origin)
        elif kind in COLLECTOR_INPUTS and len(widgets) >= 2 and isinstance(widgets[1], bool):
            widgets[0], widgets[1] = 0, False  # shares, split_batch: the order of the collector's widgets
    if origin.batch_index is not None:
        for node_id, node in prompt.items():
            if node.get("class_type") in EMPTY_LATENT_CLASSES and node_id in by_id:
                _insert_slice(variant, by_id[node_id], origin.batch_index)
    return variant


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _item_text(inputs: dict[str, Any], origin: ImageOrigin) -> str:
    """The one line a Distributed Value keeps: the item its share got (item 0 in split mode)."""
    values = value_list(inputs.get("values"), inputs.get("type"), inputs.get("past_end", "cycle"), "Distributed Value")
    item = values.for_share(0 if origin.batch_index is not None else origin.share_index)
    return item if isinstance(item, str) else json.dumps(item)


def _pick_from_batch(prompt: Prompt, batch_index: int) -> None:
    """Makes every empty latent's slice pick the one image; adds the slice where the master had none."""
    latent_nodes = tuple(node_id for node_id, node in prompt.items() if node.get("class_type") in EMPTY_LATENT_CLASSES)
    unsliced = tuple(node_id for node_id in latent_nodes if node_id + SLICE_SUFFIX not in prompt)
    slice_latents(prompt, unsliced, BatchSlice(batch_index, 1))
    for node_id in latent_nodes:
        prompt[node_id + SLICE_SUFFIX]["inputs"].update({"batch_index": batch_index, "length": 1})


def _insert_slice(workflow: dict[str, Any], latent: dict[str, Any], batch_index: int) -> None:
    """Adds a LatentFromBatch after an empty latent node of the frontend's workflow, taking over its
    outgoing links, so the workflow renders one image of the batch."""
    outputs = latent.get("outputs")
    links = workflow.get("links")
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict) or not isinstance(links, list):
        return
    node_ids = [node.get("id") for node in workflow["nodes"] if isinstance(node.get("id"), int)]
    link_ids = [link[0] for link in links if isinstance(link, list) and link and isinstance(link[0], int)]
    slice_id = max([workflow.get("last_node_id") or 0, *node_ids]) + 1
    feed_id = max([workflow.get("last_link_id") or 0, *link_ids]) + 1
    moved = [link_id for link_id in outputs[0].get("links") or [] if isinstance(link_id, int)]
    for link in links:
        if isinstance(link, list) and len(link) >= 3 and link[0] in moved:
            link[1], link[2] = slice_id, 0
    links.append([feed_id, latent.get("id"), 0, slice_id, 0, "LATENT"])
    outputs[0]["links"] = [feed_id]
    x, y = latent.get("pos") or [0, 0]
    workflow["nodes"].append({
        "id": slice_id, "type": SLICE_CLASS, "pos": [x + 40, y + 40], "size": [270, 82], "flags": {}, "order": 0, "mode": 0,
        "inputs": [{"name": "samples", "type": "LATENT", "link": feed_id}],
        "outputs": [{"name": "LATENT", "type": "LATENT", "links": moved}],
        "properties": {"Node name for S&R": SLICE_CLASS},
        "widgets_values": [batch_index, 1],
    })
    workflow["last_node_id"], workflow["last_link_id"] = slice_id, feed_id
