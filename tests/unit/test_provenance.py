"""Which share made which image, and the prompt and workflow that render that image alone."""

from __future__ import annotations

import copy

from distributed.jobs.plan import plan, slice_latents
from distributed.jobs.provenance import ImageOrigin, image_origins, prompt_for, workflow_for
from distributed.shares import BatchSlice

PROMPT = {
    "1": {"class_type": "DistributedSeed", "inputs": {"seed": 1000}},
    "2": {"class_type": "DistributedValue", "inputs": {"values": "cat\ndog\nfox", "type": "STRING", "past_end": "cycle"}},
    "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 6}},
    "4": {"class_type": "KSamplerLike", "inputs": {"seed": ["1", 0], "text": ["2", 0], "latent": ["3", 0]}},
    "5": {"class_type": "DistributedCollector", "inputs": {"images": ["4", 0], "shares": 3, "split_batch": False,
                                                           "precision": "uint8", "distributed_job_id": "j1"}},
    "6": {"class_type": "DistributedSaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "x"}},
}
WORKFLOW = {
    "last_node_id": 6, "last_link_id": 5,
    "nodes": [
        {"id": 1, "type": "DistributedSeed", "widgets_values": [1000, "randomize"]},
        {"id": 2, "type": "DistributedValue", "widgets_values": ["cat\ndog\nfox", "STRING", "cycle"]},
        {"id": 3, "type": "EmptyLatentImage", "pos": [10, 20], "outputs": [{"name": "LATENT", "type": "LATENT", "links": [3]}],
         "widgets_values": [64, 64, 6]},
        {"id": 4, "type": "KSamplerLike", "inputs": [{"name": "latent", "type": "LATENT", "link": 3}]},
        {"id": 5, "type": "DistributedCollector", "widgets_values": [3, False, "uint8"]},
    ],
    "links": [[1, 1, 0, 4, 0, "INT"], [2, 2, 0, 4, 1, "*"], [3, 3, 0, 4, 2, "LATENT"], [4, 4, 0, 5, 0, "IMAGE"]],
}


def test_origins_follow_the_batch_order() -> None:
    assert image_origins([(0, 2, None), (1, 1, None), (2, 2, None)]) == (
        ImageOrigin(0), ImageOrigin(0), ImageOrigin(1), ImageOrigin(2), ImageOrigin(2),
    )
    assert image_origins([(0, 2, BatchSlice(0, 2)), (1, 3, BatchSlice(2, 3))])[3] == ImageOrigin(1, 3)


def test_the_prompt_of_share_k_carries_its_seed_and_value_and_renders_alone() -> None:
    variant = prompt_for(PROMPT, ImageOrigin(2))

    assert variant["1"]["inputs"]["seed"] == 1002
    assert variant["2"]["inputs"]["values"] == "fox"
    assert variant["5"]["inputs"] == {"images": ["4", 0], "shares": 0, "split_batch": False, "precision": "uint8"}
    assert PROMPT["1"]["inputs"]["seed"] == 1000 and "distributed_job_id" in PROMPT["5"]["inputs"]  # input untouched


def test_share_zero_keeps_the_users_own_settings() -> None:
    variant = prompt_for(PROMPT, ImageOrigin(0))
    assert variant["1"]["inputs"]["seed"] == 1000 and variant["2"]["inputs"]["values"] == "cat"


def test_a_split_batch_image_picks_its_own_index_from_the_whole_batch() -> None:
    master_ran = copy.deepcopy(PROMPT)
    master_ran["5"]["inputs"]["split_batch"] = True
    slice_latents(master_ran, ("3",), BatchSlice(0, 2))  # the hook cut the master's own slice

    variant = prompt_for(master_ran, ImageOrigin(1, 4))

    assert variant["3.slice"]["inputs"] == {"samples": ["3", 0], "batch_index": 4, "length": 1}
    assert variant["1"]["inputs"]["seed"] == 1000 and variant["2"]["inputs"]["values"] == "cat"
    assert variant["5"]["inputs"]["split_batch"] is False


def test_a_split_image_from_a_master_that_rendered_nothing_gets_a_slice_added() -> None:
    variant = prompt_for(PROMPT, ImageOrigin(1, 3))
    assert variant["4"]["inputs"]["latent"] == ["3.slice", 0]
    assert variant["3.slice"]["inputs"]["batch_index"] == 3


def test_the_workflow_gets_the_same_changes() -> None:
    variant = workflow_for(WORKFLOW, PROMPT, ImageOrigin(1))
    widgets = {node["id"]: node.get("widgets_values") for node in variant["nodes"]}

    assert widgets[1] == [1001, "randomize"] and widgets[2][0] == "dog" and widgets[5][:2] == [0, False]
    assert WORKFLOW["nodes"][0]["widgets_values"][0] == 1000


def test_a_split_workflow_gets_a_latent_from_batch_between_the_latent_and_its_consumers() -> None:
    variant = workflow_for(WORKFLOW, PROMPT, ImageOrigin(1, 5))
    added = variant["nodes"][-1]

    assert added["type"] == "LatentFromBatch" and added["widgets_values"] == [5, 1] and added["id"] == 7
    assert [3, 7, 0, 4, 2, "LATENT"] in variant["links"]  # the sampler's link now leaves the slice
    assert [6, 3, 0, 7, 0, "LATENT"] in variant["links"]
    assert variant["last_node_id"] == 7 and variant["last_link_id"] == 6


def test_the_plan_keeps_working_on_a_prompt_with_a_save_node_downstream() -> None:
    assert plan(PROMPT).share_prompt(1)["4"]["inputs"]["text"] == "dog"
