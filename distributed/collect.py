"""Puts a job's images in their fixed order: the master's share first, then shares by index.

Pure numpy: the collector node turns the result into a torch tensor. A missing share or a size
mismatch is an error naming the share and who rendered it, never a shorter batch.
"""

from __future__ import annotations

import numpy as np

from .errors import JobFailed


def ordered_parts(
    collector_id: str,
    share_order: list[int],
    results: dict[int, dict[str, np.ndarray]],
    participants: dict[int, str | None],
) -> list[tuple[str, np.ndarray]]:
    """(label, batch) for each remote share of one collector, in share order."""
    parts = []
    for index in share_order:
        batch = results.get(index, {}).get(collector_id)
        if batch is None:
            raise JobFailed(f"share {index} has no images for collector node {collector_id}")
        parts.append((f"share {index} ({participants.get(index) or 'unknown'})", batch))
    return parts


def check_same_size(parts: list[tuple[str, tuple[int, ...]]]) -> None:
    """Raises when batches can't be joined, naming each share's image size."""
    sizes = {shape[1:] for _, shape in parts}
    if len(sizes) > 1:
        detail = ", ".join(f"{label}: {shape[2]}x{shape[1]}x{shape[3]}" for label, shape in parts)
        raise JobFailed(f"shares produced images of different sizes and cannot form one batch ({detail})")
