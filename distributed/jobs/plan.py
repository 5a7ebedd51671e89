"""Turns a prompt holding Distributed Collector nodes into the prompt each share runs.

A share is one unit of work: the part of the graph upstream of the collectors, run with that share's
seeds and values. Share 0 is the master's own when it participates; every other share runs on a
stock worker ComfyUI, so its prompt must hold only stock nodes: `DistributedSeed` and
`DistributedValue` nodes are replaced by the share's seed or value as a literal, and each collector
by a stock output node that keeps the collector's node id, so the worker's history names results by
the collector they belong to. An audio collector becomes a PreviewAudio that only stands in the
template: audio comes back through this extension's result sink alone, so stock workers get no
audio share (transport/runner.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import graph
from ..errors import PlanError
from ..graph import Prompt
from ..shares import PRECISIONS, BatchSlice, ShareWork
from .values import VALUE_CLASS, ValueList, value_list

COLLECTOR_CLASS = "DistributedCollector"
AUDIO_COLLECTOR_CLASS = "DistributedAudioCollector"
COLLECTOR_INPUTS = {COLLECTOR_CLASS: "images", AUDIO_COLLECTOR_CLASS: "audio"}
"""Each collector class and the input it collects."""
COLLECTOR_NAMES = {COLLECTOR_CLASS: "Distributed Collector", AUDIO_COLLECTOR_CLASS: "Distributed Audio Collector"}
SEED_CLASS = "DistributedSeed"
JOB_INPUT = "distributed_job_id"
"""Input the on-prompt hook adds to each collector: the job that collector gathers for."""
SHARES_INPUT = "shares"
SPLIT_INPUT = "split_batch"
PRECISION_INPUT = "precision"
STOCK_OUTPUT_CLASS = "PreviewImage"
AUDIO_OUTPUT_CLASS = "PreviewAudio"
"""Stands for an audio collector in the share template. Audio comes back only through this
extension's sink (transport/sink.py), which replaces it; a stock worker gets no audio share."""
AUDIO_PRECISION = "float32"
SEED_SPACE = 2**64
MAX_SHARES = 256
EMPTY_LATENT_CLASSES = ("EmptyLatentImage", "EmptySD3LatentImage")
SLICE_CLASS = "LatentFromBatch"
MAX_SPLIT_BATCH = 64
"""LatentFromBatch picks at most 64 images, from index 63 at most."""


def share_seed(seed: int, share_index: int) -> int:
    """The seed share k uses: a function of the user's seed and k alone, so re-runs repeat exactly.

    `seed + k` keeps small seeds small, so a seed wired into a narrower input (a colour, a 32-bit
    seed) stays valid on the worker, and share 0 is the user's own seed.
    """
    return (seed + share_index) % SEED_SPACE


