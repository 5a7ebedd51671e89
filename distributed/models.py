"""Data shapes: pydantic models at the edges (workers.json, request bodies), dataclasses inside.

The registry models are the single source of the JSON Schema published in docs/workers.schema.json.
Unknown keys are refused (`extra="forbid"`), so a typo in a hand-edited file is reported instead of
silently ignored.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
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
        description="Seconds a share may wait for a worker able to run it; then the master renders it, "
                    "if it takes part, or the prompt fails.",
    )
    health_interval: float = Field(2.0, ge=0.2, le=300, description="Seconds between health checks of an online worker.")
    auto_launch: bool = Field(False, description="Start enabled local workers together with the master.")
    stop_workers_on_exit: bool = Field(True, description="Stop local workers when the master exits.")
    distributed_queue: bool = Field(
        False,
        description="Run queued prompts that hold no collector whole on the first free participant, in list order (SwarmUI style).",
    )


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
    auth_token: str | None = Field(
        None, max_length=4096,
        description="Sent as `Authorization: Bearer <token>` on every request and the websocket (a worker behind an auth proxy).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent on every request and the websocket (e.g. a tunnel's access keys).",
    )
    tls_verify: bool = Field(True, description="Verify the worker's TLS certificate. Turning this off is logged and shown as a warning.")
    tls_ca_file: str | None = Field(
        None, max_length=4096, description="Path of a PEM CA bundle trusted for this worker, for self-signed or private certificates.",
    )

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

    @field_validator("auth_token")
    @classmethod
    def _token_is_real(cls, value: str | None) -> str | None:
        return _check_secret(value, "the token") if value else None

    @field_validator("headers")
    @classmethod
    def _headers_are_sendable(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_headers(value)

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
    auth_token: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls_verify: bool = True
    tls_ca_file: str | None = None


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
    auth_token: str | None = Field(None, description="A masked value (as GET returns it) keeps the stored token; null removes it.")
    headers: dict[str, str] | None = Field(None, description="Masked values keep the stored ones; headers left out are removed.")
    tls_verify: bool | None = None
    tls_ca_file: str | None = None


# --- secrets: what the API shows and how a round trip keeps them -------------------------------

MASK = "\u2022\u2022\u2022\u2022"
"""Prefix of a masked secret ("••••abcd"). A real secret never starts with it (refused on input), so
a masked value coming back in a PATCH can only mean "keep what is stored"."""
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


def mask_secret(secret: str) -> str:
    """Shows at most the last 4 characters, and none of a short secret."""
    return MASK + secret[-4:] if len(secret) >= 12 else MASK


def _check_secret(value: str, what: str) -> str:
    if value.startswith(MASK):
        raise ValueError(f"{what} looks like a masked value; enter the real secret")
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what} must not contain line breaks")
    return value


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection", "upgrade"):
            raise ValueError(f"header {name} is set by the connection itself and cannot be configured")
        _check_secret(value, f"the value of header {name}")
    return headers


def tls_warning(worker: WorkerConfig) -> str | None:
    """The warning a worker's TLS settings deserve, or None."""
    if not worker.tls_verify and worker.base_url.startswith("https:"):
        return "TLS certificate verification is off: anyone on the network path can read and change this worker's traffic"
    return None


def public_view(worker: WorkerConfig) -> dict[str, Any]:
    """A worker as the API shows it: secrets masked, plus `warnings` a user should see."""
    view = worker.model_dump(mode="json")
    if worker.auth_token:
        view["auth_token"] = mask_secret(worker.auth_token)
    view["headers"] = {name: mask_secret(value) for name, value in worker.headers.items()}
    warning = tls_warning(worker)
    view["warnings"] = [warning] if warning else []
    return view


def keep_masked_secrets(current: WorkerConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH changes with masked secrets replaced by the stored values they stand for.

    The panel edits the masked view; sending a masked value back unchanged keeps the secret, a new
    value replaces it, null (or a header left out) removes it.
    """
    kept = dict(changes)
    token = kept.get("auth_token")
    if isinstance(token, str) and token.startswith(MASK) and current.auth_token and token == mask_secret(current.auth_token):
        kept["auth_token"] = current.auth_token
    if "headers" in kept and kept["headers"] is None:
        kept["headers"] = {}
    headers = kept.get("headers")
    if isinstance(headers, dict):
        kept["headers"] = {
            name: current.headers[name]
            if isinstance(value, str) and name in current.headers and value == mask_secret(current.headers[name]) else value
            for name, value in headers.items()
        }
    return kept


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
    distributed_queue: bool | None = None


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
            "os": self.os,
            "round_trip_ms": self.round_trip_ms,
            "devices": [dict(device) for device in self.devices],
            "revision": self.revision,
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
