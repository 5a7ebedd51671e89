"""Tiles of a Distributed Upscale: how an enlarged frame is cut, seeded and put back together.

Each frame of the enlarged image is cut into a grid of tiles. A tile owns its `core` (the grid cell)
and is rendered over its `region`: the core plus `padding` pixels of context on every side, clipped
to the frame and widened to whole latent cells (8 px), so the sampler sees what surrounds the core.
Its noise comes from `tile_seed`, a function of the user's seed and the tile's place alone: the
picture does not depend on how many GPUs took part or which one rendered which tile.

Rendered tiles are blended into a `Canvas` as they arrive: a tile weighs 1 over its core and fades
out over `mask_blur` pixels into its neighbours' cores, so across a border both tiles contribute
half and the picture has no seam. The canvas keeps one float32 sum and one weight per pixel; a
tile's pixels are let go as soon as they are added, and the finished frame is the sum itself.

Pure numpy, no torch: the master, the tests and the benchmark all use it.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass

import numpy as np

LATENT_CELL = 8
"""Pixels per latent cell: a region must be a whole number of cells, or the VAE crops it."""
MAX_TILES = 4096


@dataclass(frozen=True)
class Rect:
    """Pixels [x0, x1) x [y0, y1) of a frame."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class Tile:
    """One tile of one frame."""

    frame: int
    row: int
    col: int
    core: Rect
    """The part of the output this tile owns."""
    region: Rect
    """What is rendered: the core plus its context, clipped to the frame, whole latent cells where the frame allows."""

    @property
    def name(self) -> str:
        return f"frame {self.frame} tile ({self.row}, {self.col})"


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Cells of equal size (the last ones one pixel longer where `length` does not divide evenly)
    covering [0, length), as few as tiles of at most `tile` allow."""
    count = max(1, math.ceil(length / tile))
    edges = [round(index * length / count) for index in range(count + 1)]
    return list(itertools.pairwise(edges))


def _grow(start: int, end: int, padding: int, limit: int) -> tuple[int, int]:
    """[start, end) with `padding` on each side, clipped to [0, limit), then widened (inside the
    limit) to a whole number of latent cells."""
    low, high = max(0, start - padding), min(limit, end + padding)
    short = -(high - low) % LATENT_CELL
    grow_high = min(short, limit - high)
    high += grow_high
    low = max(0, low - (short - grow_high))
    return low, high


def tile_grid(width: int, height: int, tile_width: int, tile_height: int, padding: int, frame: int = 0) -> list[Tile]:
    """The tiles of one frame, row by row. A frame no bigger than one tile is one tile."""
    if min(width, height, tile_width, tile_height) <= 0 or padding < 0:
        raise ValueError("frame and tile sizes must be positive and padding not negative")
    columns, rows = _spans(width, tile_width), _spans(height, tile_height)
    if len(columns) * len(rows) > MAX_TILES:
        raise ValueError(f"{len(columns) * len(rows)} tiles per frame is more than {MAX_TILES}; use larger tiles")
    tiles = []
    for row, (y0, y1) in enumerate(rows):
        for col, (x0, x1) in enumerate(columns):
            rx0, rx1 = _grow(x0, x1, padding, width)
            ry0, ry1 = _grow(y0, y1, padding, height)
            tiles.append(Tile(frame, row, col, Rect(x0, y0, x1, y1), Rect(rx0, ry0, rx1, ry1)))
    return tiles


def tile_seed(seed: int, tile: Tile) -> int:
    """The noise seed of one tile: the user's seed and the tile's place, nothing else."""
    digest = hashlib.sha256(f"{seed}:{tile.frame}:{tile.row}:{tile.col}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def blend_weights(tile: Tile, blur: int) -> np.ndarray:
    """The tile's weight over its region [h, w]: 1 on its core, easing to 0 over `blur` pixels beyond it.

    The fade is clamped to the context the tile has, so it always reaches 0 inside the region.
    """
    region, core = tile.region, tile.core

    def axis(low: int, high: int, core_low: int, core_high: int) -> np.ndarray:
        positions = np.arange(low, high, dtype=np.float32) + 0.5
        outside = np.maximum(core_low - positions, positions - core_high).clip(min=0)
        reach = min(float(blur), float(max(core_low - low, high - core_high, 0)))
        if reach <= 0:
            return (outside <= 0).astype(np.float32)
        fade = np.clip(1.0 - outside / (reach + 0.5), 0.0, 1.0)
        return fade * fade * (3.0 - 2.0 * fade)  # smoothstep: no kink where the fade starts or ends

    return np.outer(axis(region.y0, region.y1, core.y0, core.y1), axis(region.x0, region.x1, core.x0, core.x1))


class Canvas:
    """One frame being put back together from its rendered tiles."""

    def __init__(self, height: int, width: int, channels: int, blur: int) -> None:
        self._sum = np.zeros((height, width, channels), dtype=np.float32)
        self._weight = np.zeros((height, width, 1), dtype=np.float32)
        self._blur = blur
        self.added: set[tuple[int, int]] = set()

    def add(self, tile: Tile, pixels: np.ndarray) -> None:
        """Blends a rendered region [h, w, C] in 0..1 into the frame."""
        region = tile.region
        if pixels.shape[:2] != (region.height, region.width):
            raise ValueError(f"{tile.name} came back {pixels.shape[1]}x{pixels.shape[0]}, expected {region.width}x{region.height}")
        weights = blend_weights(tile, self._blur)[:, :, None]
        window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        self._sum[window] += pixels[:, :, : self._sum.shape[2]].astype(np.float32, copy=False) * weights
        self._weight[window] += weights
        self.added.add((tile.row, tile.col))

    @property
    def shape(self) -> tuple[int, ...]:
        return self._sum.shape

    def result(self) -> np.ndarray:
        """The blended frame [H, W, C]; every pixel must be covered by some tile's core.

        Divided in place, in the canvas's own sum, so finishing a frame allocates nothing: call it once.
        """
        if not np.all(self._weight > 0):
            raise ValueError("a part of the frame has no tile")
        np.divide(self._sum, self._weight, out=self._sum)
        return np.clip(self._sum, 0.0, 1.0, out=self._sum)


def crop_8bit(frame: np.ndarray, rect: Rect) -> np.ndarray:
    """The pixels of `rect` [h, w, C] in 8 bits, as a PNG holds them.

    Every participant starts from the very same values this way: a stock worker only ever gets the
    tile as a PNG, so the master and the workers that could take floats get the PNG's values too.
    """
    pixels = frame[rect.y0 : rect.y1, rect.x0 : rect.x1]
    return np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def crop(frame: np.ndarray, rect: Rect) -> np.ndarray:
    """`crop_8bit` as float32 in 0..1: what a tile's LoadImage gives its VAEEncode."""
    return crop_8bit(frame, rect).astype(np.float32) / np.float32(255.0)


