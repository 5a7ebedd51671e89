"""How a local worker is started: its argv, its environment and its folders.

A worker is the master's own ComfyUI (same interpreter, same main.py) started through `launcher.py`
with its own port, CUDA_VISIBLE_DEVICES and per-worker folders:

    <state_dir>/workers/<id>/process.json  pid, create_time, port, command: lets a restarted master adopt it
    <state_dir>/workers/<id>/worker.log    stdout + stderr (worker.log.1 ... after rotation)
    <state_dir>/workers/<id>/{output,input,temp,user}, comfyui.db

The worker shares the master's base directory (models, custom_nodes) and extra model paths, but
gets its own output, input, temp and user folders and database, because ComfyUI wipes its temp
folder at start and exit and keeps per-install state in the user folder and sqlite file. Every flag
the master sets travels as `--flag=value`, so no word of extra_args can become one of its values.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...config.models import WorkerConfig
from ..lock import WORKER_TOKEN_ENV
from .arguments import Argument, value_of

LAUNCHER_PATH = Path(__file__).resolve().parent / "launcher.py"
WORKER_ID_ENV = "COMFYUI_DISTRIBUTED_WORKER_ID"
"""Set in every local worker's environment, so the extension loaded inside a worker knows it is one."""
DEFAULT_LISTEN = "127.0.0.1"
NETWORK_LISTEN = "0.0.0.0"
"""Where a worker whose `listen` is "network" listens: every IPv4 interface of this machine."""
LOCK_TOKEN_BYTES = 32
MASTER_API_ENV_PREFIX = "DISTRIBUTED_API_"
"""The master's API settings (its token, `api/access.py`) belong to the master: a local worker, which
would otherwise inherit them, must not ask the master for the master's own token on its results."""


@dataclass(frozen=True)
class MasterLayout:
    """What a worker takes from the master's own ComfyUI (read from ComfyUI's folder_paths and args)."""

    main_py: Path
    base_directory: Path
    extra_model_paths_configs: tuple[Path, ...] = ()
    device_args: tuple[str, ...] = ()
    """The master's device flags that workers follow (e.g. --cpu on a machine without a GPU)."""


@dataclass(frozen=True)
class WorkerPaths:
    """The per-worker folder under the manager's state folder."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path, worker_id: str) -> WorkerPaths:
        return cls(state_dir / "workers" / worker_id)

    @property
    def process_file(self) -> Path:
        return self.root / "process.json"

    @property
    def log_file(self) -> Path:
        return self.root / "worker.log"

    @property
    def database(self) -> Path:
        return self.root / "comfyui.db"

    def folders(self) -> tuple[Path, ...]:
        # ComfyUI appends "temp" to --temp-directory itself, so the temp folder is root/temp.
        return tuple(self.root / name for name in ("output", "input", "temp", "user"))


def listen_address(worker: WorkerConfig) -> str:
    """The --listen value that the worker's own `listen` choice asks for."""
    return NETWORK_LISTEN if worker.listen == "network" else DEFAULT_LISTEN


def listen_hosts(arguments: Sequence[Argument], listen: str = DEFAULT_LISTEN) -> list[str]:
    """The addresses the worker will bind, as ComfyUI reads --listen (bare --listen means all); a
    --listen written by hand into extra_args wins over `listen`, the worker's own choice."""
    values = value_of(arguments, "--listen")
    if values is None:
        return [listen]
    return [host.strip() for host in (values[0] if values else "0.0.0.0,::").split(",") if host.strip()]


def with_network_lock(worker: WorkerConfig) -> WorkerConfig:
    """The worker, given a fresh auth token when it listens on the network without one.

    A worker other machines can reach is locked (workers/lock.py) with its auth_token, which its
    master sends on every request; the token is made here, on the machine that launches it.
    """
    if worker.type != "local" or worker.listen != "network" or worker.auth_token:
        return worker
    return worker.model_copy(update={"auth_token": secrets.token_urlsafe(LOCK_TOKEN_BYTES)})


def worker_command(
    worker: WorkerConfig,
    arguments: Sequence[Argument],
    layout: MasterLayout,
    paths: WorkerPaths,
    lease_file: Path | None,
    lease_timeout: float,
    python: str = sys.executable,
) -> list[str]:
    """The argv of a local worker; `arguments` (its extra_args, read) come last, so its own flags win."""
    command = [python]
    if sys.flags.no_user_site:
        command.append("-s")  # portable installs run with -s; keep the worker on the same packages
    command.append(str(LAUNCHER_PATH))
    if lease_file is not None:
        command += [f"--lease={lease_file}", f"--lease-timeout={lease_timeout:g}"]
    command += ["--", str(layout.main_py), f"--port={worker.port}"]
    if value_of(arguments, "--listen") is None:
        command.append(f"--listen={listen_address(worker)}")
    command += [
        "--disable-auto-launch",
        f"--base-directory={layout.base_directory}",
        f"--output-directory={paths.root / 'output'}",
        f"--input-directory={paths.root / 'input'}",
        f"--temp-directory={paths.root}",
        f"--user-directory={paths.root / 'user'}",
        f"--database-url=sqlite:///{paths.database.as_posix()}",
    ]
    command += [f"--extra-model-paths-config={path}" for path in layout.extra_model_paths_configs]
    command += list(layout.device_args)
    for argument in arguments:
        command += argument.words()
    return command


def worker_env(worker: WorkerConfig, base_env: dict[str, str]) -> dict[str, str]:
    """The worker's environment: the master's (less its API settings), plus its GPU and an unbuffered log.

    A worker with an auth token is locked with it (workers/lock.py); the master's own lock, if it
    has one, is not passed on, since the master would not know to send it.
    """
    env = {name: value for name, value in base_env.items() if not name.startswith(MASTER_API_ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env[WORKER_ID_ENV] = worker.id
    env.pop(WORKER_TOKEN_ENV, None)
    if worker.auth_token:
        env[WORKER_TOKEN_ENV] = worker.auth_token
    if worker.cuda_device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(worker.cuda_device)
        # NVML (gpus.py) numbers devices by PCI bus; make CUDA use the same numbering.
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    return env
