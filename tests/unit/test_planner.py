"""Graph rewriting: what a worker receives for each share."""

from __future__ import annotations

import copy

import pytest

from distributed.errors import PlanError
from distributed.jobs.plan import SEED_SPACE, plan, share_seed
from distributed.shares import BatchSlice


def _prompt() -> dict:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 41}},
        "2": {"class_type": "KSamplerLike", "inputs": {"seed": ["1", 0], "steps": 4}},
        "3": {"class_type": "Decode", "inputs": {"samples": ["2", 0]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "x"}},
        "6": {"class_type": "Unrelated", "inputs": {}},
    }


def test_share_prompt_keeps_only_the_graph_upstream_of_the_collector() -> None:
    share = plan(_prompt()).share_prompt(1)
    assert sorted(share) == ["2", "3", "4"]


def test_collector_becomes_a_stock_preview_keeping_its_node_id() -> None:
    share = plan(_prompt()).share_prompt(1)
    assert share["4"] == {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}


def test_seed_node_is_replaced_by_the_share_seed_literal() -> None:
    p = plan(_prompt())
    assert [p.share_prompt(k)["2"]["inputs"]["seed"] for k in (1, 2, 3)] == [42, 43, 44]


def test_share_seed_wraps_in_64_bits_and_depends_only_on_seed_and_index() -> None:
    assert share_seed(SEED_SPACE - 1, 2) == 1
    assert share_seed(5, 0) == 5


def test_planning_never_mutates_the_users_prompt() -> None:
    prompt = _prompt()
    original = copy.deepcopy(prompt)
    p = plan(prompt)
    p.share_prompt(3)["2"]["inputs"]["steps"] = 99
    assert prompt == original
    assert p.share_prompt(3)["2"]["inputs"]["steps"] == 4


def test_a_share_holds_only_what_a_stock_worker_has_not_our_nodes() -> None:
    assert {node["class_type"] for node in plan(_prompt()).share_prompt(1).values()} == {"KSamplerLike", "Decode", "PreviewImage"}


def test_two_collectors_share_one_plan() -> None:
    prompt = _prompt()
    prompt["7"] = {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}}
    share = plan(prompt).share_prompt(1)
    assert share["7"]["class_type"] == "PreviewImage" and share["4"]["class_type"] == "PreviewImage"


def test_seed_given_by_a_link_is_refused_naming_the_node() -> None:
    prompt = _prompt()
    prompt["1"]["inputs"]["seed"] = ["6", 0]
    with pytest.raises(PlanError, match=r"node 1\)"):
        plan(prompt)


def test_unconnected_collector_is_refused() -> None:
    prompt = _prompt()
    prompt["4"]["inputs"] = {}
    with pytest.raises(PlanError, match="nothing connected"):
        plan(prompt)


def test_collector_feeding_another_collector_is_refused() -> None:
    prompt = _prompt()
    prompt["7"] = {"class_type": "DistributedCollector", "inputs": {"images": ["4", 0]}}
    with pytest.raises(PlanError, match="feeds another collector"):
        plan(prompt)


def _latent_prompt(batch: int = 5, split: bool = True) -> dict:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": 7}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {"seed": ["1", 0], "latent_image": ["2", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0]}},
        "5": {"class_type": "DistributedCollector", "inputs": {"images": ["4", 0], "split_batch": split}},
    }


def test_split_share_samples_only_its_slice_with_the_users_seed() -> None:
    from distributed.shares import BatchSlice

    share = plan(_latent_prompt()).share_prompt(2, BatchSlice(3, 2))
    assert share["3"]["inputs"] == {"seed": 7, "latent_image": ["2.slice", 0]}
    assert share["2.slice"] == {"class_type": "LatentFromBatch", "inputs": {"samples": ["2", 0], "batch_index": 3, "length": 2}}


def test_split_batch_follows_speed_and_covers_every_image_once() -> None:
    from distributed.jobs.plan import split_batch
    from distributed.shares import BatchSlice

    assert split_batch(8, [1.0, 1.0, 2.0]) == [BatchSlice(0, 2), BatchSlice(2, 2), BatchSlice(4, 4)]
    assert split_batch(2, [1.0, 1.0, 1.0]) == [BatchSlice(0, 1), BatchSlice(1, 1), None]


def test_split_needs_an_empty_latent_with_a_literal_batch_size() -> None:
    prompt = _latent_prompt()
    prompt["2"]["inputs"]["batch_size"] = ["9", 0]
    with pytest.raises(PlanError, match="literal batch_size"):
        plan(prompt)


def test_workflow_key_ignores_the_seed_but_not_the_work() -> None:
    a, b, c = _latent_prompt(), _latent_prompt(), _latent_prompt(batch=6)
    b["1"]["inputs"]["seed"] = 999
    assert plan(a).workflow_key == plan(b).workflow_key != plan(c).workflow_key


def test_shares_setting_is_read_from_the_collector() -> None:
    prompt = _prompt()
    prompt["4"]["inputs"]["shares"] = 12
    assert plan(prompt).shares == 12


def test_an_audio_collector_beside_an_image_collector_is_planned_as_audio() -> None:
    prompt = _prompt()
    prompt["7"] = {"class_type": "TextToSpeechLike", "inputs": {"seed": ["1", 0]}}
    prompt["8"] = {"class_type": "DistributedAudioCollector", "inputs": {"audio": ["7", 0]}}
    p = plan(prompt)
    share = p.share_prompt(1)
    assert p.collector_ids == ("4", "8") and p.audio_collectors == ("8",)
    assert share["8"] == {"class_type": "PreviewAudio", "inputs": {"audio": ["7", 0]}}
    assert p.precisions == {"4": "uint8", "8": "float32"}


def test_an_unconnected_audio_collector_is_refused_naming_its_input() -> None:
    prompt = _prompt()
    prompt["4"] = {"class_type": "DistributedAudioCollector", "inputs": {"images": ["3", 0]}}
    with pytest.raises(PlanError, match=r"Distributed Audio Collector \(node 4\) has nothing connected to 'audio'"):
        plan(prompt)


def test_share_work_bounds_what_the_worker_may_return_by_the_job() -> None:
    work = plan(_prompt()).share_work(2, BatchSlice(4, 3), {"4": (64, 48, 3)})
    unsplit = plan(_prompt()).share_work(1)

    assert work.max_images == 3 and work.image_sizes == {"4": (64, 48, 3)}
    assert unsplit.max_images is None and unsplit.image_sizes == {}
