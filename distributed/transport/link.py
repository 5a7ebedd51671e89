"""Each worker link's bandwidth, measured from real result transfers, and the encoding it calls for.

A result travels raw or zlib-compressed (`wire`). Which is faster depends on the link and on what
each codec costs in CPU time, per byte: on a LAN every codec costs more than it saves, on a capped
or long-distance link zlib wins. The choice is re-made for every transfer from the latest figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .wire import ENCODINGS

logger = logging.getLogger(__name__)

MIN_SAMPLE_BYTES = 1 << 20
"""Smaller transfers measure the round trip more than the bandwidth; they do not count."""
SMOOTHING = 0.5
"""Weight of the newest transfer in a link's moving average."""


@dataclass(frozen=True)
class CodecCost:
    """How an encoding behaves on typical results: size ratio and throughput in decoded bytes/s."""

    ratio: float
    encode_bytes_per_s: float
    decode_bytes_per_s: float

    def seconds_per_byte(self, bandwidth_bytes_per_s: float) -> float:
        return self.ratio / bandwidth_bytes_per_s + 1 / self.encode_bytes_per_s + 1 / self.decode_bytes_per_s


# Measured 2026-11-22 on the project's shared 2-core VM, in CPU seconds (the VM was loaded, so wall
# times were not trustworthy), on "photo-like" 2048x2048 uint8 images (smooth field plus sigma=3 grain,
# as in bench/wire_codecs.py; generated images behave alike). Noise makes zlib store its blocks (ratio
# 1, ~1.7 GB/s); float32 shuffles to ratio ~0.76 at ~54 MB/s, so pass a float table for float results.
DEFAULT_CODEC_COSTS: Mapping[str, CodecCost] = {
    "raw": CodecCost(ratio=1.0, encode_bytes_per_s=3e9, decode_bytes_per_s=2e9),
    "zlib": CodecCost(ratio=0.62, encode_bytes_per_s=6.4e7, decode_bytes_per_s=1.2e8),
}


FLOAT_CODEC_COSTS: Mapping[str, CodecCost] = {
    "raw": DEFAULT_CODEC_COSTS["raw"],
    "zlib": CodecCost(ratio=0.76, encode_bytes_per_s=5.9e7, decode_bytes_per_s=3.4e8),
}
"""float32 photo-like 2048x2048 (byte-shuffled), CPU seconds, measured 2026-11-22 as above; float16 is close (0.65)."""


def codec_costs(dtype: str | np.dtype) -> Mapping[str, CodecCost]:
    """The cost table for results of `dtype`: images quantised to uint8 or kept as floats."""
    return DEFAULT_CODEC_COSTS if np.dtype(dtype).itemsize == 1 else FLOAT_CODEC_COSTS


def choose_encoding(
    bandwidth_bytes_per_s: float | None, measurements: Mapping[str, CodecCost] | None = None
) -> tuple[str, str]:
    """Picks the encoding with the smallest bytes/bandwidth + codec time per byte, and says why.

    Unknown bandwidth means a loopback or LAN worker: raw, because on a fast link every codec
    costs more CPU time than it saves in transfer.
    """
    costs = DEFAULT_CODEC_COSTS if measurements is None else measurements
    if bandwidth_bytes_per_s is None or bandwidth_bytes_per_s <= 0:
        return "raw", "link bandwidth unknown: raw (assumed loopback or LAN)"
    seconds = {name: cost.seconds_per_byte(bandwidth_bytes_per_s) for name, cost in costs.items() if name in ENCODINGS}
    if not seconds:
        return "raw", "no codec measurements: raw"
    best = min(seconds, key=lambda name: seconds[name])
    per_100mb = ", ".join(f"{name} {seconds[name] * 1e8:.2f} s" for name in sorted(seconds))
    return best, f"{best} is fastest at {bandwidth_bytes_per_s * 8 / 1e6:.0f} Mbit/s (per 100 MB: {per_100mb})"


@dataclass
class LinkState:
    """What the master knows about one worker's link, and the encoding it last chose for it."""

    bandwidth_bytes_per_s: float | None = None
    encoding: str = "raw"
    reason: str = "no result fetched yet: raw"


class LinkMonitor:
    """Per-worker bandwidth, measured from real result transfers, and the encoding it calls for.

    A transfer's rate is wire bytes over the whole request. While a link uses zlib that rate is
    capped by the worker's encoder, which understates a fast link; the model then finds raw cheaper,
    the next transfer measures the real link, and the choice settles.
    """

    def __init__(self, smoothing: float = SMOOTHING, min_sample_bytes: int = MIN_SAMPLE_BYTES) -> None:
        self._smoothing = smoothing
        self._min_sample_bytes = min_sample_bytes
        self._links: dict[str, LinkState] = {}

    def choose(self, worker_id: str, dtype: str | np.dtype) -> str:
        link = self._links.setdefault(worker_id, LinkState())
        encoding, link.reason = choose_encoding(link.bandwidth_bytes_per_s, codec_costs(dtype))
        if encoding != link.encoding:
            logger.info("Results from worker %s now travel as %s: %s", worker_id, encoding, link.reason)
        link.encoding = encoding
        return encoding

    def encoding_to(self, worker_id: str, dtype: str | np.dtype) -> str:
        """The encoding for data sent to the worker: as `choose` would pick it, from the bandwidth its
        results came in at, without changing what is reported for them."""
        link = self._links.get(worker_id)
        return choose_encoding(link.bandwidth_bytes_per_s if link is not None else None, codec_costs(dtype))[0]

    def observe(self, worker_id: str, wire_bytes: int, seconds: float) -> None:
        if wire_bytes < self._min_sample_bytes or seconds <= 0:
            return
        link = self._links.setdefault(worker_id, LinkState())
        rate = wire_bytes / seconds
        previous = link.bandwidth_bytes_per_s
        link.bandwidth_bytes_per_s = rate if previous is None else self._smoothing * rate + (1 - self._smoothing) * previous
        logger.debug("Worker %s: %d bytes in %.3f s (%.0f MB/s)", worker_id, wire_bytes, seconds, rate / 1e6)

    def report(self) -> dict[str, dict[str, Any]]:
        """worker_id -> {"encoding", "reason", "bandwidth_bytes_per_s"} for workers fetched from so far."""
        return {
            worker_id: {"encoding": link.encoding, "reason": link.reason, "bandwidth_bytes_per_s": link.bandwidth_bytes_per_s}
            for worker_id, link in self._links.items()
        }
