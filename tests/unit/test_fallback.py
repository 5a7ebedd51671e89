"""The graph a collector expands into to render, on the master, the shares no worker could deliver."""

from __future__ import annotations

from distributed.jobs.fallback import AUDIO_NODE_CLASS, IMAGES_NODE_CLASS, fallback_graph
from distributed.jobs.plan import plan
from distributed.shares import BatchSlice


def _prompt() -> dict:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 41}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "3": {"class_type": "KSamplerLike", "inputs": {"seed": ["1", 0], "latent": ["2", 0]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
    }


def test_each_share_renders_with_its_own_seed_and_the_last_node_joins_the_batch() -> None:
    expansion, last = fallback_graph(plan(_prompt()), "job1", "4", [(2, None), (3, None)], "t0ken")

    assert expansion["distributed.4.2.3"]["inputs"]["seed"] == 43
    assert expansion["distributed.4.3.3"]["inputs"]["seed"] == 44
    first, second = expansion["distributed.4.2.share"], expansion["distributed.4.3.share"]
    assert first["class_type"] == IMAGES_NODE_CLASS
    assert first["inputs"]["images"] == ["distributed.4.2.3", 0] and first["inputs"]["last"] is False and "after" not in first["inputs"]
    assert second["inputs"]["after"] == ["distributed.4.2.share", 0] and second["inputs"]["last"] is True
    assert last == "distributed.4.3.share"
    assert not any(node["class_type"] in ("PreviewImage", "DistributedCollector", "SaveImage") for node in expansion.values())


def test_a_split_share_renders_only_its_slice() -> None:
    prompt = _prompt()
    prompt["4"]["inputs"]["split_batch"] = True
    expansion, _ = fallback_graph(plan(prompt), "job1", "4", [(1, BatchSlice(2, 2))], "t0ken")

    sliced = [node for node in expansion.values() if node["class_type"] == "LatentFromBatch"]
    assert len(sliced) == 1 and sliced[0]["inputs"]["batch_index"] == 2 and sliced[0]["inputs"]["length"] == 2
    assert expansion["distributed.4.1.3"]["inputs"]["seed"] == 41  # split shares keep the user's seed


def test_an_audio_collector_gets_the_audio_node() -> None:
    prompt = {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 5}},
        "2": {"class_type": "ToneLike", "inputs": {"seed": ["1", 0]}},
        "3": {"class_type": "DistributedAudioCollector", "inputs": {"audio": ["2", 0]}},
    }
    expansion, last = fallback_graph(plan(prompt), "job1", "3", [(1, None)], "t0ken")

    assert expansion[last]["class_type"] == AUDIO_NODE_CLASS
    assert expansion[last]["inputs"]["audio"] == ["distributed.3.1.2", 0]
