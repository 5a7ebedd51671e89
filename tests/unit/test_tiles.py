"""Tiles of a Distributed Upscale: the grid, the seeds and the seamless blend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from distributed.jobs.tiles import LATENT_CELL, Canvas, Tile, blend_weights, border_steps, crop, pad_to_cells, tile_grid, tile_seed


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


# --- seams: the node's own path (tile_grid -> crop -> pad_to_cells -> render -> Canvas.add), on a smooth frame ---

SEAM_FRAME = (203, 317)
"""Height and width of the test frame: odd, so tile cores do not fall on latent cells."""
SEAM_TILE, SEAM_PADDING, SEAM_BLUR = 64, 16, 8
"""The node's sizes in the upscale integration tests (Blender's blur is min(mask_blur, tile_padding))."""


def gradient(height: int, width: int) -> np.ndarray:
    """A smooth frame: each channel ramps across the frame in its own direction."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([x / width, y / height, (x + y) / (width + height)], axis=2)


def blended(frame: np.ndarray, tiles: list[Tile], render: Callable[[Tile, np.ndarray], np.ndarray], blur: int) -> np.ndarray:
    """The frame put back as the node does it: each tile's region is cropped (as a PNG holds it),
    padded to latent cells, rendered, cut back to the region (Blender.add) and blended."""
    canvas = Canvas(frame.shape[0], frame.shape[1], frame.shape[2], blur)
    for tile in tiles:
        rendered = render(tile, pad_to_cells(crop(frame, tile.region)))
        canvas.add(tile, rendered[: tile.region.height, : tile.region.width])
    return canvas.result()


def test_a_pass_through_render_of_a_smooth_frame_steps_no_more_across_tile_borders_than_inside_tiles() -> None:
    height, width = SEAM_FRAME
    frame = gradient(height, width)
    tiles = tile_grid(width, height, SEAM_TILE, SEAM_TILE, SEAM_PADDING)
    assert len(tiles) == 20  # 5 columns x 4 rows: borders in both directions

    at_border, inside = border_steps(blended(frame, tiles, lambda tile, pixels: pixels, SEAM_BLUR), tiles)
    _, source = border_steps(frame, tiles)

    assert 0 < inside <= source + 1 / 255  # inside the tiles: the frame's own ramp, give or take 8-bit rounding
    assert at_border <= inside + 1e-6


def test_tiles_that_each_drift_a_little_still_meet_without_a_visible_step() -> None:
    """A sampler that barely changes a tile still shifts it a little (the VAE round trip, its own
    noise), differently in each tile; the feather spreads that over the overlap instead of a step."""
    height, width = SEAM_FRAME
    frame = gradient(height, width)
    tiles = tile_grid(width, height, SEAM_TILE, SEAM_TILE, SEAM_PADDING)
    drift = dict(zip(tiles, np.random.default_rng(7).uniform(-6 / 255, 6 / 255, len(tiles)), strict=True))

    def drifted(tile: Tile, pixels: np.ndarray) -> np.ndarray:
        return np.clip(pixels + drift[tile], 0.0, 1.0)

    _, smooth = border_steps(blended(frame, tiles, lambda tile, pixels: pixels, SEAM_BLUR), tiles)
    at_border, _ = border_steps(blended(frame, tiles, drifted, SEAM_BLUR), tiles)
    butted, _ = border_steps(blended(frame, tiles, drifted, 0), tiles)

    assert butted > 4 * smooth  # the measure sees the seam where tiles are butted together
    assert at_border <= 1.5 * smooth  # feathered: no bigger than the frame's own steps inside a tile
