"""Joining the shares' results: audio clips into one batch."""

from __future__ import annotations

import numpy as np
import pytest

from distributed.errors import JobFailed
from distributed.jobs.collect import join_audio
from distributed.shares import AudioClip


def _clip(value: float, samples: int, channels: int = 1, rate: int = 16000) -> AudioClip:
    return AudioClip(np.full((1, channels, samples), value, dtype=np.float32), rate)


def test_clips_are_joined_in_order_and_shorter_ones_padded_with_silence() -> None:
    joined = join_audio([("share 0", _clip(0.5, 4)), ("share 1", _clip(0.25, 6))])

    assert joined.sample_rate == 16000
    assert joined.waveform.tolist() == [[[0.5, 0.5, 0.5, 0.5, 0.0, 0.0]], [[0.25] * 6]]


def test_different_sample_rates_are_refused_naming_each_share() -> None:
    with pytest.raises(JobFailed, match=r"share 0: 16000 Hz, share 1 \(Worker b\): 44100 Hz"):
        join_audio([("share 0", _clip(0.5, 4)), ("share 1 (Worker b)", _clip(0.5, 4, rate=44100))])


def test_different_channel_counts_are_refused() -> None:
    with pytest.raises(JobFailed, match="different channel counts"):
        join_audio([("share 0", _clip(0.5, 4)), ("share 1", _clip(0.5, 4, channels=2))])
