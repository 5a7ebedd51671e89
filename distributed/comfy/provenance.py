"""Where each image of a collected batch came from, kept on the execution thread for the save node.

A collector records, for its prompt, which share made which image of the batch it returns; the
Save Image (Distributed) node downstream reads it to give every image its own metadata. Both run on
ComfyUI's execution thread, one prompt after another; the record is kept for the last few prompts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..jobs.provenance import ImageOrigin

KEEP_PROMPTS = 16


class OriginBook:
    """(prompt id, collector node id) -> the origin of each image of that collector's batch."""

    def __init__(self, keep: int = KEEP_PROMPTS) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._records: OrderedDict[tuple[str, str], tuple[ImageOrigin, ...]] = OrderedDict()

    def record(self, prompt_id: str, collector_id: str, origins: tuple[ImageOrigin, ...]) -> None:
        with self._lock:
            self._records[(prompt_id, collector_id)] = origins
            self._records.move_to_end((prompt_id, collector_id))
            while len(self._records) > self._keep * 4:
                self._records.popitem(last=False)

    def origins(self, prompt_id: str, collector_id: str) -> tuple[ImageOrigin, ...] | None:
        with self._lock:
            return self._records.get((prompt_id, collector_id))


ORIGINS = OriginBook()
"""The process's book: collectors write it, save nodes read it (both on the execution thread)."""
