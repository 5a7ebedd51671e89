"""What workers.json holds: the master's settings and every worker, as pydantic models.

These models are the single source of the JSON Schema published in docs/workers.schema.json, and
the API's request bodies are derived from them (`requests.py`). Unknown keys are refused
(`extra="forbid"`), so a typo in a hand-edited file is reported instead of silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .secrets import MASK, MAX_HEADERS, MAX_SECRET_LENGTH, check_headers, check_secret, url_credentials

REGISTRY_VERSION = 1
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HOST_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9.])?$"
"""A DNS name or an IPv4 address: letters, digits, dots and hyphens."""
MAX_ALLOWED_HOSTS = 32
DEFAULT_MAX_ANSWER_MIB = 64

Port = Annotated[int, Field(ge=1, le=65535)]
WorkerType = Literal["local", "remote", "cloud", "host"]
Listen = Literal["loopback", "network"]
MANAGED_BY_PATTERN = r"^[a-z]+:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""`<kind>:<id>` of whatever manages an entry on the user's behalf: "host:studio", "pool:runpod"."""
POOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
"""A pool's name, short enough that its members' ids (`<name>-<6 hex digits>`) are worker ids."""
MAX_POOL_MEMBERS = 64
Argument = Annotated[str, Field(max_length=4096)]


