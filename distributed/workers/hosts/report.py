"""What a host tells the master that manages it: its GPUs and its local workers.

The host builds this answer (GET /distributed/host) from its registry and its GPU discovery; the
managing master reads it with the same models, as untrusted input: every list and text is bounded,
unknown keys are ignored (a newer host may say more), and a worker's token is checked as any token
a user types. Only workers that listen on the network carry their token: the managing master needs
it to reach them, and holds the host's API token, so it learns nothing it could not take.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...config.models import WORKER_ID_PATTERN, Listen, Port
from ...config.secrets import MAX_SECRET_LENGTH, check_secret
from ..status import WorkerState

REPORT_PATH = "/distributed/host"
REPORT_VERSION = 1
MAX_HOST_GPUS = 64
MAX_HOST_WORKERS = 64
MAX_TEXT = 4000
"""Longest error text kept from a host (a worker that failed to start carries its last log lines)."""
MASTER_GPU_USER = "master"


class Tolerant(BaseModel):
    """Ignores keys it does not know; frozen once read."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HostGpu(Tolerant):
    """One GPU of the host, and who renders on it."""

    index: int = Field(ge=0, le=1023)
    name: str = Field(max_length=200)
    memory_total: int = Field(ge=0)
    used_by: str | None = Field(None, max_length=64, description=f"'{MASTER_GPU_USER}', a local worker's id, or null: free")


class HostWorker(Tolerant):
    """One local worker of the host, as the host sees it."""

    id: str = Field(pattern=WORKER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    port: Port
    cuda_device: int | None = Field(None, ge=0)
    listen: Listen
    enabled: bool
    state: WorkerState
    error: str | None = Field(None, max_length=MAX_TEXT)
    auth_token: str | None = Field(None, max_length=MAX_SECRET_LENGTH, description="Only for a worker that listens on the network.")

    @field_validator("auth_token")
    @classmethod
    def _token_is_sendable(cls, value: str | None) -> str | None:
        return check_secret(value, "the worker's token") if value else None


class HostReport(Tolerant):
    """GET /distributed/host."""

    version: Literal[1] = REPORT_VERSION
    gpus: list[HostGpu] = Field(default_factory=list, max_length=MAX_HOST_GPUS)
    gpu_problem: str | None = Field(None, max_length=MAX_TEXT, description="Why no GPU could be looked for (no driver).")
    master_gpu: int | None = Field(None, ge=0, description="The GPU the host's own ComfyUI renders on, if any.")
    workers: list[HostWorker] = Field(default_factory=list, max_length=MAX_HOST_WORKERS)