@dataclass(frozen=True)
class Plan:
    """What the on-prompt hook learned from one prompt: its collectors and the share template."""

    collector_ids: tuple[str, ...]
    template: Prompt
    """The upstream graph with collectors replaced by stock outputs; seeds still as links."""
    seed_nodes: dict[str, int]
    """DistributedSeed node id -> the user's seed."""
    shares: int = 0
    """Shares requested on the collector; 0 = one per participant."""
    latent_nodes: tuple[str, ...] = ()
    """Empty-latent nodes whose batch is split across participants (split mode only)."""
    batch_size: int = 0
    """The single-instance batch size that split mode divides."""
    precisions: dict[str, str] = field(default_factory=dict)
    """Collector node id -> the dtype its images travel in from workers with this extension."""
    audio_collectors: tuple[str, ...] = ()
    """The collectors (among collector_ids) that gather audio rather than images."""
    value_nodes: dict[str, ValueList] = field(default_factory=dict)
    """DistributedValue node id -> its items: share k gets item k (item 0 in split mode)."""

    @property
    def split(self) -> bool:
        return bool(self.latent_nodes)

    @functools.cached_property
    def workflow_key(self) -> str:
        """Identifies the work of one share whatever the seed: the speed model learns per key."""
        template = graph.subgraph(self.template, self.template)
        for node_id in self.seed_nodes:
            template[node_id]["inputs"].pop("seed", None)
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
        return f"{'split' if self.split else 'share'}-{digest}"

    @functools.cached_property
    def shared_nodes(self) -> frozenset[str]:
        """Nodes whose work is the same in every share: no share's seed (or, in split mode, no batch
        slice) reaches them: model loaders, prompt encoders. A worker that ran the workflow just
        before takes them from its cache; one that has to run them is loading its models."""
        varying = set(self.latent_nodes) if self.split else set(self.seed_nodes)
        grew = True
        while grew:
            grew = False
            for node_id, node in self.template.items():
                if node_id not in varying and any(source in varying for _, source, _ in graph.links(node)):
                    varying.add(node_id)
                    grew = True
        shared = set(self.template) - varying - set(self.collector_ids) - set(self.seed_nodes)
        return frozenset(shared | set(self.latent_nodes))

    def share_prompt(self, share_index: int, batch: BatchSlice | None = None) -> Prompt:
        """The prompt sent to a worker for one share; a fresh copy each call.

        In split mode every share keeps the user's seed and renders its slice of the batch, so image
        i gets the noise it gets in a single-instance batch.
        """
        prompt = graph.subgraph(self.template, self.template)
        for node_id, seed in self.seed_nodes.items():
            graph.replace_output_with_literal(prompt, node_id, 0, seed if self.split else share_seed(seed, share_index))
            del prompt[node_id]
        for node_id, values in self.value_nodes.items():
            graph.replace_output_with_literal(prompt, node_id, 0, values.for_share(0 if self.split else share_index))
            del prompt[node_id]
        if batch is not None:
            slice_latents(prompt, self.latent_nodes, batch)
        return prompt

    def share_work(self, share_index: int, batch: BatchSlice | None = None,
                   image_sizes: Mapping[str, tuple[int, ...]] | None = None) -> ShareWork:
        """What a worker gets for one share: its prompt, how each collector's output comes back, and
        what that output may be (`image_sizes`: the master's own images, per collector, once known)."""
        return ShareWork(self.share_prompt(share_index, batch), self.collector_ids, self.audio_collectors, dict(self.precisions),
                         max_images=batch.length if batch is not None else None, image_sizes=dict(image_sizes or {}))


def slice_latents(prompt: Prompt, latent_nodes: tuple[str, ...], batch: BatchSlice) -> None:
    """Inserts, in place, a LatentFromBatch after each empty latent so only the slice is sampled.

    LatentFromBatch records the images' batch indexes, from which the sampler draws each image's
    noise as it would in the whole batch.
    """
    for node_id in latent_nodes:
        slice_id = f"{node_id}.slice"
        for consumer in prompt.values():
            for name, value in list(consumer.get("inputs", {}).items()):
                if graph.is_link(value) and str(value[0]) == node_id:
                    consumer["inputs"][name] = [slice_id, value[1]]
        prompt[slice_id] = {
            "class_type": SLICE_CLASS,
            "inputs": {"samples": [node_id, 0], "batch_index": batch.start, "length": batch.length},
        }


def split_batch(batch_size: int, speeds: list[float]) -> list[BatchSlice | None]:
    """Slices of the batch in proportion to each participant's speed (largest remainder), in order.

    A participant whose share rounds to nothing gets None.
    """
    total = sum(speeds)
    exact = [batch_size * speed / total for speed in speeds]
    counts = [int(x) for x in exact]
    for index in sorted(range(len(speeds)), key=lambda i: exact[i] - counts[i], reverse=True)[: batch_size - sum(counts)]:
        counts[index] += 1
    slices: list[BatchSlice | None] = []
    start = 0
    for count in counts:
        slices.append(BatchSlice(start, count) if count else None)
        start += count
    return slices


def is_collector(node: object) -> bool:
    return isinstance(node, dict) and node.get("class_type") in COLLECTOR_INPUTS


def has_collector(prompt: Prompt) -> bool:
    return any(is_collector(node) for node in prompt.values())


