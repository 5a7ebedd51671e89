"""Whether the images a share delivered can join the others in one batch.

A worker that renders at another size (a different model default, a hostile worker) must not fail
the whole prompt: its share is given back and re-run elsewhere. The reference is the master's own
share when it renders one, else what most shares delivered.
"""

from __future__ import annotations


def majority(sizes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The size more than half of the shares delivered, if two or more agree on it."""
    for size in set(sizes):
        count = sizes.count(size)
        if count >= 2 and count * 2 > len(sizes):
            return size
    return None


def size_text(size: tuple[int, ...]) -> str:
    height, width, *channels = size
    return f"{width}x{height}" + (f"x{channels[0]}" if channels else "")


def mismatched(sizes: dict[int, tuple[int, ...]], expected: tuple[int, ...] | None, collector_id: str) -> dict[int, str]:
    """Share index -> why its images for one collector cannot join (`sizes` holds each share's [H, W, C])."""
    reference = expected or majority(list(sizes.values()))
    if reference is None:
        return {}
    return {index: f"returned images of {size_text(size)} for collector node {collector_id}; the others are {size_text(reference)}"
            for index, size in sizes.items() if size != reference}
