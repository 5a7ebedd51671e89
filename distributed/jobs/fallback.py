"""Shares the master renders itself, through ComfyUI's node expansion.

A master that takes part is a participant like any worker once its own share is done: while its
collector waits, the dispatcher may hand it a waiting share, when it would finish that share no later
than anyone else, or no worker can take it (every one failed it, or none is online). The collector
then returns, instead of its batch, an expansion: for each such share, the share's own graph (its
seeds made literal, its batch slice cut) under a node-id prefix, ending in a "master share" node that
hands the output to the dispatcher. Those nodes form a chain, so the last runs after all others; it
asks for the collector's next outcome, which is another expansion or the collector's whole batch,
and that is what the collector's output becomes. Each master-share node carries the job's
`master_share_token`: the expansion lives only inside the master's execution, so a prompt queued by
another client (which may hold the same nodes and read the job id from the API) cannot deliver a
share. Pure graph logic; the nodes live in comfy/collectors.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import graph
from ..graph import Prompt
from ..shares import BatchSlice
from .plan import Plan

IMAGES_NODE_CLASS = "DistributedMasterShare"
AUDIO_NODE_CLASS = "DistributedMasterAudioShare"


def fallback_graph(
    plan: Plan, job_id: str, collector_id: str, shares: Sequence[tuple[int, BatchSlice | None]], token: str,
) -> tuple[Prompt, str]:
    """The expansion that renders `shares` (index, batch slice) for one collector on the master;
    `token` is the job's master_share_token.

    Returns the graph and the id of its last node, whose output is the collector's whole batch.
    """
    audio = collector_id in plan.audio_collectors
    input_name = "audio" if audio else "images"
    expanded: Prompt = {}
    previous: str | None = None
    for position, (index, batch) in enumerate(shares):
        share = plan.share_prompt(index, batch)
        source = share[collector_id]["inputs"][input_name]
        prefix = f"distributed.{collector_id}.{index}."
        expanded.update(graph.with_prefix(graph.subgraph(share, graph.ancestors(share, [collector_id])), prefix))
        node_id = f"{prefix}share"
        inputs = {
            input_name: [f"{prefix}{source[0]}", source[1]],
            "job_id": job_id,
            "collector_id": collector_id,
            "share_index": index,
            "last": position == len(shares) - 1,
            "token": token,
        }
        if previous is not None:
            inputs["after"] = [previous, 0]
        expanded[node_id] = {"class_type": AUDIO_NODE_CLASS if audio else IMAGES_NODE_CLASS, "inputs": inputs}
        previous = node_id
    if previous is None:
        raise ValueError("fallback_graph needs at least one share")
    return expanded, previous
