"""Both ends' vocabulary of the fast result path: the sink node's name, inputs and history output.

A worker that runs this extension ends each share in `DistributedResultSink` (comfy/result_sink.py)
instead of PreviewImage. The node keeps the tensor in the worker's `ResultStore` as uint8 (quantised
exactly as PreviewImage would, without PNG) or as float16/float32, and the master pulls it from
`GET /distributed/results/...` in the wire format. The node's history output says what it stored,
so the master knows the dtype and shape before it fetches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

from ..graph import Prompt
from ..shares import PRECISIONS

SINK_CLASS = "DistributedResultSink"
SINK_DISPLAY_NAME = "Distributed Result Sink"
DEFAULT_PRECISION = PRECISIONS[0]
"""uint8 is what a PNG carries (the default); float16/float32 keep the tensor unquantised."""
RESULT_UI_KEY = "distributed_result"
"""The sink's history output: one descriptor per stored array."""
AUDIO_KEY_SUFFIX = ".audio"
SINK_DATA_INPUTS = ("images", "audio")
RESULTS_PATH = "/distributed/results/{prompt_id}/{node_id}"


def sink_prompt(prompt: Prompt, collector_ids: tuple[str, ...], precisions: Mapping[str, str], encoding: str) -> Prompt:
    """The share prompt with each collector's stock output node replaced by the sink, same node id.

    Returns a new prompt; whatever fed the stock node's `images` (or `audio`) feeds the sink's.
    """
    rewritten = dict(prompt)
    for node_id in collector_ids:
        precision = precisions.get(node_id, DEFAULT_PRECISION)
        if precision not in PRECISIONS:
            raise ValueError(f"precision '{precision}' of collector {node_id} is not one of {', '.join(PRECISIONS)}")
        links = {name: list(value) for name, value in prompt[node_id]["inputs"].items() if name in SINK_DATA_INPUTS}
        rewritten[node_id] = {"class_type": SINK_CLASS, "inputs": {**links, "precision": precision, "encoding": encoding}}
    return rewritten


def describe(key: str, kind: str, array: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"key": key, "kind": kind, "dtype": array.dtype.name, "shape": list(array.shape), **extra}


def result_path(prompt_id: str, key: str) -> str:
    """Where a worker serves one stored result (RESULTS_PATH filled in)."""
    return f"/distributed/results/{quote(prompt_id, safe='')}/{quote(key, safe='')}"
