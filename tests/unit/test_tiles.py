"""Tiles of a Distributed Upscale: the grid, the seeds and the seamless blend."""

from __future__ import annotations

import numpy as np
import pytest

from distributed.jobs.tiles import LATENT_CELL, Canvas, blend_weights, border_steps, crop, pad_to_cells, tile_grid, tile_seed


@pytest.mark.parametrize(("width", "height"), [(4096, 4096), (1501, 999), (300, 200), (7, 5)])
def test_the_cores_cover_the_frame_exactly_once(width: int, height: int) -> None:
    tiles = tile_grid(width, height, 1024, 1024, 64)
    owner = np.zeros((height, width), dtype=np.int32)
    for tile in tiles:
        owner[tile.core.y0 : tile.core.y1, tile.core.x0 : tile.core.x1] += 1
    assert owner.min() == owner.max() == 1


def test_regions_hold_the_context_and_whole_latent_cells_inside_the_frame() -> None:
    for tile in tile_grid(1501, 999, 512, 512, 64):
        region, core = tile.region, tile.core
        assert 0 <= region.x0 <= core.x0 and core.x1 <= region.x1 <= 1501
        assert 0 <= region.y0 <= core.y0 and core.y1 <= region.y1 <= 999
        assert region.width % LATENT_CELL == 0 and region.height % LATENT_CELL == 0
        assert core.x0 - region.x0 >= min(64, core.x0)


def test_a_frame_no_bigger_than_a_tile_is_one_tile() -> None:
    (tile,) = tile_grid(640, 480, 1024, 1024, 64)
    assert (tile.core.width, tile.core.height) == (640, 480) and tile.region == tile.core


def test_a_tiles_seed_depends_on_the_seed_and_its_place_only() -> None:
    first = tile_grid(2048, 2048, 1024, 1024, 64)
    again = tile_grid(2048, 2048, 1024, 1024, 32)
    assert [tile_seed(5, t) for t in first] == [tile_seed(5, t) for t in again]
    assert len({tile_seed(5, t) for t in first}) == 4 and tile_seed(5, first[0]) != tile_seed(6, first[0])
    assert all(0 <= tile_seed(2**64 - 1, t) < 2**63 for t in first)


def test_tiles_that_come_back_unchanged_rebuild_the_frame() -> None:
    frame = np.random.default_rng(3).random((333, 517, 3), dtype=np.float32)
    tiles = tile_grid(517, 333, 128, 96, 24)
    canvas = Canvas(333, 517, 3, blur=16)
    for tile in reversed(tiles):  # order of arrival does not matter
        canvas.add(tile, frame[tile.region.y0 : tile.region.y1, tile.region.x0 : tile.region.x1])
    assert np.abs(canvas.result() - frame).max() < 1e-5


def test_a_missing_tile_is_an_error_not_a_hole() -> None:
    tiles = tile_grid(256, 256, 128, 128, 16)
    canvas = Canvas(256, 256, 3, blur=8)
    for tile in tiles[:-1]:
        canvas.add(tile, np.zeros((tile.region.height, tile.region.width, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="no tile"):
        canvas.result()


def test_weights_are_one_on_the_core_and_fade_within_the_context() -> None:
    tile = tile_grid(512, 512, 256, 256, 32)[0]
    weights = blend_weights(tile, blur=16)
    core = (slice(tile.core.y0 - tile.region.y0, tile.core.y1 - tile.region.y0),
            slice(tile.core.x0 - tile.region.x0, tile.core.x1 - tile.region.x0))
    assert np.all(weights[core] == 1.0)
    assert weights[:, -1].max() == 0.0 and weights[-1, :].max() == 0.0  # faded out before the region's edge


def test_two_tiles_that_disagree_meet_without_a_step() -> None:
    tiles = tile_grid(512, 256, 256, 256, 32)
    canvas = Canvas(256, 512, 3, blur=24)
    for tile, level in zip(tiles, (0.2, 0.8), strict=True):  # a 0.6 jump if they were butted together
        canvas.add(tile, np.full((tile.region.height, tile.region.width, 3), level, dtype=np.float32))
    at_border, _ = border_steps(canvas.result(), tiles)
    assert at_border < 0.05


def test_border_steps_see_a_seam() -> None:
    tiles = tile_grid(256, 256, 128, 256, 0)
    image = np.zeros((256, 256, 3), dtype=np.float32)
    image[:, 128:] = 0.5
    assert border_steps(image, tiles) == (0.5, 0.0)


def test_crops_hold_what_a_png_holds_and_pad_to_whole_cells() -> None:
    frame = np.linspace(0, 1, 30 * 20 * 3, dtype=np.float32).reshape(30, 20, 3)
    pixels = crop(frame, tile_grid(20, 30, 64, 64, 0)[0].region)
    assert np.array_equal(pixels * 255, np.round(pixels * 255))
    padded = pad_to_cells(pixels)
    assert padded.shape == (32, 24, 3) and np.array_equal(padded[:30, :20], pixels) and np.array_equal(padded[31, 23], pixels[29, 19])
