"""What a worker may send back for one collector of one share, checked before anything is allocated.

A worker is someone else's machine, and the result it describes (its history entry, a PNG header, a
wire header) is its word. The master believes it only as far as the job allows: images no larger
than the pixel cap, no more of them than the share's batch slice, the size of the master's own
images once it has rendered them, and in all at most the result cap, counted as the master keeps a
result (float32). A result outside these bounds is refused as BadResult, naming the worker, and the
share runs elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.models import Settings
from ..errors import BadResult
from ..shares import ShareWork

KEPT_ITEMSIZE = 4
"""The master keeps images and audio as float32, whatever dtype they travelled in."""
MAX_CHANNELS = 4
MAX_AUDIO_CHANNELS = 64


@dataclass(frozen=True)
class ResultLimits:
    """The bounds of one collector's result from one share."""

    max_bytes: int
    """The whole result, as the master keeps it (float32)."""
    max_pixels: int
    """One image."""
    max_images: int | None = None
    image_size: tuple[int, ...] | None = None
    """[H, W, C] every image must have, or None while the master's own size is unknown."""

    @classmethod
    def of(cls, work: ShareWork, node_id: str, settings: Settings) -> ResultLimits:
        return cls(settings.max_result_mib << 20, int(settings.max_image_megapixels * 1_000_000),
                   work.max_images, work.image_sizes.get(node_id))

    def check_images(self, worker: str, node_id: str, shape: tuple[int, ...]) -> None:
        """Refuses an image batch [B, H, W, C] outside the bounds, before it is fetched."""
        if len(shape) != 4 or not 1 <= shape[3] <= MAX_CHANNELS or min(shape) < 1:
            raise BadResult(worker, f"described images of shape {list(shape)} for collector node {node_id}, not [batch, height, width, "
                                    f"channels]")
        self.check_image(worker, node_id, shape[1], shape[2], shape[3])
        self.check_count(worker, node_id, shape[0])
        self.check_bytes(worker, node_id, math.prod(shape))

    def check_image(self, worker: str, node_id: str, height: int, width: int, channels: int | None = None) -> None:
        """Refuses one image of `height` x `width` (x `channels`, when known) outside the bounds."""
        if height * width > self.max_pixels:
            raise BadResult(worker, f"sent a {width}x{height} image for collector node {node_id}: more than the "
                                    f"{self.max_pixels / 1e6:g} megapixels allowed (settings.max_image_megapixels)")
        expected = self.image_size
        if expected is not None and ((height, width) != tuple(expected[:2]) or (channels is not None and channels != expected[2])):
            got = f"{width}x{height}" + (f"x{channels}" if channels is not None else "")
            raise BadResult(worker, f"sent a {got} image for collector node {node_id}; the master's are "
                                    f"{expected[1]}x{expected[0]}x{expected[2]}")

    def check_count(self, worker: str, node_id: str, images: int) -> None:
        if self.max_images is not None and images > self.max_images:
            raise BadResult(worker, f"sent {images} images for collector node {node_id}; its share is {self.max_images}")

    def check_bytes(self, worker: str, node_id: str, values: int) -> None:
        """Refuses a result of `values` numbers whose float32 copy would exceed the result cap."""
        if values * KEPT_ITEMSIZE > self.max_bytes:
            raise BadResult(worker, f"sent a result of {values * KEPT_ITEMSIZE / (1 << 20):.0f} MiB for collector node {node_id}: "
                                    f"more than the {self.max_bytes >> 20} MiB allowed (settings.max_result_mib)")

    def check_audio(self, worker: str, node_id: str, shape: tuple[int, ...]) -> None:
        """Refuses a waveform [batch, channels, samples] outside the bounds, before it is fetched."""
        if len(shape) != 3 or min(shape) < 1 or shape[1] > MAX_AUDIO_CHANNELS:
            raise BadResult(worker, f"described audio of shape {list(shape)} for collector node {node_id}, not "
                                    "[batch, channels, samples]")
        self.check_bytes(worker, node_id, math.prod(shape))
