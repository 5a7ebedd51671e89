"""Per-share values and per-image metadata: share k renders with item k, and image k of a collected
batch carries the prompt that renders image k again on one GPU."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image

from tests.conftest import Cluster
from tests.fixtures.tiny_sd import DECODE_NODE, OUTPUT_NODE, SAMPLER_NODE, tiny_txt2img_prompt, write_tiny_checkpoint
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt


def value_prompt(values: str, shares: int = 0, past_end: str = "cycle", prefix: str = "values") -> dict[str, Any]:
    """A Distributed Value (INT) feeds the stamp node's seed: each image shows the value its share got."""
    prompt = seed_stamp_prompt(seed=0, prefix=prefix)
    prompt["1"] = {"class_type": "DistributedValue", "inputs": {"values": values, "type": "INT", "past_end": past_end}}
    prompt["4"]["inputs"]["shares"] = shares
    return prompt


def stamps(cluster: Cluster, entry: dict[str, Any]) -> list[int]:
    return [read_stamp(path)[0] for path in saved_images(entry, cluster.master.output_dir)]


def test_values_arrive_in_share_order_with_fan_out(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    assert stamps(cluster, cluster.run(value_prompt("100\n200\n300"))) == [100, 200, 300]


def test_values_follow_shares_past_the_end_of_the_list(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    assert stamps(cluster, cluster.run(value_prompt("100\n200", shares=5))) == [100, 200, 100, 200, 100]
    assert stamps(cluster, cluster.run(value_prompt("100\n200", shares=4, past_end="repeat_last"))) == [100, 200, 200, 200]


def test_a_failed_workers_share_keeps_its_value_wherever_it_runs(cluster: Cluster) -> None:
    cluster.use_workers("stock", "a")  # the stock worker lacks the stamp node: its share runs elsewhere
    entry = cluster.run(value_prompt("100\n200\n300"))

    assert stamps(cluster, entry) == [100, 200, 300]
    attempts = [line for share in cluster.job(entry)["shares"] for line in share["attempts"]]
    assert attempts and "Worker stock" in attempts[0]


def embedded_prompt(path: Any) -> dict[str, Any]:
    return json.loads(Image.open(path).text["prompt"])


def test_each_saved_image_carries_the_prompt_that_renders_it_alone(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    prompt = seed_stamp_prompt(seed=1000, prefix="own-metadata")
    prompt["5"]["class_type"] = "DistributedSaveImage"
    images = saved_images(cluster.run(prompt), cluster.master.output_dir)
    assert [read_stamp(path)[0] for path in images] == [1000, 1001, 1002]

    cluster.registry([])  # one GPU: the master alone
    for path in images:
        again = saved_images(cluster.run(embedded_prompt(path)), cluster.master.output_dir)
        assert len(again) == 1
        assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(path)))


def test_stock_save_image_keeps_the_masters_prompt_for_every_image(cluster: Cluster) -> None:
    cluster.use_workers("a", "b")
    images = saved_images(cluster.run(seed_stamp_prompt(seed=2000, prefix="stock-metadata")), cluster.master.output_dir)
    assert {embedded_prompt(path)["1"]["inputs"]["seed"] for path in images} == {2000}


def test_a_split_batch_image_carries_its_batch_index_and_renders_again_on_one_gpu(cluster: Cluster) -> None:
    for instance in (cluster.master, cluster.workers["a"], cluster.workers["b"]):
        checkpoint = write_tiny_checkpoint(instance.base_dir / "models")
    cluster.use_workers("a", "b")
    split = tiny_txt2img_prompt(checkpoint, seed=51, batch_size=4, filename_prefix="split-metadata")
    split["8"] = {"class_type": "DistributedCollector", "inputs": {"images": [DECODE_NODE, 0], "split_batch": True}}
    split[OUTPUT_NODE] = {"class_type": "DistributedSaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "split-metadata"}}
    entry = cluster.run(split, timeout=180)
    images = saved_images(entry, cluster.master.output_dir)
    assert len(images) == 4 and len({s["participant"] for s in cluster.job(entry)["shares"]}) >= 2

    cluster.registry([])
    third = embedded_prompt(images[2])
    assert third[SAMPLER_NODE]["inputs"]["latent_image"][0].endswith(".slice")
    again = saved_images(cluster.run(third, timeout=180), cluster.master.output_dir)
    difference = np.abs(np.asarray(Image.open(again[0]), dtype=np.int16) - np.asarray(Image.open(images[2]), dtype=np.int16))
    assert len(again) == 1 and difference.max() <= 8
