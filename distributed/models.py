"""Data shapes: pydantic models at the edges (workers.json, request bodies), dataclasses inside.

The registry models are the single source of the JSON Schema published in docs/workers.schema.json.
Unknown keys are refused (`extra="forbid"`), so a typo in a hand-edited file is reported instead of
silently ignored.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REGISTRY_VERSION = 1
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

Port = Annotated[int, Field(ge=1, le=65535)]
WorkerType = Literal["local", "remote", "cloud"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MasterConfig(_Strict):
    """How the master itself takes part."""

    participate: bool = Field(True, description="Render a share on the master too; false = only orchestrate and collect.")
    host: str = Field("", description="The master's address as workers would see it (informational; workers never call back).")
    cuda_device: int | None = Field(None, ge=0, description="The GPU the master uses; first-launch discovery skips it.")


class Settings(_Strict):
    """Behaviour settings shared by every job."""

    worker_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds a worker running a share may stay silent (no progress, no heartbeat) before its share is re-run elsewhere.",
    )
    assign_timeout: float = Field(
        120.0, gt=0, le=86400,
        description="Seconds a share may wait for a participant able to run it before the prompt fails.",
    )
    health_interval: float = Field(2.0, ge=0.2, le=300, description="Seconds between health checks of an online worker.")
    auto_launch: bool = Field(False, description="Start enabled local workers together with the master.")
    stop_workers_on_exit: bool = Field(True, description="Stop local workers when the master exits.")


class WorkerConfig(_Strict):
    """One worker ComfyUI, as stored in workers.json."""

    id: str = Field(pattern=WORKER_ID_PATTERN, description="Stable identifier used by the API.")
    name: str = Field(min_length=1, max_length=100)
    type: WorkerType = "remote"
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: Port | None = Field(None, description="Required for local and remote workers.")
    url: str | None = Field(None, description="Cloud workers: full http(s) URL, e.g. a pod proxy or tunnel address.")
    enabled: bool = True
    cuda_device: int | None = Field(None, ge=0, description="Local workers: the GPU index given as CUDA_VISIBLE_DEVICES.")
    extra_args: str = Field("", max_length=2000, description="Local workers: extra ComfyUI command-line arguments.")

    @field_validator("host")
    @classmethod
    def _host_is_bare(cls, value: str) -> str:
        if re.search(r"[/\s]|^[a-z]+:", value):
            raise ValueError("host must be a bare host name or IP address, without scheme, port or path")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// address")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _address_is_complete(self) -> WorkerConfig:
        if self.type == "cloud":
            if self.url is None and self.port is None:
                raise ValueError("url: a cloud worker needs a url")
        elif self.port is None:
            raise ValueError(f"port: a {self.type} worker needs a port")
        return self

    @property
    def base_url(self) -> str:
        """The address every request to this worker starts with."""
        if self.url:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class RegistryFile(_Strict):
    """The whole of workers.json."""

    version: Literal[1] = REGISTRY_VERSION
    master: MasterConfig = Field(default_factory=MasterConfig)
    settings: Settings = Field(default_factory=Settings)
    workers: list[WorkerConfig] = Field(default_factory=list)
    local_workers_seeded: bool = Field(
        False, description="Set once the first launch added one local worker per spare GPU, so deleting them sticks."
    )

    @model_validator(mode="after")
    def _ids_and_ports_are_unique(self) -> RegistryFile:
        seen: set[str] = set()
        for worker in self.workers:
            if worker.id in seen:
                raise ValueError(f"workers: duplicate worker id '{worker.id}'")
            seen.add(worker.id)
        return self

    def worker(self, worker_id: str) -> WorkerConfig | None:
        return next((w for w in self.workers if w.id == worker_id), None)


# --- request bodies ---------------------------------------------------------------------------


class WorkerCreate(_Strict):
    """POST /distributed/workers. The id is derived from the name when left out."""

    id: str | None = Field(None, pattern=WORKER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    type: WorkerType = "remote"
    host: str = "127.0.0.1"
    port: Port | None = None
    url: str | None = None
    enabled: bool = True
    cuda_device: int | None = Field(None, ge=0)
    extra_args: str = ""


class WorkerPatch(_Strict):
    """PATCH /distributed/workers/{id}: only the fields given change."""

    name: str | None = Field(None, min_length=1, max_length=100)
    type: WorkerType | None = None
    host: str | None = None
    port: Port | None = None
    url: str | None = None
    enabled: bool | None = None
    cuda_device: int | None = Field(None, ge=0)
    extra_args: str | None = None


class MasterPatch(_Strict):
    participate: bool | None = None
    host: str | None = None
    cuda_device: int | None = Field(None, ge=0)


class SettingsPatch(_Strict):
    worker_timeout: float | None = Field(None, gt=0, le=3600)
    assign_timeout: float | None = Field(None, gt=0, le=86400)
    health_interval: float | None = Field(None, ge=0.2, le=300)
    auto_launch: bool | None = None
    stop_workers_on_exit: bool | None = None


class ConfigPatch(_Strict):
    """PATCH /distributed/config: master and settings, each field optional."""

    master: MasterPatch | None = None
    settings: SettingsPatch | None = None


# --- live state (inside the process) ----------------------------------------------------------


class WorkerState(str, enum.Enum):
    """Where a worker stands, as the health monitor last saw it."""

    DISABLED = "disabled"
    UNKNOWN = "unknown"
    OFFLINE = "offline"
    LAUNCHING = "launching"
    ONLINE = "online"
    BUSY = "busy"
    ERROR = "error"


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

    def as_json(self) -> dict:
        return {
            "state": self.state.value,
            "queue_remaining": self.queue_remaining,
            "error": self.error,
            "device_name": self.device_name,
            "vram_total": self.vram_total,
            "vram_free": self.vram_free,
            "comfyui_version": self.comfyui_version,
            "checked_at": self.checked_at,
        }


@dataclass(frozen=True)
class ImageRef:
    """Where a worker left one output image (its /view coordinates)."""

    filename: str
    subfolder: str
    type: str


@dataclass
class ShareResult:
    """What one share produced for each collector: decoded image arrays, in the worker's order."""

    share_index: int
    participant: str
    images: dict[str, list] = field(default_factory=dict)