def pad_to_cells(pixels: np.ndarray) -> np.ndarray:
    """Pixels [h, w, C] repeated at the right and bottom edge up to whole latent cells (a frame
    smaller than a cell, or whose size is not a multiple of 8, still renders in full)."""
    height, width = pixels.shape[:2]
    extra_h, extra_w = -height % LATENT_CELL, -width % LATENT_CELL
    if not extra_h and not extra_w:
        return pixels
    return np.pad(pixels, ((0, extra_h), (0, extra_w), (0, 0)), mode="edge")


def border_steps(image: np.ndarray, tiles: list[Tile]) -> tuple[float, float]:
    """(largest step across any tile border, largest step between neighbours inside the cores): a
    seam shows as the first being well above the second. For tests and the docs' figures."""
    gray = image.astype(np.float32).mean(axis=2)
    across_x = np.abs(np.diff(gray, axis=1))
    across_y = np.abs(np.diff(gray, axis=0))
    border_columns = sorted({tile.core.x1 - 1 for tile in tiles if tile.core.x1 < image.shape[1]})
    border_rows = sorted({tile.core.y1 - 1 for tile in tiles if tile.core.y1 < image.shape[0]})
    at_border = max([float(across_x[:, c].max()) for c in border_columns] + [float(across_y[r, :].max()) for r in border_rows] + [0.0])
    inside_x = np.delete(across_x, border_columns, axis=1)
    inside_y = np.delete(across_y, border_rows, axis=0)
    inside = max(float(inside_x.max()) if inside_x.size else 0.0, float(inside_y.max()) if inside_y.size else 0.0)
    return at_border, inside
