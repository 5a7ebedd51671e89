"""What a worker renders for a Distributed Upscale: its tiles, through stock nodes only.

A worker needs no third-party node pack and no route back to the master. It receives the part of the
user's graph upstream of the upscale node's `model`, `positive`, `negative` and `vae` inputs (so it
loads the same checkpoint and encodes the same prompt itself), and for each tile a stock img2img
chain: LoadImage (the tile, uploaded as an input file) -> VAEEncode -> KSampler (the tile's own
seed) -> VAEDecode (or VAEDecodeTiled) -> PreviewImage. Several tiles may travel in one prompt; each
chain ends in its own output node, named after the tile, so the results come back per tile. A
worker that runs this extension gets each tile's pixels instead of its PNG (transport/input_images.py).

A `TilePlan` is what the dispatcher runs for one upscale: every tile of every frame, with its pixels
(held in memory, read-only) and its seed. Its shares are groups of consecutive tiles (`group_size`):
a share's `BatchSlice` is a range of the plan's tile list, and its units are tiles, so the speed
model learns seconds per tile whatever the grouping.

Pure: the user's prompt is never changed; every graph returned is new.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import graph
from ..errors import PlanError
from ..graph import Prompt
from ..shares import BatchSlice, InputImage, Share, ShareState, ShareWork
from ..transport.input_images import key_of
from .tiles import Tile

UPSCALE_CLASS = "DistributedUpscale"
SHARED_INPUTS = ("model", "positive", "negative", "vae")
"""The upscale node's inputs a worker computes itself from the user's graph."""
SAMPLER_SETTINGS = ("steps", "cfg", "sampler_name", "scheduler", "denoise")
OUTPUT_CLASS = "PreviewImage"
NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)
"""A finished job's tiles: their pixels are not kept once the upscale node is done."""
TILE_FOLDER = "distributed_tiles"
"""Where, in the master's input folder, tiles are written as PNGs for the workers that need files."""
TILED_DECODE = {"tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}
TARGET_SHARE_SECONDS = 3.0
"""A worker prompt should hold about this much tile work on the fastest participant: enough to
hide the per-prompt overhead (queue, upload, fetch), short enough to keep the end balanced."""
WRITE_AHEAD_SHARES = 3
"""A share that goes to a worker that takes files has the tiles of the next shares written as PNGs
meanwhile, so the next stock worker does not wait for their encoding."""
SHARES_PER_PARTICIPANT = 4
"""Grouping never leaves fewer than this many shares per participant, so a slow one still gets a
fair part and the last shares can go to whoever is free."""


@dataclass(frozen=True)
class TileRequest:
    """One tile as a worker renders it."""

    key: str
    """The tile's name in the worker's prompt and results (its output node id)."""
    image: str
    """The input file holding the tile's pixels (a path under the master's input folder)."""
    seed: int

    @property
    def load_node(self) -> str:
        return load_node(self.key)


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
            prompt[tile.load_node] = {"class_type": "LoadImage", "inputs": {"image": tile.image}}
            prompt[f"{prefix}encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": [tile.load_node, 0], "vae": vae}}
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


def load_node(key: str) -> str:
    """The node of a tile prompt that loads tile `key`'s pixels."""
    return f"{key}.load"


