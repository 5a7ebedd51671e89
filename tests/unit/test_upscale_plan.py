"""What a worker gets for a Distributed Upscale, and how tiles are grouped into shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distributed.errors import PlanError
from distributed.jobs.tiles import tile_grid, tile_seed
from distributed.jobs.upscale_plan import (
    SHARES_PER_PARTICIPANT,
    PlannedTile,
    TilePlan,
    group_size,
    tile_groups,
    upscale_template,
)
from distributed.shares import BatchSlice, Share, ShareRun, ShareState


def upscale_prompt(**overrides: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "8": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "20": {"class_type": "DistributedUpscale", "inputs": {
            "image": ["8", 0], "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "seed": 7,
            "steps": 3, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.3, **overrides}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["20", 0]}},
    }


def tile_plan(tiles: int = 4) -> TilePlan:
    grid = tile_grid(64 * tiles, 64, 64, 64, 8)
    planned = tuple(PlannedTile.of(tile, np.full((72, 80, 3), i, dtype=np.uint8), tile_seed(7, tile)) for i, tile in enumerate(grid))
    return TilePlan(upscale_template(upscale_prompt(), "20"), planned, "20")


def test_a_worker_gets_the_loaders_and_one_stock_chain_per_tile_but_not_the_image() -> None:
    plan = tile_plan()
    work = plan.share_work(1, BatchSlice(1, 2))

    classes = {node_id: node["class_type"] for node_id, node in work.prompt.items()}
    assert {"1", "2", "3"} <= set(classes) and "8" not in classes and "20" not in classes
    assert work.collector_ids == ("tile1", "tile2")
    assert classes["tile1"] == "PreviewImage" and classes["tile1.sample"] == "KSampler"
    assert work.prompt["tile2.load"]["inputs"]["image"] == plan.tiles[2].image.file
    assert plan.tiles[2].image.file.startswith("distributed_tiles/") and plan.tiles[2].image.file.endswith(".png")
    assert work.inputs == {"tile1.load": plan.tiles[1].image, "tile2.load": plan.tiles[2].image}
    assert work.ahead == (plan.tiles[3].image,)  # the tiles after the share's, up to the plan's end
    assert plan.share_work(0, BatchSlice(0, 1)).ahead == tuple(tile.image for tile in plan.tiles[1:4])
    assert not plan.tiles[2].image.pixels.flags.writeable
    assert work.prompt["tile2.sample"]["inputs"]["seed"] == plan.tiles[2].seed
    assert work.image_sizes == {"tile1": (72, 80, 3), "tile2": (72, 80, 3)} and work.max_images == 1


def test_the_workflow_key_ignores_the_seed_but_not_the_sampler_settings() -> None:
    base = TilePlan(upscale_template(upscale_prompt(), "20"), tile_plan().tiles, "20")
    other_seed = TilePlan(upscale_template(upscale_prompt(seed=8), "20"), tile_plan().tiles, "20")
    more_steps = TilePlan(upscale_template(upscale_prompt(steps=4), "20"), tile_plan().tiles, "20")
    assert base.workflow_key == other_seed.workflow_key != more_steps.workflow_key


def test_a_sampler_setting_wired_from_another_node_is_refused_naming_it() -> None:
    with pytest.raises(PlanError, match="'steps'"):
        upscale_template(upscale_prompt(steps=["1", 0]), "20")


@pytest.mark.parametrize(("seconds", "tiles", "participants", "expected"), [
    (None, 100, 3, 1),  # never measured: one tile per share
    (1.0, 100, 3, 3),  # about three seconds of work
    (0.1, 100, 3, 8),  # short tiles: capped to keep four shares per participant
    (10.0, 100, 3, 1),  # long tiles: one each
])
def test_groups_hold_a_few_seconds_of_work_and_leave_every_participant_several_shares(
        seconds: float | None, tiles: int, participants: int, expected: int) -> None:
    size = group_size(seconds, tiles, participants)
    assert size == expected
    assert len(tile_groups(tiles, size)) >= min(tiles, SHARES_PER_PARTICIPANT * participants) or size == 1


def test_groups_cover_every_tile_once_in_order() -> None:
    groups = tile_groups(10, 3)
    assert [(g.start, g.length) for g in groups] == [(0, 3), (3, 3), (6, 3), (9, 1)]


def test_the_tile_map_gives_each_tile_its_rectangle_state_and_participant() -> None:
    plan = tile_plan(3)
    done = Share(0, batch=BatchSlice(0, 2), state=ShareState.DONE, delivered_by="a")
    running = Share(1, batch=BatchSlice(2, 1), state=ShareState.RUNNING, runs=[ShareRun("master", 0.0, 1.0)])

    view = plan.tile_map([running, done])

    assert [(t["tile"], t["state"], t["participant"]) for t in view] == [(0, "done", "a"), (1, "done", "a"), (2, "running", "master")]
    assert (view[1]["x"], view[1]["y"], view[1]["width"], view[1]["height"]) == (64, 0, 64, 64)
