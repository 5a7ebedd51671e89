"""Turns a prompt holding Distributed Collector nodes into the prompt each share runs.

A share is one unit of work: the part of the graph upstream of the collectors, run with that share's
seeds. Share 0 is the master's own when it participates; every other share runs on a stock worker
ComfyUI, so its prompt must hold only stock nodes: `DistributedSeed` nodes are replaced by the share's
seed as a literal, and each collector by a stock output node that keeps the collector's node id, so
the worker's history names results by the collector they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import graph
from .errors import PlanError
from .graph import Prompt

COLLECTOR_CLASS = "DistributedCollector"
SEED_CLASS = "DistributedSeed"
JOB_INPUT = "distributed_job_id"
"""Input the on-prompt hook adds to each collector: the job that collector gathers for."""
STOCK_OUTPUT_CLASS = "PreviewImage"
SEED_SPACE = 2**64


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

    @property
    def class_types(self) -> frozenset[str]:
        """Node classes a worker must have to run a share (seed nodes are removed before sending)."""
        return frozenset(node["class_type"] for node in self.template.values() if node["class_type"] != SEED_CLASS)

    def share_prompt(self, share_index: int) -> Prompt:
        """The prompt sent to a worker for one share; a fresh copy each call."""
        prompt = graph.subgraph(self.template, self.template)
        for node_id, seed in self.seed_nodes.items():
            graph.replace_output_with_literal(prompt, node_id, 0, share_seed(seed, share_index))
            del prompt[node_id]
        return prompt


def has_collector(prompt: Prompt) -> bool:
    return any(isinstance(node, dict) and node.get("class_type") == COLLECTOR_CLASS for node in prompt.values())


def plan(prompt: Prompt) -> Plan:
    """Builds the share template; raises PlanError naming the node when the prompt can't be split."""
    collector_ids = graph.nodes_of_class(prompt, COLLECTOR_CLASS)
    if not collector_ids:
        raise PlanError("the prompt holds no Distributed Collector")
    for collector_id in collector_ids:
        images = prompt[collector_id].get("inputs", {}).get("images")
        if not graph.is_link(images):
            raise PlanError(f"Distributed Collector (node {collector_id}) has nothing connected to 'images'")
        if str(images[0]) not in prompt:
            raise PlanError(f"Distributed Collector (node {collector_id}) is fed by node {images[0]}, which is not in the prompt")

    upstream = graph.ancestors(prompt, collector_ids)
    nested = sorted(set(collector_ids) & upstream)
    if nested:
        raise PlanError(f"Distributed Collector (node {nested[0]}) feeds another collector; use one collector per branch")

    template = graph.subgraph(prompt, upstream)
    for collector_id in collector_ids:
        template[collector_id] = {
            "class_type": STOCK_OUTPUT_CLASS,
            "inputs": {"images": list(prompt[collector_id]["inputs"]["images"])},
        }

    seed_nodes: dict[str, int] = {}
    for node_id in graph.nodes_of_class(template, SEED_CLASS):
        seed = template[node_id].get("inputs", {}).get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise PlanError(f"Distributed Seed (node {node_id}) needs a number for 'seed', not {type(seed).__name__}")
        if not 0 <= seed < SEED_SPACE:
            raise PlanError(f"Distributed Seed (node {node_id}) seed {seed} is outside 0..2^64-1")
        seed_nodes[node_id] = seed
    return Plan(collector_ids=tuple(collector_ids), template=template, seed_nodes=seed_nodes)
