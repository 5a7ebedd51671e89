"""Decoding a whole wire stream held in memory, for tests (the master always decodes as bytes arrive)."""

from __future__ import annotations

import numpy as np

from distributed.transport.wire import Decoder


def decode(data: bytes | bytearray | memoryview, source: str = "unknown") -> np.ndarray:
    decoder = Decoder(source)
    decoder.feed(data)
    return decoder.result()
