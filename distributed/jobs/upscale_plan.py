"""What a worker renders for a Distributed Upscale: its tiles, through stock nodes only.

A worker needs no third-party node pack and no route back to the master. It receives the part of the
user's graph upstream of the upscale node's `model`, `positive`, `negative` and `vae` inputs (so it
loads the same checkpoint and encodes the same prompt itself), and for each tile a stock img2img
chain: LoadImage (the tile, uploaded as an input file) -> VAEEncode -> KSampler (the tile's own
seed) -> VAEDecode (or VAEDecodeTiled) -> PreviewImage. Several tiles may travel in one prompt; each
chain ends in its own output node, named after the tile, so the results come back per tile.

Pure: the user's prompt is never changed; every graph returned is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import graph
from ..errors import PlanError
from ..graph import Prompt

UPSCALE_CLASS = "DistributedUpscale"
SHARED_INPUTS = ("model", "positive", "negative", "vae")
"""The upscale node's inputs a worker computes itself from the user's graph."""
SAMPLER_SETTINGS = ("steps", "cfg", "sampler_name", "scheduler", "denoise")
OUTPUT_CLASS = "PreviewImage"
TILED_DECODE = {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}


@dataclass(frozen=True)
class TileRequest:
    """One tile as a worker renders it."""

    key: str
    """The tile's name in the worker's prompt and results (its output node id)."""
    image: str
    """The input file holding the tile's pixels (a path under the master's input folder)."""
    seed: int


@dataclass(frozen=True)
class UpscaleTemplate:
    """The part of a prompt every tile prompt shares, and the sampler settings."""

    upstream: Prompt
    links: dict[str, list[Any]]
    """model, positive, negative, vae -> the link the upscale node had for each."""
    settings: dict[str, Any]
    """steps, cfg, sampler_name, scheduler, denoise, as the upscale node got them."""
    tiled_decode: bool = False

    def tile_prompt(self, tiles: Sequence[TileRequest]) -> Prompt:
        """One worker prompt rendering `tiles`, each ending in an output node named by its key."""
        prompt = graph.subgraph(self.upstream, self.upstream)
        vae = list(self.links["vae"])
        for tile in tiles:
            prefix = f"{tile.key}."
            prompt[f"{prefix}load"] = {"class_type": "LoadImage", "inputs": {"image": tile.image}}
            prompt[f"{prefix}encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": [f"{prefix}load", 0], "vae": vae}}
            prompt[f"{prefix}sample"] = {"class_type": "KSampler", "inputs": {
                "model": list(self.links["model"]), "positive": list(self.links["positive"]),
                "negative": list(self.links["negative"]), "latent_image": [f"{prefix}encode", 0], "seed": tile.seed,
                **self.settings,
            }}
            decode_inputs: dict[str, Any] = {"samples": [f"{prefix}sample", 0], "vae": vae}
            if self.tiled_decode:
                decode_inputs.update(TILED_DECODE)
            prompt[f"{prefix}decode"] = {"class_type": "VAEDecodeTiled" if self.tiled_decode else "VAEDecode", "inputs": decode_inputs}
            prompt[tile.key] = {"class_type": OUTPUT_CLASS, "inputs": {"images": [f"{prefix}decode", 0]}}
        return prompt


def upscale_template(prompt: Prompt, node_id: str) -> UpscaleTemplate:
    """The shared part of every tile prompt, from the user's prompt as the master runs it.

    Raises PlanError naming the node when an input a worker must compute is not wired, or when a
    sampler setting is itself wired from another node (a worker could not know its value).
    """
    node = prompt.get(node_id)
    if not isinstance(node, dict) or node.get("class_type") != UPSCALE_CLASS:
        raise PlanError(f"node {node_id} is not a Distributed Upscale")
    inputs = node.get("inputs", {})
    links = {}
    for name in SHARED_INPUTS:
        value = inputs.get(name)
        if not graph.is_link(value) or str(value[0]) not in prompt:
            raise PlanError(f"Distributed Upscale (node {node_id}) needs '{name}' wired from the graph")
        links[name] = [str(value[0]), value[1]]
    sources = {link[0] for link in links.values()}
    upstream = graph.subgraph(prompt, sources | graph.ancestors(prompt, sources))
    settings = {}
    for name in SAMPLER_SETTINGS:
        value = inputs.get(name)
        if graph.is_link(value):
            raise PlanError(f"Distributed Upscale (node {node_id}) '{name}' comes from another node; give it a value on the node")
        settings[name] = value
    return UpscaleTemplate(upstream, links, settings, bool(inputs.get("tiled_decode", False)))
