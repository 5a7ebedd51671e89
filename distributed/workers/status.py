"""Where a worker stands: the states the master tells apart, and one observation of a worker."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class WorkerState(enum.StrEnum):
    """Where a worker stands, as the health monitor (or, for a local worker, its process) last saw it."""

    DISABLED = "disabled"
    UNKNOWN = "unknown"
    OFFLINE = "offline"
    LAUNCHING = "launching"
    ONLINE = "online"
    BUSY = "busy"
    ERROR = "error"
    STOPPED = "stopped"
    """A local worker the user stopped (or never launched): not running, on purpose."""
    CONNECTED = "connected"
    """A host whose API answers: its workers take the work, the host itself takes none."""

    @property
    def answers(self) -> bool:
        """Whether a worker in this state answers and can take work now."""
        return self in ONLINE_STATES


ONLINE_STATES = frozenset({WorkerState.ONLINE, WorkerState.BUSY})
"""The states of a worker that answers: the only ones given work."""


@dataclass(frozen=True)
class WorkerStatus:
    """One health observation of a worker."""

    state: WorkerState
    queue_remaining: int = 0
    error: str | None = None
    device_name: str | None = None
    vram_total: int | None = None
    vram_free: int | None = None
    comfyui_version: str | None = None
    checked_at: float | None = None
    os: str | None = None
    """The worker's `os.name` ("posix", "nt"): file names sent to an "nt" worker use backslashes."""
    round_trip_ms: float | None = None
    """Time of the last light request (GET /prompt), network and server together."""
    devices: tuple[dict[str, Any], ...] = ()
    """Every device the worker reports: name, type, vram_total, vram_free."""
    revision: int = 0
    """Orders the statuses shown for one worker (higher is newer), set by the health monitor when it
    publishes. A push and an HTTP answer travel on different connections and may arrive in either
    order; the panel keeps the higher revision, so a stale answer never hides a newer push."""

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "queue_remaining": self.queue_remaining,
            "error": self.error,
            "device_name": self.device_name,
            "vram_total": self.vram_total,
            "vram_free": self.vram_free,
            "comfyui_version": self.comfyui_version,
            "checked_at": self.checked_at,
            "os": self.os,
            "round_trip_ms": self.round_trip_ms,
            "devices": [dict(device) for device in self.devices],
            "revision": self.revision,
        }
