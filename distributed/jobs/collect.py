"""Puts a job's images (or audio clips) in their fixed order: the master's share first, then shares by index.

Pure numpy: the collector nodes turn the result into torch tensors. A missing share or a size
mismatch is an error naming the share and who rendered it, never a shorter batch.
"""

from __future__ import annotations

import numpy as np

from ..errors import JobFailed
from ..shares import AudioClip, ShareOutput


def ordered_parts(
    collector_id: str,
    share_order: list[int],
    results: dict[int, dict[str, ShareOutput]],
    participants: dict[int, str | None],
) -> list[tuple[str, ShareOutput]]:
    """(label, batch or clip) for each remote share of one collector, in share order."""
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


def join_audio(parts: list[tuple[str, AudioClip]]) -> AudioClip:
    """One batch of every share's clips, in order. Clips of different lengths are padded with
    silence to the longest (a batch holds one length); different sample rates or channel counts
    cannot be joined and raise, naming each share's."""
    if not parts:
        raise JobFailed("no participant produced audio")
    rates = {clip.sample_rate for _, clip in parts}
    if len(rates) > 1:
        detail = ", ".join(f"{label}: {clip.sample_rate} Hz" for label, clip in parts)
        raise JobFailed(f"shares produced audio at different sample rates and cannot form one batch ({detail})")
    channels = {clip.waveform.shape[1] for _, clip in parts}
    if len(channels) > 1:
        detail = ", ".join(f"{label}: {clip.waveform.shape[1]} channel(s)" for label, clip in parts)
        raise JobFailed(f"shares produced audio with different channel counts and cannot form one batch ({detail})")
    longest = max(clip.waveform.shape[2] for _, clip in parts)
    padded = [np.pad(clip.waveform, ((0, 0), (0, 0), (0, longest - clip.waveform.shape[2]))) for _, clip in parts]
    return AudioClip(np.concatenate(padded, axis=0), rates.pop())