class StrictModel(BaseModel):
    """Refuses unknown keys and checks values on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MasterConfig(StrictModel):
    """How the master itself takes part."""

    participate: bool = Field(True, description="Render a share on the master too; false = only orchestrate and collect.")
    host: str = Field(
        "", max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]*$",
        description="The master's address as workers would see it (informational; workers never call back).",
    )
    allowed_hosts: list[Annotated[str, Field(pattern=HOST_NAME_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_ALLOWED_HOSTS,
        description="Host names the master's /distributed API answers to besides IP addresses and localhost, e.g. the name "
                    "you open the master by on your LAN (docs/security.md: DNS rebinding).",
    )
    cuda_device: int | None = Field(None, ge=0, description="The GPU the master uses; first-launch discovery skips it.")


class Settings(StrictModel):
    """Behaviour settings shared by every job."""

    worker_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="Seconds a worker running a share may leave its websocket heartbeat unanswered (frozen, cut off) "
                    "before its share is re-run elsewhere.",
    )
    stall_timeout: float = Field(
        300.0, gt=0, le=86400,
        description="Seconds a share may show no execution or progress event from its worker (hung inside a node while "
                    "its server still answers) before the worker is treated as failed for it and the share re-run "
                    "elsewhere. Raise it for nodes that run longer than this without reporting progress.",
    )
    backup_tasks: bool = Field(
        True,
        description="When a worker runs a share far longer than its measured speed predicts and another worker is idle, "
                    "start a copy of the share there; the first result wins and the other copy is stopped.",
    )
    backup_after: float = Field(
        3.0, ge=1.1, le=100,
        description="How many times slower than usual a worker must show itself (its running share, or its latest one), and "
                    "2 s later at least, before the shares waiting in its queue go back to the line and its running share "
                    "is copied to an idle worker.",
    )
    assign_timeout: float = Field(
        120.0, gt=0, le=86400,
        description="Seconds a share may wait with no participant able to run it before the prompt fails, when the master "
                    "only orchestrates. A master that takes part renders such shares itself.",
    )
    health_interval: float = Field(2.0, ge=0.2, le=300, description="Seconds between health checks of an online worker.")
    auto_launch: bool = Field(False, description="Start enabled local workers together with the master.")
    stop_workers_on_exit: bool = Field(True, description="Stop local workers when the master exits.")
    distributed_queue: bool = Field(
        False,
        description="Run queued prompts that hold no collector whole on the first free participant, in list order (SwarmUI style).",
    )
    max_answer_mib: int = Field(
        DEFAULT_MAX_ANSWER_MIB, ge=1, le=4096,
        description="Largest answer, in MiB, the master reads from a worker for anything but a share's images "
                    "(/object_info, /history, /queue, a log); a larger one counts as a bad answer.",
    )
    max_result_mib: int = Field(
        4096, ge=1, le=1 << 20,
        description="Largest result, in MiB, one share may deliver for one collector, counted as the master keeps it "
                    "(float32); a larger one is refused and the share runs elsewhere.",
    )
    max_image_megapixels: float = Field(
        64.0, gt=0, le=4096,
        description="Largest image, in megapixels, a worker may return; a larger one is refused before it is decoded "
                    "and the share runs elsewhere.",
    )


class WorkerConfig(StrictModel):
    """One worker ComfyUI, as stored in workers.json."""

    id: str = Field(pattern=WORKER_ID_PATTERN, description="Stable identifier used by the API.")
    name: str = Field(min_length=1, max_length=100)
    type: WorkerType = Field(
        "remote",
        description="local: launched by this master; remote: a ComfyUI on another machine; cloud: one reached by a url; "
                    "host: another machine running ComfyUI with this extension, whose local workers this master uses and manages "
                    "(docs/hosts.md). A host takes no share itself.",
    )
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: Port | None = Field(None, description="Required for local and remote workers.")
    url: str | None = Field(None, description="Cloud workers: full http(s) URL, e.g. a pod proxy or tunnel address.")
    enabled: bool = True
    cuda_device: int | None = Field(None, ge=0, description="Local workers: the GPU index given as CUDA_VISIBLE_DEVICES.")
    extra_args: str = Field("", max_length=2000, description="Local workers: extra ComfyUI command-line arguments.")
    listen: Listen = Field(
        "loopback",
        description="Local workers: where the worker listens. loopback: this machine only; network: every interface, so "
                    "other machines (the master a host belongs to) can reach it; it is then locked with its auth_token.",
    )
    auth_token: str | None = Field(
        None, max_length=MAX_SECRET_LENGTH,
        description="Sent as `Authorization: Bearer <token>` on every request and the websocket (a worker behind an auth proxy).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_HEADERS,
        description="Extra headers sent on every request and the websocket (e.g. a tunnel's access keys).",
    )
    tls_verify: bool = Field(True, description="Verify the worker's TLS certificate. Turning this off is logged and shown as a warning.")
    tls_ca_file: str | None = Field(
        None, max_length=4096, description="Path of a PEM CA bundle trusted for this worker, for self-signed or private certificates.",
    )
    managed_by: str | None = Field(
        None, pattern=MANAGED_BY_PATTERN,
        description="Set by the master on entries it keeps on someone's behalf (\"host:<host worker id>\": a host's worker; "
                    "\"pool:<pool name>\": a member an elastic pool started); null for the workers you add. A managed entry "
                    "is not edited or deleted by hand through the API.",
    )

    def manager_id(self, kind: str) -> str | None:
        """The id of the `kind` ("host", "pool") that manages this entry; None when another or nothing does."""
        prefix = f"{kind}:"
        return self.managed_by.removeprefix(prefix) if self.managed_by and self.managed_by.startswith(prefix) else None

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
        if MASK in (url_credentials(value) or ""):
            raise ValueError("the credentials in url look like a masked value; enter the real ones")
        return value.rstrip("/")

    @field_validator("auth_token")
    @classmethod
    def _token_is_real(cls, value: str | None) -> str | None:
        return check_secret(value, "the token") if value else None

    @field_validator("headers")
    @classmethod
    def _headers_are_sendable(cls, value: dict[str, str]) -> dict[str, str]:
        return check_headers(value)

    @model_validator(mode="after")
    def _address_is_complete(self) -> WorkerConfig:
        if self.type in ("cloud", "host"):
            if self.url is None and self.port is None:
                raise ValueError(f"url: a {self.type} worker needs a url")
        elif self.port is None:
            raise ValueError(f"port: a {self.type} worker needs a port")
        if self.type == "host" and not self.auth_token:
            raise ValueError("auth_token: a host needs its API token (the DISTRIBUTED_API_TOKEN it was started with)")
        if self.listen == "network" and self.type != "local":
            raise ValueError("listen: only a local worker is started by its master, and so only it has a listen choice")
        sets_authorization = self.auth_token or any(name.lower() == "authorization" for name in self.headers)
        if sets_authorization and self.url and url_credentials(self.url) is not None:
            raise ValueError("url: credentials in the url cannot be combined with an auth_token or an Authorization header "
                             "(both would set Authorization)")
        return self

    @property
    def base_url(self) -> str:
        """The address every request to this worker starts with."""
        if self.url:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class PoolConfig(StrictModel):
    """An elastic pool: GPUs the master starts when work waits and stops when idle, within a budget
    (docs/elastic-workers.md)."""

    name: str = Field(pattern=POOL_NAME_PATTERN, description="Identifies the pool; its members are named <name>-<6 hex digits>.")
    min: int = Field(0, ge=0, le=MAX_POOL_MEMBERS, description="Members kept running even when no work waits.")
    max: int = Field(1, ge=1, le=MAX_POOL_MEMBERS, description="Members running at most, starting ones included.")
    start_command: list[Argument] = Field(
        min_length=1, max_length=64,
        description="Program and arguments (never run through a shell) that start one member; `{member_id}` and `{pool}` "
                    "in an argument are replaced, and DISTRIBUTED_MEMBER_ID and DISTRIBUTED_POOL are set in its environment. "
                    'It prints one JSON line, {"url": ..., "token": ..., "headers": {...}}, once the member has an address.',
    )
    stop_command: list[Argument] = Field(
        min_length=1, max_length=64,
        description="Program and arguments that stop one member, with the same replacements and environment as start_command.",
    )
    idle_seconds: float = Field(600.0, ge=1, le=7 * 86400, description="A member idle this long is stopped (never below min).")
    grow_after_seconds: float = Field(
        30.0, ge=0, le=86400, description="The pool grows once work has waited this long with every participant busy.",
    )
    max_starts_per_10min: int = Field(3, ge=1, le=1000, description="Starts allowed in any 10 minutes, failed ones included.")
    budget_hours_per_day: float = Field(
        gt=0, le=24 * MAX_POOL_MEMBERS,
        description="Member-hours allowed per day (the master's local day), starting and stopping included.",
    )
    ready_timeout_seconds: float = Field(
        900.0, ge=1, le=86400,
        description="From launching the start command until the member answers; a member later than that is stopped.",
    )

    @field_validator("start_command", "stop_command")
    @classmethod
    def _argv_is_runnable(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the first item must name the program to run")
        if any("\0" in argument for argument in value):
            raise ValueError("an argument must not contain a NUL character")
        return value

    @model_validator(mode="after")
    def _min_fits_max(self) -> PoolConfig:
        if self.min > self.max:
            raise ValueError(f"min: {self.min} members kept running is more than the pool's max of {self.max}")
        return self


class RegistryFile(StrictModel):
    """The whole of workers.json."""

    version: Literal[1] = REGISTRY_VERSION
    master: MasterConfig = Field(default_factory=MasterConfig)
    settings: Settings = Field(default_factory=Settings)
    workers: list[WorkerConfig] = Field(default_factory=list)
    pools: list[PoolConfig] = Field(default_factory=list, description="Elastic pools of workers started and stopped on demand.")
    local_workers_seeded: bool = Field(
        False, description="Set once the first launch added one local worker per spare GPU, so deleting them sticks."
    )

    @model_validator(mode="after")
    def _ids_and_ports_are_unique(self) -> RegistryFile:
        ids: set[str] = set()
        local_ports: dict[int, str] = {}
        for worker in self.workers:
            if worker.id in ids:
                raise ValueError(f"workers: duplicate worker id '{worker.id}'")
            ids.add(worker.id)
            if worker.type == "local" and worker.port is not None:
                if worker.port in local_ports:
                    raise ValueError(f"workers: local workers '{local_ports[worker.port]}' and '{worker.id}' both use port {worker.port}")
                local_ports[worker.port] = worker.id
        names: set[str] = set()
        for pool in self.pools:
            if pool.name in names:
                raise ValueError(f"pools: duplicate pool name '{pool.name}'")
            names.add(pool.name)
        return self

    def worker(self, worker_id: str) -> WorkerConfig | None:
        return next((w for w in self.workers if w.id == worker_id), None)

    def pool(self, name: str) -> PoolConfig | None:
        return next((p for p in self.pools if p.name == name), None)