@dataclass(frozen=True)
class PlannedTile:
    """One tile as the master planned it: its pixels and how it is seeded."""

    tile: Tile
    image: InputImage
    """Its pixels: the region, padded to whole latent cells, in 8 bits."""
    seed: int
    height: int
    width: int
    """The padded size: what a worker's VAEDecode gives back."""

    @classmethod
    def of(cls, tile: Tile, pixels: np.ndarray, seed: int) -> PlannedTile:
        """`pixels` uint8 [H, W, 3], kept read-only from here on (the plan crosses to the server loop)."""
        pixels = np.ascontiguousarray(pixels)
        pixels.flags.writeable = False
        key = key_of(pixels)
        return cls(tile, InputImage(key, pixels, f"{TILE_FOLDER}/{key[:32]}.png"), seed, pixels.shape[0], pixels.shape[1])


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one Distributed Upscale, as the dispatcher hands them out."""

    template: UpscaleTemplate
    tiles: tuple[PlannedTile, ...]
    node_id: str
    """The upscale node in the master's prompt (for messages)."""

    collector_ids: tuple[str, ...] = ()
    """A tile job has no collector: its results are checked by `ShareWork.image_sizes` instead."""
    audio_collectors: tuple[str, ...] = ()
    split: bool = False

    def without_pixels(self) -> TilePlan:
        """The plan as a finished job keeps it (for its tile map): the tiles' pixels let go."""
        return replace(self, tiles=tuple(replace(tile, image=replace(tile.image, pixels=NO_PIXELS)) for tile in self.tiles))

    @functools.cached_property
    def workflow_key(self) -> str:
        """The work of one tile whatever its seed, position and pixels: the speed model learns per key."""
        sizes = sorted({(tile.height, tile.width) for tile in self.tiles})
        body = {"upstream": self.template.upstream, "links": self.template.links, "settings": self.template.settings,
                "tiled_decode": self.template.tiled_decode, "size": sizes[-1] if sizes else None}
        return "tiles-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    @functools.cached_property
    def shared_nodes(self) -> frozenset[str]:
        """The upstream graph (loaders, prompt encoders): a worker that took it from its cache ran warm."""
        return frozenset(self.template.upstream)

    @staticmethod
    def key(tile_index: int) -> str:
        """The output node of tile `tile_index` in a worker prompt, and the name of its result."""
        return f"tile{tile_index}"

    def indices(self, batch: BatchSlice | None) -> range:
        """The plan's tiles a share renders."""
        return range(batch.start, batch.start + batch.length) if batch is not None else range(len(self.tiles))

    def share_work(self, index: int, batch: BatchSlice | None, expected_shapes: dict[str, tuple[int, ...]] | None = None) -> ShareWork:
        """A worker prompt rendering the share's tiles, each result checked against its tile's size."""
        chosen = self.indices(batch)
        requests = [TileRequest(self.key(i), self.tiles[i].image.file, self.tiles[i].seed) for i in chosen]
        sizes = {self.key(i): (self.tiles[i].height, self.tiles[i].width, 3) for i in chosen}
        inputs = {load_node(self.key(i)): self.tiles[i].image for i in chosen}
        following = range(chosen.stop, min(len(self.tiles), chosen.stop + WRITE_AHEAD_SHARES * len(chosen)))
        return ShareWork(self.template.tile_prompt(requests), tuple(sizes), max_images=1, image_sizes=sizes, inputs=inputs,
                         ahead=tuple(self.tiles[i].image for i in following))

    def describe(self, shares: Iterable[Share]) -> str:
        """The tiles of `shares`, for people: "frame 0 tile (0, 1), frame 0 tile (0, 2)"."""
        return ", ".join(self.tiles[i].tile.name for share in shares for i in self.indices(share.batch))

    def tile_map(self, shares: Iterable[Share]) -> list[dict[str, Any]]:
        """Per tile: its frame and rectangle (the part of the output it owns), its state and participant."""
        view: list[dict[str, Any]] = []
        for share in sorted(shares, key=lambda s: s.index):
            state = "pending" if share.state == ShareState.PENDING else share.state.value
            for i in self.indices(share.batch):
                core = self.tiles[i].tile.core
                view.append({"tile": i, "frame": self.tiles[i].tile.frame, "x": core.x0, "y": core.y0, "width": core.width,
                             "height": core.height, "share": share.index, "state": state, "participant": share.participant})
        return sorted(view, key=lambda entry: entry["tile"])


def group_size(seconds_per_tile: float | None, tiles: int, participants: int) -> int:
    """How many tiles travel in one share.

    Unmeasured, one tile per share (the first shares measure everyone). Measured, about
    TARGET_SHARE_SECONDS of work on the fastest participant, but never so many that fewer than
    SHARES_PER_PARTICIPANT shares per participant remain.
    """
    if seconds_per_tile is None or seconds_per_tile <= 0:
        return 1
    wanted = max(1, math.floor(TARGET_SHARE_SECONDS / seconds_per_tile))
    ceiling = max(1, tiles // (SHARES_PER_PARTICIPANT * max(participants, 1)))
    return min(wanted, ceiling)


def tile_groups(tiles: int, size: int) -> list[BatchSlice]:
    """Consecutive tiles, `size` per share (the last share may hold fewer)."""
    return [BatchSlice(start, min(size, tiles - start)) for start in range(0, tiles, max(size, 1))]