def plan(prompt: Prompt) -> Plan:
    """Builds the share template; raises PlanError naming the node when the prompt can't be split."""
    collector_ids = sorted((node_id for node_id, node in prompt.items() if is_collector(node)), key=graph.id_order)
    if not collector_ids:
        raise PlanError("the prompt holds no Distributed Collector")
    collected = {node_id: COLLECTOR_INPUTS[prompt[node_id]["class_type"]] for node_id in collector_ids}
    names = {node_id: COLLECTOR_NAMES[prompt[node_id]["class_type"]] for node_id in collector_ids}
    for collector_id, input_name in collected.items():
        source = prompt[collector_id].get("inputs", {}).get(input_name)
        if not graph.is_link(source):
            raise PlanError(f"{names[collector_id]} (node {collector_id}) has nothing connected to '{input_name}'")
        if str(source[0]) not in prompt:
            raise PlanError(f"{names[collector_id]} (node {collector_id}) is fed by node {source[0]}, which is not in the prompt")

    upstream = graph.ancestors(prompt, collector_ids)
    nested = sorted(set(collector_ids) & upstream, key=graph.id_order)
    if nested:
        raise PlanError(f"{names[nested[0]]} (node {nested[0]}) feeds another collector; use one collector per branch")

    template = graph.subgraph(prompt, upstream)
    audio_collectors = tuple(node_id for node_id, input_name in collected.items() if input_name == "audio")
    for collector_id, input_name in collected.items():
        template[collector_id] = {
            "class_type": AUDIO_OUTPUT_CLASS if collector_id in audio_collectors else STOCK_OUTPUT_CLASS,
            "inputs": {input_name: list(prompt[collector_id]["inputs"][input_name])},
        }

    seed_nodes: dict[str, int] = {}
    for node_id in graph.nodes_of_class(template, SEED_CLASS):
        seed = template[node_id].get("inputs", {}).get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise PlanError(f"Distributed Seed (node {node_id}) needs a number for 'seed', not {type(seed).__name__}")
        if not 0 <= seed < SEED_SPACE:
            raise PlanError(f"Distributed Seed (node {node_id}) seed {seed} is outside 0..2^64-1")
        seed_nodes[node_id] = seed
    value_nodes = {node_id: _value_list(node_id, template[node_id].get("inputs", {}))
                   for node_id in graph.nodes_of_class(template, VALUE_CLASS)}

    settings = prompt[collector_ids[0]].get("inputs", {})
    shares = settings.get(SHARES_INPUT, 0)
    if isinstance(shares, bool) or not isinstance(shares, int) or not 0 <= shares <= MAX_SHARES:
        raise PlanError(f"Distributed Collector (node {collector_ids[0]}) 'shares' must be a number from 0 to {MAX_SHARES}")
    latent_nodes: tuple[str, ...] = ()
    batch_size = 0
    if settings.get(SPLIT_INPUT) is True:
        latent_nodes, batch_size = _splittable_latents(template, collector_ids[0])
    precisions = {collector_id: AUDIO_PRECISION for collector_id in audio_collectors}
    for collector_id in collector_ids:
        if collector_id in audio_collectors:
            continue
        precision = prompt[collector_id].get("inputs", {}).get(PRECISION_INPUT, PRECISIONS[0])
        if precision not in PRECISIONS:
            raise PlanError(f"Distributed Collector (node {collector_id}) 'precision' must be one of {', '.join(PRECISIONS)}")
        precisions[collector_id] = precision
    return Plan(tuple(collector_ids), template, seed_nodes, shares, latent_nodes, batch_size, precisions, audio_collectors,
                value_nodes)


def _value_list(node_id: str, inputs: dict) -> ValueList:
    return value_list(inputs.get("values"), inputs.get("type"), inputs.get("past_end", "cycle"), f"Distributed Value (node {node_id})")


def _splittable_latents(template: Prompt, collector_id: str) -> tuple[tuple[str, ...], int]:
    """The empty latents split mode divides; all must share one literal batch size."""
    latent_nodes = tuple(node_id for cls in EMPTY_LATENT_CLASSES for node_id in graph.nodes_of_class(template, cls))
    where = f"Distributed Collector (node {collector_id}) split batch"
    if not latent_nodes:
        raise PlanError(f"{where}: no EmptyLatentImage above the collector to split")
    sizes = [template[node_id]["inputs"].get("batch_size") for node_id in latent_nodes]
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in sizes) or len(set(sizes)) != 1:
        raise PlanError(f"{where}: every EmptyLatentImage needs the same literal batch_size")
    batch_size = sizes[0]
    if not 1 <= batch_size <= MAX_SPLIT_BATCH:
        raise PlanError(f"{where}: batch_size must be 1..{MAX_SPLIT_BATCH}")
    return latent_nodes, batch_size
